"""The plan agrees with what was published: NVIDIA's own runs fit and their throughput is reproduced, a configuration
reported to run out of memory is refused (with changes that fit), and the FLOPs are NeMo's."""

import pytest

from planning import PlanDoesNotFit, check_fits, plan_config
from planning.flops import nemo_flops_per_step
from planning.plan import with_overrides

TP, PP, VP = ("trainer.strategy.tensor_model_parallel_size", "trainer.strategy.pipeline_model_parallel_size",
              "trainer.strategy.virtual_pipeline_model_parallel_size")
# NeMo's own performance-mode fine-tuning recipes, which dgxc-benchmarking runs, reduce gradients in bf16
# (nemo/collections/llm/recipes/llama3_8b.py and llama3_70b.py, finetune_performance_optimizations:
# ddp grad_reduce_in_fp32=False, plugins.grad_reduce_in_fp32=False).
BF16_GRADIENTS = {"trainer.strategy.ddp.grad_reduce_in_fp32": False, "trainer.plugins.grad_reduce_in_fp32": False}
DGXC_8B = {**BF16_GRADIENTS, TP: 1, "trainer.strategy.sequence_parallel": False, "data.micro_batch_size": 1, "data.global_batch_size": 32,
           "data.seq_length": 4096, "model.config.seq_length": 4096, "trainer.devices": 8, "trainer.num_nodes": 1}


@pytest.mark.parametrize("recipe,tokens_per_second", [("llama31_8b_sft", 12_412), ("llama31_8b_lora", 17_809)])
def test_dgxc_llama3_8b_fine_tuning_fits_and_reproduces_its_throughput(recipe_config, recipe, tokens_per_second):
    """NVIDIA dgxc-benchmarking ft_llama3: 8B SFT and LoRA, 8 x H100, BF16, seq 4096, GBS 32, MBS 1, TP 1."""
    plan = plan_config(with_overrides(recipe_config(recipe), DGXC_8B), gpu="h100-80gb")
    assert plan.fits, plan.render()
    assert plan.timing.tokens_per_second_per_gpu == pytest.approx(tokens_per_second)


def test_dgxc_llama3_70b_sft_layout_fits(recipe_config):
    """dgxc-benchmarking's 70B SFT layout: TP 4 x PP 4 with virtual pipeline 5, MBS 1, seq 4096, on H100 80GB."""
    layout = {**BF16_GRADIENTS, TP: 4, PP: 4, VP: 5, "trainer.strategy.sequence_parallel": True, "data.micro_batch_size": 1,
              "data.global_batch_size": 32, "trainer.num_nodes": 4}
    plan = plan_config(with_overrides(recipe_config("llama31_70b_sft"), layout), gpu="h100-80gb")
    assert plan.fits, plan.render()


# NVIDIA/Megatron-LM issue 606, "CUDA OOM error when finetuning LLAMA2-7b with A100 40G and seq_length 64":
# TP 1, PP 1, 8 GPUs per node, hidden 4096, ffn 11008, 32 layers, 32 heads, 32 KV heads, seq 64, MBS 1, GBS 8.
# Llama 2 7B is Mistral 7B's shape and vocabulary (32,000) with Llama 2's MLP and no GQA.
MEGATRON_LM_606 = {TP: 1, PP: 1, "trainer.devices": 8, "model.config.ffn_hidden_size": 11008,
                   "model.config.num_query_groups": 32, "data.seq_length": 64, "model.config.seq_length": 64,
                   "data.micro_batch_size": 1, "data.global_batch_size": 8, "trainer.strategy.sequence_parallel": False}


@pytest.mark.parametrize("distributed_optimizer", [False, True])
def test_reported_out_of_memory_is_refused_with_changes_that_fit(recipe_config, distributed_optimizer):
    """The report does not say whether the optimizer was distributed: refused either way, as it ran out of memory."""
    config = with_overrides(recipe_config("mistral_7b_sft"),
                            {**MEGATRON_LM_606, "optim.config.use_distributed_optimizer": distributed_optimizer})
    with pytest.raises(PlanDoesNotFit) as refused:
        check_fits(config, gpu="a100-40gb")
    plan = refused.value.plan
    assert "does not fit" in str(refused.value)
    assert plan.suggestions, plan.render()
    for suggestion in plan.suggestions:  # each printed change, applied, is planned to fit
        assert plan_config(with_overrides(config, suggestion.overrides), gpu="a100-40gb").fits


def test_flops_are_nemos_formulas(nemo, recipe_config):
    from nemo.utils import flops_formulas

    llama = plan_config(recipe_config("llama31_8b_sft"))
    config = flops_formulas.FLOPSConfig(gbs=128, enc_seq_len=4096, hs=4096, layers=32, ffn_hs=14336, attention_heads=32,
                                        query_groups=8)
    assert llama.flops.model_flops == flops_formulas.llama3(config)
    # Mistral's 32,000-token vocabulary is NeMo's llama2 constant: the vocabulary-corrected llama3 formula is llama2's.
    mistral = plan_config(recipe_config("mistral_7b_sft"))
    assert nemo_flops_per_step(mistral.model, 128, 4096) == pytest.approx(flops_formulas.llama2(config), rel=1e-12)
