"""Tiny randomly initialised Hugging Face models of each architecture the conversions support, made locally
with transformers (no hub), with the tiny tokenizer of models/tokenizers/tiny."""

import shutil
from pathlib import Path

from launching import REPO

TINY_TOKENIZER = REPO / "models" / "tokenizers" / "tiny"
# Shared by every architecture; the Mixtral one has the shapes of the catalog's tiny_moe, so that its weights can
# start a tiny_moe run (tests/test_moe.py).
COMMON = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=4096, max_position_embeddings=256, tie_word_embeddings=False)
# config.json's architecture -> (transformers model type, what differs from COMMON)
ARCHITECTURES = {
    "Qwen3ForCausalLM": ("qwen3", dict(head_dim=16)),
    "Qwen3MoeForCausalLM": ("qwen3_moe", dict(head_dim=16, num_experts=4, num_experts_per_tok=2,
                                              moe_intermediate_size=32, norm_topk_prob=True)),
    "MixtralForCausalLM": ("mixtral", dict(num_local_experts=4, num_experts_per_tok=2)),
    "MistralForCausalLM": ("mistral", dict(sliding_window=None)),
    "Qwen2ForCausalLM": ("qwen2", dict()),
}


def make(architecture: str, folder: Path, seed: int = 0, **changes) -> Path:
    """Writes a float32 model of `architecture` with random weights (seeded) and the tiny tokenizer to `folder`;
    `changes` override config values."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, differences = ARCHITECTURES[architecture]
    config = AutoConfig.for_model(model_type, **{**COMMON, **differences, **changes})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    assert type(model).__name__ == architecture
    model.save_pretrained(folder)
    for name in TINY_TOKENIZER.iterdir():
        shutil.copy(name, folder / name.name)
    return folder
