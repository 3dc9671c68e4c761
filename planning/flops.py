"""Model FLOPs per step from NeMo's own formulas (nemo.utils.flops_formulas, what NeMo's FLOPsMeasurementCallback
reports): llama3 for the Llama-architecture models of the catalog, qwen3 for the models llama3 cannot describe
(a head size other than hidden / heads, or a mixture of experts: qwen3 takes kv_channels, the experts' width x
top-k and the vocabulary as arguments; for Mixtral it equals NeMo's mixtral formula, tests/planning)."""

from dataclasses import dataclass

from planning.layout import Layout, ModelShape

# nemo.utils.flops_formulas.llama3 hard-codes the Llama 3 vocabulary in its logits term, 6 x gbs x seq x hidden x V;
# other vocabularies replace that term (the formula is otherwise the one NeMo uses for every GQA Llama).
LLAMA3_VOCAB = 128256


def nemo_formulas():
    """nemo.utils.flops_formulas. Where NeMo's package cannot be imported whole (the GPU proof machine carries NeMo
    without all of its dependencies), the formulas module is loaded from its file with its one import supplied."""
    try:
        from nemo.utils import flops_formulas

        return flops_formulas
    except Exception:  # noqa: BLE001 - any dependency NeMo's package import trips on there
        import importlib.util
        import sys
        import types

        spec = importlib.util.find_spec("nemo")
        path = spec.submodule_search_locations[0] + "/utils/flops_formulas.py"
        metrics = types.ModuleType("nemo.collections.common.parts.perf_metrics_utils")
        metrics.LLM_VOCAB_SIZE_MAP = {"gpt3": 51200, "llama2": 32000, "llama3": 128256, "nemotron": 256000,
                                      "bert": 29000, "mixtral": 32000}  # as in NeMo 2.7.3's perf_metrics_utils
        sys.modules.setdefault(metrics.__name__, metrics)
        loaded = importlib.util.spec_from_file_location("nemo_flops_formulas", path)
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
        return module


def formula_name(model: ModelShape) -> str:
    """The NeMo formula a model is counted with."""
    return "qwen3" if model.moe or model.query_width != model.hidden else "llama3"


def nemo_flops_per_step(model: ModelShape, global_batch: int, seq_length: int) -> float:
    """Forward and backward FLOPs of one step of `global_batch` sequences, per NeMo's formula for the model."""
    flops_formulas = nemo_formulas()
    config = flops_formulas.FLOPSConfig(
        gbs=global_batch, enc_seq_len=seq_length, hs=model.hidden, layers=model.layers, ffn_hs=model.ffn_hidden,
        attention_heads=model.heads, query_groups=model.query_groups, vocab_size=model.vocab,
        kv_channels=model.kv_channels, moe_router_topk=model.router_topk or None,
        moe_ffn_hidden_size=model.moe_ffn_hidden or None,
    )
    if formula_name(model) == "qwen3":
        return flops_formulas.qwen3(config)
    vocabulary_correction = 6 * global_batch * seq_length * model.hidden * (model.vocab - LLAMA3_VOCAB)
    return flops_formulas.llama3(config) + vocabulary_correction


# LoRA computes no weight gradients for the frozen base: of the forward, input-gradient and weight-gradient GEMMs
# (1 + 1 + 1), the last is skipped. NVIDIA counts LoRA MFU the same way (dgxc-benchmarking ft_llama3: 8B LoRA
# 17,809 tok/s/GPU reported as 53.9% MFU where full SFT's 12,412 is 56.4%: 2/3 of the FLOPs per token).
LORA_FLOPS_FRACTION = 2 / 3


@dataclass(frozen=True)
class StepFlops:
    tokens: int
    model_flops: float  # what the step computes, LoRA's skipped weight gradients removed
    nemo_reported_flops: float  # what NeMo's FLOPs callback would report (it does not know about LoRA)


def step_flops(model: ModelShape, layout: Layout) -> StepFlops:
    nemo = nemo_flops_per_step(model, layout.global_batch, layout.seq_length)
    flops = nemo * LORA_FLOPS_FRACTION if layout.lora else nemo
    return StepFlops(tokens=layout.global_batch * layout.seq_length, model_flops=flops, nemo_reported_flops=nemo)
