"""Each memory knob of the config moves the plan the way megatron's memory moves, by the amount the model states."""

import pytest

from planning import plan_config
from planning.activations import micro_batches_in_flight
from planning.hardware import GIB
from planning.layout import Layout
from planning.plan import with_overrides


def _line(plan, name):
    return next(line.bytes for line in plan.stage.lines if line.name.startswith(name))


@pytest.fixture(scope="module")
def sft(recipe_config):
    return recipe_config("llama31_8b_sft")


def test_recompute_and_attention_kernels_order_activations(sft):
    none = plan_config(sft, suggest=False)
    selective = plan_config(with_overrides(sft, {"model.config.recompute_granularity": "selective"}), suggest=False)
    full = plan_config(with_overrides(sft, {"model.config.recompute_granularity": "full", "model.config.recompute_method":
                                            "uniform", "model.config.recompute_num_layers": 1}), suggest=False)
    local = plan_config(sft, fused_attention=False, suggest=False)
    assert _line(full, "activations") < _line(selective, "activations") <= _line(none, "activations") < _line(local, "activations")
    # local attention keeps b x heads/tp x s x s scores per layer, bf16 and fp32: 32 layers x 16 heads x 4096^2 x 6 B = 48 GiB
    assert _line(local, "activations") - _line(none, "activations") > 48 * GIB


def test_optimizer_offload_and_sharding(sft):
    base = _line(plan_config(sft, suggest=False), "optimizer state")
    half = _line(plan_config(with_overrides(sft, {"optim.config.optimizer_cpu_offload": True,
                                                  "optim.config.optimizer_offload_fraction": 0.5}), suggest=False), "optimizer state")
    unsharded = _line(plan_config(with_overrides(sft, {"optim.config.use_distributed_optimizer": False}), suggest=False), "optimizer state")
    assert half == pytest.approx(base / 2, rel=1e-6)
    assert unsharded == pytest.approx(base * 4, rel=1e-6)  # DP 4 at TP 2 on 8 GPUs


def test_lora_has_no_gradients_or_optimizer_state_for_the_base(recipe_config):
    plan = plan_config(recipe_config("llama31_8b_lora"), suggest=False)
    adapters = plan.stage.parameters.adapters
    assert _line(plan, "gradients (adapters)") == adapters * 4
    assert _line(plan, "optimizer state (adapters)") == adapters * 12
    assert _line(plan, "weights (frozen base)") == plan.stage.parameters.base * 2


def test_micro_batches_in_flight_under_pipeline_schedules():
    assert micro_batches_in_flight(Layout(pp=4, global_batch=64, devices=4)) == 4  # 1F1B: pp on the first stage
    assert micro_batches_in_flight(Layout(pp=4, global_batch=64, devices=4), pp_rank=3) == 1
    # interleaved, v = 5: (pp - 1) x 2 + (v - 1) x pp + 1 = 23 chunks of 1/5 of the stage (Korthikanti: 1 + (p-1)/(pv))
    assert micro_batches_in_flight(Layout(pp=4, vp=5, global_batch=64, devices=4)) == pytest.approx(23 / 5)
    assert micro_batches_in_flight(Layout(pp=4, global_batch=2, devices=4)) == 2  # capped by the step's micro batches


def test_cpu_activation_offloading_moves_layers_off_the_gpu(sft):
    on = with_overrides(sft, {"model.config.cpu_offloading": True, "model.config.cpu_offloading_num_layers": 8,
                              "model.config.cpu_offloading_activations": True})
    base, offloaded = plan_config(sft, suggest=False), plan_config(on, suggest=False)
    assert _line(base, "activations") - _line(offloaded, "activations") == 8 * base.stage.activations.layer


def test_preference_micro_batch_is_two_sequences(recipe_config):
    sft = plan_config(recipe_config("llama31_8b_sft"), suggest=False)
    dpo = plan_config(recipe_config("llama31_8b_dpo"), suggest=False)
    assert dpo.layout.micro_batch == 2 and dpo.layout.preference
    # twice the tokens; only the rotary cos/sin (per position, not per sequence) stay the same
    assert dpo.stage.activations.layer == pytest.approx(2 * sft.stage.activations.layer, rel=0.01)


def test_dpo_run_time_includes_its_reference_pre_pass(recipe_config):
    dpo = plan_config(recipe_config("llama31_8b_dpo"), suggest=False).timing
    simpo = plan_config(recipe_config("llama31_8b_simpo"), suggest=False).timing
    assert dpo.reference_prepass and not simpo.reference_prepass
    assert dpo.hours == pytest.approx(simpo.hours * 4 / 3)


def test_expert_parallel_splits_the_experts_and_shards_their_optimizer_state_over_expert_data_parallel(recipe_config):
    sft = recipe_config("qwen3_30b_a3b_sft")  # 16 GPUs: TP 2 x PP 2 -> DP 4; EP 8 x PP 2 -> expert data parallel 1
    plan = plan_config(sft, suggest=False)
    params = plan.stage.parameters
    dense = params.total - params.expert_weights
    assert _line(plan, "optimizer state") == int((dense / 4 + params.expert_weights / 1) * 12)
    ep4 = plan_config(with_overrides(sft, {"trainer.strategy.expert_model_parallel_size": 4}), suggest=False)
    assert ep4.stage.parameters.expert_weights == 2 * params.expert_weights  # 32 experts of 128 per layer instead of 16
    assert ep4.layout.expert_dp == 2  # so each rank keeps the same expert optimizer state
    assert _line(ep4, "optimizer state") - _line(plan, "optimizer state") < 1024


def test_mixture_of_experts_flops_are_nemos_formulas(recipe_config):
    """The qwen3 formula the planner uses for MoE models gives NeMo's own mixtral formula for Mixtral."""
    from planning.flops import nemo_flops_per_step, nemo_formulas
    from planning.layout import model_shape

    shape = model_shape(recipe_config("mixtral_8x7b_sft").model.config, 32000)
    formulas = nemo_formulas()
    mixtral = formulas.mixtral(formulas.FLOPSConfig(gbs=128, enc_seq_len=4096, hs=4096, layers=32, ffn_hs=14336,
                                                    attention_heads=32, query_groups=8, moe_router_topk=2))
    assert nemo_flops_per_step(shape, 128, 4096) == pytest.approx(mixtral, rel=1e-12)
    routed = plan_config(recipe_config("qwen3_30b_a3b_sft"), suggest=False)
    top2 = plan_config(with_overrides(recipe_config("qwen3_30b_a3b_sft"), {"model.config.moe_router_topk": 2}), suggest=False)
    assert top2.flops.model_flops < routed.flops.model_flops  # FLOPs follow the active experts, not all 128
    assert _line(top2, "activations") < _line(routed, "activations")  # so do the dispatched tokens


def test_a_mixture_of_experts_that_does_not_fit_is_offered_more_expert_parallel(recipe_config):
    lora = with_overrides(recipe_config("mixtral_8x7b_lora"), {"trainer.strategy.expert_model_parallel_size": 2})
    plan = plan_config(lora)  # 4 of 8 experts a layer: 43 GiB of frozen weights, does not fit
    assert not plan.fits
    offered = [suggestion.overrides for suggestion in plan.suggestions]
    assert {"trainer.strategy.expert_model_parallel_size": 8} in offered or {"trainer.strategy.expert_model_parallel_size": 4} in offered
