"""HF -> NeMo 2 -> HF on SmolLM2-135M-Instruct: weights bitwise, config, tokenizer, generation config."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

SAMPLE_TEXTS = [
    "What is the capital of France?",
    "  leading spaces, tabs\tand émojis 🎉\n",
    "def square(x):\n    return x ** 2",
    "<|im_start|>user\nHi<|im_end|>\n",
]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
# Not architecture: GGUF-loader leftovers in the source config that NeMo has no field for.
CONFIG_KEYS_NOT_CARRIED = {"_model_name_or_path", "unk_token_id", "transformers_version", "_name_or_path"}


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.uint8)


def test_every_tensor_bitwise_equal(smollm2_hf, smollm2_roundtrip):
    original = load_file(smollm2_hf / "model.safetensors")
    exported = load_file(smollm2_roundtrip / "model.safetensors")
    assert sorted(exported) == sorted(original)
    for name, tensor in original.items():
        assert exported[name].dtype == tensor.dtype, name
        assert exported[name].shape == tensor.shape, name
        assert torch.equal(bits(exported[name]), bits(tensor)), f"{name} differs"


def test_config_equivalent(smollm2_hf, smollm2_roundtrip):
    original = AutoConfig.from_pretrained(smollm2_hf).to_dict()
    exported = AutoConfig.from_pretrained(smollm2_roundtrip).to_dict()
    for key in CONFIG_KEYS_NOT_CARRIED:
        original.pop(key, None)
        exported.pop(key, None)
    assert exported == original


def test_generation_config_equal(smollm2_hf, smollm2_roundtrip):
    original = GenerationConfig.from_pretrained(smollm2_hf).to_diff_dict()
    exported = GenerationConfig.from_pretrained(smollm2_roundtrip).to_diff_dict()
    original.pop("transformers_version", None)
    exported.pop("transformers_version", None)
    assert exported == original


def test_tokenizer_identical(smollm2_hf, smollm2_roundtrip):
    original = AutoTokenizer.from_pretrained(smollm2_hf)
    exported = AutoTokenizer.from_pretrained(smollm2_roundtrip)
    assert type(exported) is type(original)
    assert exported.get_vocab() == original.get_vocab()
    assert exported.all_special_tokens == original.all_special_tokens
    for text in SAMPLE_TEXTS:
        assert exported(text).input_ids == original(text).input_ids, text
    assert exported.chat_template == original.chat_template
    assert exported.apply_chat_template(CHAT, add_generation_prompt=True) == original.apply_chat_template(
        CHAT, add_generation_prompt=True
    )
    # The template lives inside tokenizer_config.json, not a side file.
    assert "chat_template" in (smollm2_roundtrip / "tokenizer_config.json").read_text()
    assert not (smollm2_roundtrip / "chat_template.jinja").exists()


def test_nemo_checkpoint_layout(smollm2_nemo):
    assert (smollm2_nemo / "weights" / "metadata.json").is_file()
    assert (smollm2_nemo / "context" / "io.json").is_file()
    assert (smollm2_nemo / "context" / "nemo_tokenizer" / "tokenizer.json").is_file()
    siblings = [p.name for p in smollm2_nemo.parent.iterdir()]
    assert siblings == [smollm2_nemo.name], f"leftovers next to the checkpoint: {siblings}"
