"""Every registered recipe, discovered (no hand-kept list): builds offline, validates, matches its
committed resolved-config snapshot; and a copied recipe is registered and valid at once."""

import pytest

from launcher import copying, session, snapshots
from recipes import registry

ALL_RECIPES = sorted(registry.discover())


def test_the_matrix_is_complete():
    models = {"llama31_8b", "llama31_70b", "llama32_1b", "llama32_3b", "mistral_7b", "qwen25_7b"}
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


def test_no_orphan_snapshots():
    names = {p.stem for p in snapshots.SNAPSHOT_DIR.glob("*.yaml")}
    assert names == set(ALL_RECIPES), f"snapshots without recipes: {names - set(ALL_RECIPES)}"


def test_copy_writes_a_registered_valid_recipe(nemo):
    written = copying.copy_recipe("llama31_8b_sft", "pytest_copy_sft")
    try:
        assert "pytest_copy_sft" in registry.discover()
        prepared = session.prepare("pytest_copy_sft", ["trainer.max_steps=3"], fit_to_machine=False)
        original = session.prepare("llama31_8b_sft", ["trainer.max_steps=3"], fit_to_machine=False)
        assert session.diff(prepared, original).splitlines()[2:] == ["0 fields differ"]
    finally:
        written.unlink()


@pytest.mark.parametrize(
    "new_name, message",
    [("llama31_8b_lora", "already exists"), ("Bad-Name_sft", "not a valid recipe name"), ("mymodel", "must end with")],
)
def test_copy_refuses_bad_names(new_name, message):
    with pytest.raises(Exception, match=message):
        copying.copy_recipe("llama31_8b_sft", new_name)
