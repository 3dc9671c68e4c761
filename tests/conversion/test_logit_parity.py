"""The imported NeMo 2 checkpoint, run as a megatron-core GPTModel on CPU (tests/nemo_checkpoint_logits.py),
matches transformers' logits."""

from __future__ import annotations


import pytest
import torch

from nemo_checkpoint_logits import megatron_for_inference, megatron_logits, megatron_model_from_checkpoint

PROMPTS = [
    "The quick brown fox jumps over the lazy dog, and then",
    "Gravity is the force that",
]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
NEW_TOKENS = 10
MAX_ABS_LOGIT_DIFF = 1e-3


@pytest.fixture(scope="module")
def megatron_parallel_state():
    with megatron_for_inference():
        yield


def megatron_greedy(model, input_ids: torch.Tensor, new_tokens: int) -> list[int]:
    ids = input_ids
    for _ in range(new_tokens):
        next_id = megatron_logits(model, ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    return ids[0, input_ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def models(smollm2_hf, smollm2_nemo, megatron_parallel_state):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    megatron_model, config = megatron_model_from_checkpoint(smollm2_nemo)
    hf_model = AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_hf)
    return megatron_model, config, hf_model, tokenizer


def prompt_ids(tokenizer) -> list[torch.Tensor]:
    chat = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt")
    return [tokenizer(text, return_tensors="pt").input_ids for text in PROMPTS] + [chat]


def test_config_runs_without_transformer_engine(models):
    _, config, _, _ = models
    for flag in ("apply_rope_fusion", "bias_activation_fusion", "masked_softmax_fusion", "persist_layer_norm",
                 "gradient_accumulation_fusion", "cross_entropy_loss_fusion", "bias_dropout_fusion"):
        assert getattr(config, flag) is False, flag
    assert config.params_dtype == torch.float32
    assert config.share_embeddings_and_output_weights is True  # SmolLM2 ties embeddings
    assert config.rotary_base == 100000.0


def test_logits_match_transformers(models):
    megatron_model, _, hf_model, tokenizer = models
    worst = 0.0
    for ids in prompt_ids(tokenizer):
        with torch.no_grad():
            expected = hf_model(ids).logits
        actual = megatron_logits(megatron_model, ids)
        assert actual.shape == expected.shape
        worst = max(worst, (actual - expected).abs().max().item())
    print(f"\n[parity] max |logit diff| megatron-core vs transformers over {len(PROMPTS) + 1} prompts: {worst:.3e}")
    assert worst < MAX_ABS_LOGIT_DIFF


def test_greedy_continuations_identical(models):
    megatron_model, _, hf_model, tokenizer = models
    for ids in prompt_ids(tokenizer):
        with torch.no_grad():
            expected = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                         do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
        expected = expected[0, ids.shape[1]:].tolist()
        actual = megatron_greedy(megatron_model, ids, NEW_TOKENS)
        print(f"[parity] greedy: {tokenizer.decode(actual)!r}")
        assert actual == expected
    assert "Paris" in tokenizer.decode(actual)
