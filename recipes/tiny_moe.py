"""The tiny mixture of experts on CPU: MoE routing and expert parallelism through the real MegatronStrategy.

`trainer.devices=2 trainer.strategy.expert_model_parallel_size=2` puts two experts on each of two gloo
processes (data parallel 2 for the dense weights, expert data parallel 1): the same samples per step
as one process, so the same losses.
"""

import nemo_run as run

from recipes import algorithms
from recipes.registry import recipe
from recipes.tiny_llama import PYDOC_CORPUS, SEQ_LENGTH, SHIPPED_SFT, _small_cpu_run


def _moe_knobs(recipe: run.Partial) -> run.Partial:
    """Every MoE setting a run tunes, stated here so that --dryrun, --explain and overrides show them."""
    config = recipe.model.config
    config.moe_router_topk = 2
    config.moe_token_dispatcher_type = "alltoall"  # or "allgather"; both run over gloo
    config.moe_router_load_balancing_type = "aux_loss"
    config.moe_aux_loss_coeff = 1e-2
    config.moe_expert_capacity_factor = None  # no token dropping
    config.moe_grouped_gemm = False  # grouped GEMM needs Transformer Engine
    strategy = recipe.trainer.strategy
    strategy.expert_model_parallel_size = 1
    strategy.expert_tensor_parallel_size = 1
    return recipe


@recipe
def tiny_moe_pretrain() -> run.Partial:
    """Pretrain the 2-layer tiny MoE (4 experts, top-2) on the shipped pydoc corpus, on CPU.

    Sized for one CPU process; trainer.devices=2 trainer.strategy.expert_model_parallel_size=2 splits the experts.

        python launch.py recipe=tiny_moe_pretrain
    """
    recipe = algorithms.pretrain("tiny_moe", seq_length=SEQ_LENGTH, global_batch_size=8, paths=[PYDOC_CORPUS], lr=3e-3)
    recipe.data.split = "95,5,0"
    return _moe_knobs(_small_cpu_run(recipe, max_steps=30))


@recipe
def tiny_moe_sft() -> run.Partial:
    """Full SFT of the tiny MoE on the shipped prompt/response examples, on CPU.

        python launch.py recipe=tiny_moe_sft
    """
    recipe = algorithms.sft("tiny_moe", seq_length=SEQ_LENGTH, global_batch_size=8, dataset_root=SHIPPED_SFT, lr=3e-3)
    return _moe_knobs(_small_cpu_run(recipe, max_steps=20))
