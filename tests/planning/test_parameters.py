"""The planned parameters per tensor/pipeline rank equal those of the megatron model NeMo builds for that rank from
the recipe's own model config (exact integers, on the meta device), LoRA adapters included; whole models equal
the counts Hugging Face publishes."""

import copy
import types
import warnings

import fiddle as fdl
import pytest
import torch

from planning.layout import model_shape
from planning.parameters import LORA_TARGETS, stage_parameters, whole_model_parameters
from planning.vocabularies import HUGGING_FACE_PARAMETERS, VOCABULARY

# (catalog model, a recipe of it, layouts (tp, pp[, ep, etp]) to build: the recipes' own and the widest the heads
# allow; for the mixtures of experts, expert parallel and expert tensor parallel too)
LAYOUTS = {
    "tiny_llama": ("tiny_llama_pretrain", [(1, 1), (2, 1), (2, 2)]),
    "smollm2_135m": ("smollm2_135m_sft", [(1, 1), (3, 2)]),
    "llama32_1b": ("llama32_1b_sft", [(1, 1), (8, 2)]),
    "llama32_3b": ("llama32_3b_sft", [(1, 1), (8, 4)]),
    "llama31_8b": ("llama31_8b_sft", [(1, 1), (2, 1), (8, 4)]),
    "llama31_70b": ("llama31_70b_sft", [(8, 4), (4, 4)]),
    "mistral_7b": ("mistral_7b_sft", [(1, 1), (8, 2)]),
    "qwen25_7b": ("qwen25_7b_sft", [(1, 1), (4, 2)]),
    "qwen3_8b": ("qwen3_8b_sft", [(1, 1), (8, 2)]),
    "llama2_7b": ("llama2_7b_sft", [(1, 1), (8, 4)]),
    "mixtral_8x7b": ("mixtral_8x7b_sft", [(1, 1), (1, 4, 8, 1), (2, 2, 4, 2)]),
    "qwen3_30b_a3b": ("qwen3_30b_a3b_sft", [(2, 2, 8, 1), (1, 1, 16, 2)]),
}
LORA_RANK = 16


def _built_parameters(recipe, as_rank, model_name: str, tp: int, pp: int, pp_rank: int, lora: bool, ep: int = 1,
                      etp: int = 1) -> tuple[int, int]:
    """(base, adapter) parameters of the model megatron builds for (tp rank 0, pp_rank, expert rank 0), on the meta
    device."""
    from nemo.collections.llm.peft import LoRA

    config = copy.deepcopy(recipe(LAYOUTS[model_name][0]).model.config)
    config.tensor_model_parallel_size, config.pipeline_model_parallel_size = tp, pp
    config.expert_model_parallel_size, config.expert_tensor_parallel_size = ep, etp
    config.sequence_parallel = False  # megatron's local spec (no Transformer Engine) has no sequence-parallel norm
    config.pipeline_dtype = torch.bfloat16
    # Allocate where the device context says (meta), not on the current CUDA device; no initialisation to run.
    config.use_cpu_initialization, config.perform_initialization = True, False
    tokenizer = types.SimpleNamespace(vocab_size=VOCABULARY[model_name])
    with as_rank(tp, pp, pp_rank=pp_rank, ep=ep, etp=etp), torch.device("meta"):
        model = fdl.build(config).configure_model(tokenizer)
        if lora:
            _apply(model, LoRA(dim=LORA_RANK, target_modules=list(LORA_TARGETS)))
    adapters = sum(p.numel() for name, p in model.named_parameters() if ".adapter." in name)
    return sum(p.numel() for p in model.parameters()) - adapters, adapters


def _apply(module, peft, prefix=""):
    """NeMo's PEFT walk (model.walk needs NeMo's module mixin): transform each child, recurse where unchanged."""
    for name, child in list(module.named_children()):
        replaced = peft.transform(child, name=name, prefix=prefix)
        if replaced is not child:
            setattr(module, name, replaced)
        else:
            _apply(child, peft, f"{prefix}.{name}" if prefix else name)


def _cases():
    for model_name, (_, layouts) in LAYOUTS.items():
        for tp, pp, *experts in layouts:
            ep, etp = experts or (1, tp)
            expert_id = f"-ep{ep}-etp{etp}" if experts else ""
            for pp_rank in sorted({0, pp - 1}):
                yield pytest.param(model_name, tp, pp, ep, etp, pp_rank, id=f"{model_name}-tp{tp}-pp{pp}{expert_id}-stage{pp_rank}")


@pytest.mark.parametrize("model_name,tp,pp,ep,etp,pp_rank", list(_cases()))
def test_planned_parameters_per_rank_equal_the_built_model(nemo_llm, recipe_config, fake_rank, monkeypatch, model_name, tp, pp,
                                                           ep, etp, pp_rank):
    from megatron.core import model_parallel_config

    recipe = recipe_config
    # Tied embeddings under PP: megatron moves the last stage's copy with .cuda() to all-reduce it with the first.
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    # megatron's all-to-all token dispatcher creates a CUDA stream for its device-to-host copies when it is built.
    monkeypatch.setattr(torch.cuda, "Stream", lambda *args, **kwargs: None)
    # megatron-core 0.15.3's ModelParallelConfig warns about EP x TP without sequence parallel through a `warnings`
    # module it never imports (a NameError); give it one.
    monkeypatch.setattr(model_parallel_config, "warnings", warnings, raising=False)
    shape = model_shape(recipe(LAYOUTS[model_name][0]).model.config, VOCABULARY[model_name])
    # Adapters on the first stage of every layout whose TP divides the LoRA rank (NeMo splits linear_in's rank
    # dimension over TP and refuses otherwise); the base counts on every stage built.
    lora = pp_rank == 0 and LORA_RANK % tp == 0
    base, adapters = _built_parameters(recipe, fake_rank, model_name, tp, pp, pp_rank, lora, ep, etp)
    planned = stage_parameters(shape, tp, pp, pp_rank, LORA_RANK if lora else None, ep=ep, etp=etp)
    assert (planned.base, planned.adapters) == (base, adapters)


@pytest.mark.parametrize("model_name", sorted(HUGGING_FACE_PARAMETERS))
def test_whole_model_parameters_equal_hugging_face(recipe_config, model_name):
    recipe = recipe_config
    shape = model_shape(recipe(LAYOUTS[model_name][0]).model.config, VOCABULARY[model_name])
    assert whole_model_parameters(shape) == HUGGING_FACE_PARAMETERS[model_name]
