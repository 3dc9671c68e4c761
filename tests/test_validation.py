"""Every validation rule, on real recipe configs: the message names the fields and values at fault."""

import ast
import re

import pytest

from launcher import session, validation
from launcher.validation import ConfigInvalid, UnknownConfigPath, View
from recipes import registry

TINY = "tiny_llama_pretrain"  # 4 heads, 2 query groups, 2 layers, seq 128, global batch 8, micro batch 4
MIXTRAL = "mixtral_8x7b_lora"  # 8 experts, top-2, 1 node x 8 GPUs, expert parallel 8, TP 1
QWEN3_MOE = "qwen3_30b_a3b_lora"  # 128 experts of width 768, top-8, 1 node x 8 GPUs, expert parallel 8, TP 1


def problems_of(recipe: str, *overrides: str) -> str:
    with pytest.raises(ConfigInvalid) as error:
        session.prepare(recipe, list(overrides), fit_to_machine=False)
    return str(error.value)


RULE_CASES = {
    "world size": (
        [TINY, "trainer.devices=3", "trainer.strategy.tensor_model_parallel_size=2"],
        "world size trainer.num_nodes x trainer.devices = 3 must be divisible by",
    ),
    "global batch": (
        [TINY, "data.global_batch_size=6"],
        "data.global_batch_size (6) must be divisible by data.micro_batch_size x data-parallel size (4 x 1 = 4)",
    ),
    "global batch with data parallel": (
        [TINY, "trainer.devices=2", "data.global_batch_size=12", "log.ckpt=None",
         "trainer.enable_checkpointing=false"],
        "data.global_batch_size (12) must be divisible by data.micro_batch_size x data-parallel size (4 x 2 = 8)",
    ),
    "heads": (
        ["llama31_8b_sft", "trainer.strategy.tensor_model_parallel_size=3", "trainer.devices=6"],
        "trainer.strategy.tensor_model_parallel_size must divide model.config.num_attention_heads (32 % 3 != 0)",
    ),
    "query groups": (
        [TINY, "trainer.devices=4", "trainer.strategy.tensor_model_parallel_size=4", "data.micro_batch_size=8"],
        "trainer.strategy.tensor_model_parallel_size must divide model.config.num_query_groups (2 % 4 != 0)",
    ),
    "context parallel": (
        [TINY, "trainer.devices=4", "trainer.strategy.context_parallel_size=4", "data.micro_batch_size=8",
         "data.seq_length=100", "model.config.seq_length=100"],
        "with trainer.strategy.context_parallel_size=4, the sequence length (100) must be divisible by 2 x trainer.strategy.context_parallel_size = 8",
    ),
    "sequence lengths agree": (
        [TINY, "data.seq_length=256"],
        "data.seq_length (256) must equal model.config.seq_length (128)",
    ),
    "virtual pipeline needs pipeline": (
        [TINY, "trainer.strategy.virtual_pipeline_model_parallel_size=2"],
        "trainer.strategy.virtual_pipeline_model_parallel_size=2 needs trainer.strategy.pipeline_model_parallel_size > 1 (it is 1)",
    ),
    "virtual pipeline splits layers": (
        ["llama31_70b_pretrain", "trainer.strategy.virtual_pipeline_model_parallel_size=3"],
        "model.config.num_layers (80) must split evenly into trainer.strategy.pipeline_model_parallel_size x trainer.strategy.virtual_pipeline_model_parallel_size = 4x3 = 12 stages",
    ),
    "sequence parallel": (
        [TINY, "trainer.strategy.sequence_parallel=true"],
        "trainer.strategy.sequence_parallel=True needs trainer.strategy.tensor_model_parallel_size > 1 (it is 1)",
    ),
    "fp8 needs a GPU": (
        [TINY, "trainer.plugins.fp8=hybrid"],
        "trainer.plugins.fp8='hybrid' needs a GPU (trainer.accelerator is 'cpu')",
    ),
    "cpu offloading offloads something": (
        [TINY, "model.config.cpu_offloading=true", "model.config.cpu_offloading_num_layers=1",
         "model.config.cpu_offloading_activations=false", "model.config.cpu_offloading_weights=false"],
        "model.config.cpu_offloading=True offloads nothing",
    ),
    "cpu offloading layer count": (
        [TINY, "model.config.cpu_offloading=true", "model.config.cpu_offloading_num_layers=2"],
        "model.config.cpu_offloading_num_layers (2) must be between 1 and model.config.num_layers - 1 (1)",
    ),
    "recompute method needs full": (
        [TINY, "model.config.recompute_granularity=selective", "model.config.recompute_method=uniform"],
        "model.config.recompute_method='uniform' applies only with model.config.recompute_granularity='full'",
    ),
    "packed sequences": (
        ["tiny_llama_sft", "data.packed_sequence_specs=packed(directory=/tmp/packed,size=256)"],
        "packed sequences need data.micro_batch_size=1 (a packed row already holds many sequences), not 4",
    ),
    "packed size": (
        ["tiny_llama_sft", "data.packed_sequence_specs=packed(directory=/tmp/packed,size=256)", "data.micro_batch_size=1"],
        "data.packed_sequence_specs.packed_sequence_size (256) must equal data.seq_length (128)",
    ),
    "LoRA rank splits over tensor parallel": (
        ["llama31_8b_lora", "peft.dim=12", "trainer.strategy.tensor_model_parallel_size=8"],
        "peft.dim (12) must be divisible by trainer.strategy.tensor_model_parallel_size (8)",
    ),
    "expert parallel divides the experts": (
        [MIXTRAL, "trainer.strategy.expert_model_parallel_size=3"],
        "trainer.strategy.expert_model_parallel_size (3) must divide model.config.num_moe_experts (8)",
    ),
    "expert layout fits the world": (
        [QWEN3_MOE, "trainer.strategy.expert_model_parallel_size=16"],
        "world size trainer.num_nodes x trainer.devices = 8 must be divisible by trainer.strategy.expert_tensor_parallel_size"
        " x trainer.strategy.expert_model_parallel_size x trainer.strategy.pipeline_model_parallel_size = 1x16x1 = 16",
    ),
    "expert parallel needs experts": (
        ["llama31_8b_sft", "trainer.strategy.expert_model_parallel_size=2"],
        "trainer.strategy.expert_model_parallel_size=2 needs a mixture-of-experts model (model.config.num_moe_experts is not set)",
    ),
    "expert tensor parallel splits the expert width": (
        [QWEN3_MOE, "trainer.strategy.expert_model_parallel_size=1", "trainer.strategy.expert_tensor_parallel_size=8",
         "model.config.moe_ffn_hidden_size=100"],
        "expert tensor parallel (trainer.strategy.expert_tensor_parallel_size = 8) must divide model.config.moe_ffn_hidden_size (100)",
    ),
    "MoE with tensor parallel needs sequence parallel": (
        [MIXTRAL, "trainer.strategy.tensor_model_parallel_size=2"],
        "model.config.num_moe_experts=8 with trainer.strategy.tensor_model_parallel_size=2 needs trainer.strategy.sequence_parallel=True",
    ),
    "router top-k": (
        [MIXTRAL, "model.config.moe_router_topk=9"],
        "model.config.moe_router_topk (9) must be between 1 and model.config.num_moe_experts (8)",
    ),
    "router top-1 needs pre-softmax": (
        [MIXTRAL, "model.config.moe_router_topk=1"],
        "model.config.moe_router_topk=1 needs model.config.moe_router_pre_softmax=True",
    ),
    "load-balancing type": (
        [MIXTRAL, "model.config.moe_router_load_balancing_type=aux"],
        "model.config.moe_router_load_balancing_type must be one of 'aux_loss', 'seq_aux_loss', 'global_aux_loss', 'sinkhorn', 'none', not 'aux'",
    ),
    "load-balancing coefficient": (
        [MIXTRAL, "model.config.moe_aux_loss_coeff=-0.01"],
        "model.config.moe_aux_loss_coeff (-0.01) must be 0 or more",
    ),
    "token dispatcher": (
        [MIXTRAL, "model.config.moe_token_dispatcher_type=alltoall_seq"],
        "model.config.moe_token_dispatcher_type must be one of 'allgather', 'alltoall', 'flex', not 'alltoall_seq'",
    ),
    "flex dispatcher needs DeepEP": (
        [MIXTRAL, "model.config.moe_token_dispatcher_type=flex"],
        "model.config.moe_token_dispatcher_type='flex' needs model.config.moe_enable_deepep=True",
    ),
    "padding to capacity needs a capacity": (
        [MIXTRAL, "model.config.moe_pad_expert_input_to_capacity=true"],
        "model.config.moe_pad_expert_input_to_capacity=True needs model.config.moe_expert_capacity_factor",
    ),
    "capacity factor and load balancing": (
        [MIXTRAL, "model.config.moe_expert_capacity_factor=1.25", "model.config.moe_router_load_balancing_type=sinkhorn",
         "model.config.moe_aux_loss_coeff=0.0"],
        "model.config.moe_expert_capacity_factor=1.25 needs model.config.moe_router_load_balancing_type one of",
    ),
    "token drop policy": (
        [MIXTRAL, "model.config.moe_expert_capacity_factor=1.25", "model.config.moe_token_drop_policy=random"],
        "model.config.moe_token_drop_policy must be one of 'probs', 'position', not 'random'",
    ),
    "grouped GEMM needs Transformer Engine": (
        [MIXTRAL, "trainer.accelerator=cpu"],
        "model.config.moe_grouped_gemm=True needs Transformer Engine, which needs a GPU (trainer.accelerator is 'cpu')",
    ),
    "optimizer offload": (
        [TINY, "optim.config.optimizer_cpu_offload=true", "optim.config.optimizer_offload_fraction=1.5"],
        "optim.config.optimizer_offload_fraction (1.5) must be between 0 and 1",
    ),
}


