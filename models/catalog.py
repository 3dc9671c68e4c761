"""Every model the recipes train, as data: one row each, architecture numbers in exactly one place.

Real architectures take their numbers from NeMo's own config classes (named here, never copied);
the small CPU models state theirs in the row. Classes are dotted paths so that listing the
catalog costs no NeMo import.
"""

from dataclasses import dataclass, field
from pathlib import Path

from common.transformer_engine import CUDA_ONLY_FUSIONS

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO_ROOT / "models" / "tokenizers"

_LLAMA = "nemo.collections.llm.gpt.model.llama"
_QWEN3 = "nemo.collections.llm.gpt.model.qwen3"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    model_class: str
    config_class: str
    hf_id: str | None = None  # the Hugging Face model the imported weights come from
    # The embedding's rows: Hugging Face config.json's vocab_size, checked on import (conversion/hf_to_nemo.py);
    # NeMo sizes the embedding from len(tokenizer) unless the config class sets vocab_size, as Qwen's does.
    vocab_size: int = 0
    # How SFT/LoRA data is rendered (data/templates, or "hf"): an instruct model's own chat format, plain
    # text for a base model. `data.template=...` overrides it per run.
    chat_template: str = "plain"
    config_overrides: dict = field(default_factory=dict)
    local_tokenizer: str | None = None  # a tokenizer folder, for models without imported weights

    @property
    def checkpoint(self) -> str | None:
        """Where the recipes restore the imported weights from: `python -m conversion.hf_to_nemo --model NAME`
        writes there ($NEMO_MODELS_CACHE/<hf id>, see runtime/checkpoints.py)."""
        return f"nemo://{self.hf_id}" if self.hf_id else None

    @property
    def tokenizer(self) -> str:
        """The tokenizer comes from the same place as the weights: the checkpoint's context/nemo_tokenizer."""
        return self.local_tokenizer or self.checkpoint


MODELS = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="tiny_llama",
            description="2-layer Llama (hidden 64) for CPU runs and tests",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama3Config",
            local_tokenizer=str(TOKENIZERS / "tiny"),
            vocab_size=4096,  # models/tokenizers/tiny/tokenizer.json: 4,096 entries (its 4 special tokens among them)
            config_overrides=dict(
                num_layers=2,
                hidden_size=64,
                ffn_hidden_size=256,
                num_attention_heads=4,
                num_query_groups=2,
                seq_length=128,
                **CUDA_ONLY_FUSIONS,  # the small CPU models run without Transformer Engine
            ),
        ),
        ModelSpec(
            name="tiny_moe",
            description="2-layer Mixtral-style mixture of experts (hidden 64, 4 experts, top-2) for CPU runs and tests",
            model_class="nemo.collections.llm.MixtralModel",
            config_class="nemo.collections.llm.gpt.model.mixtral.MixtralConfig",
            local_tokenizer=str(TOKENIZERS / "tiny"),
            vocab_size=4096,  # the tiny tokenizer, as tiny_llama
            config_overrides=dict(
                num_layers=2,
                hidden_size=64,
                ffn_hidden_size=128,
                num_attention_heads=4,
                num_query_groups=2,
                seq_length=128,
                max_position_embeddings=128,
                num_moe_experts=4,
                moe_ffn_hidden_size=128,
                moe_router_topk=2,
                # Routing (dispatcher, aux loss, capacity) is set where it is tuned: recipes/tiny_moe.py.
                # The small CPU models run without Transformer Engine: its fusions, MoE's included
                # (common/transformer_engine.py's CUDA_ONLY_MOE_FUSIONS), are off.
                moe_permute_fusion=False,
                moe_grouped_gemm=False,
                **CUDA_ONLY_FUSIONS,
            ),
        ),
        ModelSpec(
            name="smollm2_135m",
            description="SmolLM2-135M-Instruct: a real pretrained Llama small enough for CPU",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama3Config",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            vocab_size=49152,
            # SmolLM2's own (hf) template has no {% generation %} markers and adds a default system prompt.
            chat_template="chatml",
            config_overrides=dict(
                num_layers=30,
                hidden_size=576,
                ffn_hidden_size=1536,
                num_attention_heads=9,
                num_query_groups=3,
                seq_length=2048,
                rotary_base=100_000,
                share_embeddings_and_output_weights=True,
                init_method_std=0.02,
                **CUDA_ONLY_FUSIONS,  # the small CPU models run without Transformer Engine
            ),
        ),
        ModelSpec(
            name="llama32_1b",
            description="Llama 3.2 1B",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama32Config1B",
            hf_id="meta-llama/Llama-3.2-1B",
            vocab_size=128256,
        ),
        ModelSpec(
            name="llama32_3b",
            description="Llama 3.2 3B",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama32Config3B",
            hf_id="meta-llama/Llama-3.2-3B",
            vocab_size=128256,
        ),
        ModelSpec(
            name="llama31_8b",
            description="Llama 3.1 8B",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama31Config8B",
            hf_id="meta-llama/Llama-3.1-8B",
            vocab_size=128256,
        ),
        ModelSpec(
            name="llama31_70b",
            description="Llama 3.1 70B",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama31Config70B",
            hf_id="meta-llama/Llama-3.1-70B",
            vocab_size=128256,
        ),
        ModelSpec(
            name="mistral_7b",
            description="Mistral 7B v0.1",
            model_class="nemo.collections.llm.MistralModel",
            config_class="nemo.collections.llm.gpt.model.mistral.MistralConfig7B",
            hf_id="mistralai/Mistral-7B-v0.1",
            vocab_size=32000,
        ),
        ModelSpec(
            name="qwen25_7b",
            description="Qwen2.5 7B",
            model_class="nemo.collections.llm.Qwen2Model",
            config_class="nemo.collections.llm.gpt.model.qwen2.Qwen25Config7B",
            hf_id="Qwen/Qwen2.5-7B",
            vocab_size=152064,  # Qwen25Config7B.vocab_size (the tokenizer has 151,665)
        ),
        ModelSpec(
            name="qwen3_8b",
            description="Qwen3 8B",
            model_class="nemo.collections.llm.Qwen3Model",
            config_class=f"{_QWEN3}.Qwen3Config8B",
            hf_id="Qwen/Qwen3-8B",
            vocab_size=151936,  # Qwen3Config.vocab_size and config.json's (the tokenizer has 151,669)
        ),
        ModelSpec(
            name="qwen3_30b_a3b",
            description="Qwen3 30B-A3B (mixture of experts: 128 experts, 8 active)",
            model_class="nemo.collections.llm.Qwen3Model",
            config_class=f"{_QWEN3}.Qwen3Config30B_A3B",
            hf_id="Qwen/Qwen3-30B-A3B",
            vocab_size=151936,  # Qwen3Config.vocab_size and config.json's
        ),
        ModelSpec(
            name="mixtral_8x7b",
            description="Mixtral 8x7B v0.1 (mixture of experts: 8 experts, 2 active)",
            model_class="nemo.collections.llm.MixtralModel",
            config_class="nemo.collections.llm.gpt.model.mixtral.MixtralConfig8x7B",
            hf_id="mistralai/Mixtral-8x7B-v0.1",
            vocab_size=32000,
        ),
        ModelSpec(
            name="llama2_7b",
            description="Llama 2 7B",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama2Config7B",
            hf_id="meta-llama/Llama-2-7b-hf",
            vocab_size=32000,
        ),
    ]
}


