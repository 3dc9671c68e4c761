"""Every registered recipe, discovered (no hand-kept list): builds offline, validates, matches its
committed resolved-config snapshot, dry-runs without its data; and a copied recipe is registered and valid at once."""

import pytest

from common.errors import UserError
from launcher import copying, epoch, inspection, resolve, session, snapshots
from recipes import registry

ALL_RECIPES = sorted(registry.discover())


def test_the_matrix_is_complete():
    models = {"llama31_8b", "llama31_70b", "llama32_1b", "llama32_3b", "mistral_7b", "qwen25_7b", "qwen3_8b",
              "qwen3_30b_a3b", "mixtral_8x7b", "llama2_7b"}
    for model in models:
        for algorithm in ("pretrain", "sft", "lora"):
            assert f"{model}_{algorithm}" in ALL_RECIPES
    assert {"tiny_llama_pretrain", "tiny_llama_sft", "tiny_llama_lora"} <= set(ALL_RECIPES)


@pytest.mark.parametrize("name", ALL_RECIPES)
def test_recipe_builds_validates_and_matches_its_snapshot(nemo, name):
    prepared = session.prepare(name, [], fit_to_machine=False)
    info = registry.find(name)
    assert info.description, f"{info.path}:{info.line}: give {name} a docstring"
    assert f"python launch.py recipe={name}" in info.docstring, f"{info.path}:{info.line}: put the launch command in the docstring"
    snapshot = snapshots.path_for(name)
    assert snapshot.exists(), f"no snapshot for {name}: run `{snapshots.REGENERATE}`"
    assert snapshot.read_text() == snapshots.render(name), (
        f"recipe {name} no longer matches {snapshot.relative_to(snapshots.SNAPSHOT_DIR.parents[1])}; "
        f"if the change is intended, run `{snapshots.REGENERATE}` and commit the diff"
    )
    assert prepared.config.trainer.max_steps > 0 or prepared.config.trainer.max_steps == -1  # -1: one epoch


# The mixture-of-experts knobs every MoE recipe states (recipes/blocks.py, experts), so --explain names where each is set.
MOE_KNOBS = [
    "trainer.strategy.expert_model_parallel_size", "trainer.strategy.expert_tensor_parallel_size",
    "model.config.moe_token_dispatcher_type", "model.config.moe_router_topk", "model.config.moe_router_load_balancing_type",
    "model.config.moe_aux_loss_coeff", "model.config.moe_expert_capacity_factor", "model.config.moe_token_drop_policy",
    "model.config.moe_pad_expert_input_to_capacity", "model.config.moe_grouped_gemm",
]


def test_moe_recipes_state_the_moe_knobs(nemo):
    """One recipe per algorithm base that applies the MoE block (pretrain, sft/lora, preference); the snapshots
    show the values of all of them."""
    for name in ("mixtral_8x7b_pretrain", "qwen3_30b_a3b_lora", "mixtral_8x7b_dpo_lora"):
        prepared = session.prepare(name, [], fit_to_machine=False)
        for key in MOE_KNOBS:
            assert "set at <repo>/recipes/" in inspection.explain(prepared, key), f"{name}: {key} is not set by the recipe"
    dense = session.prepare("qwen3_8b_sft", [], fit_to_machine=False)
    assert "set at" not in inspection.explain(dense, "model.config.moe_router_topk")  # a dense row gets no MoE block


def test_no_orphan_snapshots():
    names = {p.stem for p in snapshots.SNAPSHOT_DIR.glob("*.yaml")}
    assert names == set(ALL_RECIPES), f"snapshots without recipes: {names - set(ALL_RECIPES)}"


def test_a_copy_of_every_recipe_builds_its_source_config(nemo, tmp_path, monkeypatch):
    """The copy is discovered, builds, and resolves to its source's config but for its name; it lands
    in a temporary recipe folder the registry is pointed at, never in the repository."""
    monkeypatch.setattr(registry, "SEARCH_PATH", [registry.RECIPES_DIR, tmp_path])
    for name in ALL_RECIPES:
        new_name = f"copied_{name}"
        written = copying.copy_recipe(name, new_name, tmp_path)
        assert written.parent == tmp_path
        assert new_name in registry.discover()
        copied = resolve.to_yaml(registry.build(new_name)).replace(new_name, name)
        assert copied == resolve.to_yaml(registry.build(name)), f"the copy of {name} differs:\n{written.read_text()}"


@pytest.mark.parametrize(
    "new_name, message",
    [("llama31_8b_lora", "already exists"), ("Bad-Name_sft", "not a valid recipe name"), ("mymodel", "must end with")],
)
def test_copy_refuses_bad_names(new_name, message):
    with pytest.raises(Exception, match=message):
        copying.copy_recipe("llama31_8b_sft", new_name)


def test_every_recipe_dry_runs_as_shipped_without_its_data(nemo):
    for name in ALL_RECIPES:
        assert "# launch command:" in session.dryrun(session.prepare(name, [])), name
    dryrun = session.dryrun(session.prepare("llama31_70b_pretrain", []))
    assert f"#   {epoch.COUNTED_AT_LAUNCH} (the data is not on this machine)" in dryrun
    explained = inspection.explain(session.prepare("llama31_70b_pretrain", []), "trainer.max_steps")
    assert explained.splitlines()[0] == f"trainer.max_steps = -1  ({epoch.COUNTED_AT_LAUNCH})"


@pytest.mark.parametrize("name, key, overrides", [
    ("llama31_8b_pretrain", "data.paths", []),  # one epoch: counting it needs the data
    ("llama31_8b_sft", "data.dataset_root", []),
    ("llama31_8b_dpo", "data.paths", ["trainer.accelerator=cpu"]),  # a fixed step count: the data check comes after the device check
])
def test_launch_without_data_names_the_key_to_set(nemo, name, key, overrides):
    with pytest.raises(UserError, match=rf"{key} is not set: set {key}=\.\.\. on the command line") as error:
        session.launch(session.prepare(name, overrides))
    assert "<set " not in str(error.value)