@pytest.mark.parametrize("case", RULE_CASES, ids=list(RULE_CASES))
def test_rule(nemo, case):
    arguments, expected = RULE_CASES[case]
    assert expected in problems_of(*arguments)


def test_fp8_needs_transformer_engine_where_it_is_not_installed(nemo):
    """Holds on any machine: refused here without Transformer Engine, accepted (on a GPU recipe) where it is."""
    from common import transformer_engine

    refusal = "trainer.plugins.fp8='hybrid' needs Transformer Engine"
    if transformer_engine.is_installed():
        assert session.prepare("llama31_8b_sft", ["trainer.plugins.fp8=hybrid"], fit_to_machine=False)
    else:
        assert refusal in problems_of("llama31_8b_sft", "trainer.plugins.fp8=hybrid")


def test_every_problem_is_reported_at_once(nemo):
    message = problems_of(TINY, "data.global_batch_size=6", "trainer.strategy.sequence_parallel=true")
    assert message.count("\n  - ") == 2


def test_a_valid_override_set_passes(nemo):
    prepared = session.prepare(
        "llama31_70b_pretrain",
        ["trainer.strategy.virtual_pipeline_model_parallel_size=10", "model.config.recompute_granularity=full",
         "model.config.recompute_method=block", "model.config.recompute_num_layers=2"],
        fit_to_machine=False,
    )
    assert prepared.config.trainer.strategy.virtual_pipeline_model_parallel_size == 10


