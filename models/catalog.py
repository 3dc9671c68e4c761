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


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    model_class: str
    config_class: str
    tokenizer: str  # a Hugging Face id, or a local tokenizer folder
    hf_id: str | None = None
    # How SFT/LoRA data is rendered (data/templates, or "hf"): an instruct model's own chat format, plain
    # text for a base model. `data.template=...` overrides it per run.
    chat_template: str = "plain"
    config_overrides: dict = field(default_factory=dict)


MODELS = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="tiny_llama",
            description="2-layer Llama (hidden 64) for CPU runs and tests",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama3Config",
            tokenizer=str(TOKENIZERS / "tiny"),
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
            name="smollm2_135m",
            description="SmolLM2-135M-Instruct: a real pretrained Llama small enough for CPU",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama3Config",
            # The tokenizer files hf_to_nemo staged from .cache/smollm2-135m-instruct (recipes/smollm2_135m.py);
            # not the HF folder itself, whose 540 MB of weights NeMo would copy into every checkpoint.
            tokenizer=str(REPO_ROOT / ".cache" / "smollm2-135m-instruct-nemo" / "context" / "nemo_tokenizer"),
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
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
            tokenizer="meta-llama/Llama-3.2-1B",
            hf_id="meta-llama/Llama-3.2-1B",
        ),
        ModelSpec(
            name="llama32_3b",
            description="Llama 3.2 3B",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama32Config3B",
            tokenizer="meta-llama/Llama-3.2-3B",
            hf_id="meta-llama/Llama-3.2-3B",
        ),
        ModelSpec(
            name="llama31_8b",
            description="Llama 3.1 8B",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama31Config8B",
            tokenizer="meta-llama/Llama-3.1-8B",
            hf_id="meta-llama/Llama-3.1-8B",
        ),
        ModelSpec(
            name="llama31_70b",
            description="Llama 3.1 70B",
            model_class="nemo.collections.llm.LlamaModel",
            config_class=f"{_LLAMA}.Llama31Config70B",
            tokenizer="meta-llama/Llama-3.1-70B",
            hf_id="meta-llama/Llama-3.1-70B",
        ),
        ModelSpec(
            name="mistral_7b",
            description="Mistral 7B v0.1",
            model_class="nemo.collections.llm.MistralModel",
            config_class="nemo.collections.llm.gpt.model.mistral.MistralConfig7B",
            tokenizer="mistralai/Mistral-7B-v0.1",
            hf_id="mistralai/Mistral-7B-v0.1",
        ),
        ModelSpec(
            name="qwen25_7b",
            description="Qwen2.5 7B",
            model_class="nemo.collections.llm.Qwen2Model",
            config_class="nemo.collections.llm.gpt.model.qwen2.Qwen25Config7B",
            tokenizer="Qwen/Qwen2.5-7B",
            hf_id="Qwen/Qwen2.5-7B",
        ),
    ]
}