def config_defaults(model_name: str) -> dict:
    """The numbers the recipes build the row's model with: NeMo's config-class defaults, then the row's overrides,
    read from the dataclass fields: constructing the config would validate fusion flags against this machine's
    Transformer Engine, which is beside the point here."""
    import dataclasses
    import importlib

    spec = MODELS[model_name]
    module, _, name = spec.config_class.rpartition(".")
    config_class = getattr(importlib.import_module(module), name)
    values = {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}
    values.update(spec.config_overrides)
    return values


def is_mixture_of_experts(model_name: str) -> bool:
    return bool(config_defaults(model_name).get("num_moe_experts"))


def architecture(model_name: str) -> dict:
    """The row's model class name and architecture numbers (see config_defaults). Mixture-of-experts rows add
    their experts, and a head size other than hidden / heads (Qwen3) is stated as kv_channels."""
    spec = MODELS[model_name]
    values = config_defaults(model_name)
    moe = {}
    if values.get("num_moe_experts"):
        moe = {
            "num_moe_experts": values["num_moe_experts"],
            "moe_router_topk": values["moe_router_topk"],
            # megatron-core sizes the experts like the dense MLP when the class leaves this unset (Mixtral)
            "moe_ffn_hidden_size": values.get("moe_ffn_hidden_size") or values["ffn_hidden_size"],
            "moe_shared_expert_intermediate_size": values.get("moe_shared_expert_intermediate_size"),
        }
    return {
        "model": spec.model_class.rsplit(".", 1)[-1],
        "num_layers": values["num_layers"],
        "hidden_size": values["hidden_size"],
        "num_attention_heads": values["num_attention_heads"],
        "num_query_groups": values.get("num_query_groups") or values["num_attention_heads"],
        "vocab_size": spec.vocab_size,
        "kv_channels": values.get("kv_channels") or values["hidden_size"] // values["num_attention_heads"],
        "qk_layernorm": bool(values.get("qk_layernorm", False)),
        **moe,
    }