def test_lora_rank_on_row_parallel_layers_only_need_not_divide_tp(nemo):
    """NeMo's adapter on linear_proj/linear_fc2 splits its input over TP, not its rank."""
    prepared = session.prepare("llama31_8b_lora", ["peft.dim=12", "trainer.strategy.tensor_model_parallel_size=8",
                                                   "peft.target_modules=[linear_proj,linear_fc2]"], fit_to_machine=False)
    assert prepared.config.peft.dim == 12


def _paths_rules_read() -> set[str]:
    """Every path a rule module names: its dotted constants, and each first argument of get(...)/get.optional(...)."""
    dotted = re.compile(r"[a-z_]+(\.[a-z0-9_]+)+")
    paths = set()
    for path in (registry.RECIPES_DIR.parent / "launcher" / "rules").glob("*.py"):
        tree = ast.parse(path.read_text())
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                     for t in n.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and dotted.fullmatch(node.value):
                paths.add(node.value)
            reader = isinstance(node, ast.Call) and node.args and (
                (isinstance(node.func, ast.Name) and node.func.id == "get") or
                (isinstance(node.func, ast.Attribute) and node.func.attr == "optional"))
            if reader and isinstance(node.args[0], ast.Constant):
                paths.add(node.args[0].value)
            elif reader and isinstance(node.args[0], ast.Name):
                paths.add(constants[node.args[0].id])
    return paths


def test_every_path_a_rule_reads_exists_on_a_real_recipe(nemo):
    configs = [registry.build(name) for name in ("tiny_llama_pretrain", "tiny_llama_sft", "tiny_llama_dpo", "llama31_8b_lora")]
    paths = _paths_rules_read()
    assert {"trainer.strategy.tensor_model_parallel_size", "peft", "data.pack_pairs"} <= paths
    missing = [path for path in sorted(paths) if not any(View(config).exists(path) for config in configs)]
    assert missing == [], "rules read paths no recipe has (misspelled?)"


def test_an_unknown_path_is_an_error_and_an_unset_option_is_none(nemo):
    get = View(registry.build("tiny_llama_sft"))
    with pytest.raises(UnknownConfigPath, match="has no field 'tensor_parallel_size'"):
        get("trainer.strategy.tensor_parallel_size")
    assert get("peft.dim") is None  # peft=None: no LoRA on this recipe
    pretrain = View(registry.build("tiny_llama_pretrain"))
    assert pretrain.optional("data.packed_sequence_specs.packed_sequence_size") is None  # a field only SFT data has
    with pytest.raises(UnknownConfigPath):
        pretrain("data.packed_sequence_specs.packed_sequence_size")


def test_rule_modules_register_themselves(nemo):
    validation.problems(registry.build("tiny_llama_pretrain"))
    names = {rule.__name__ for rule in validation.RULES}
    assert {"check_world_size", "check_preference"} <= names and len(names) == len(validation.RULES)
