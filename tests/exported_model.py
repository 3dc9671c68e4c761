"""Checks on a fine-tuned SmolLM2 run and its export, shared by the tests that train one (the README
walkthrough, LoRA merge and export): its checkpoints' tensors, what the exported Hugging Face folder generates,
that its logits are the checkpoint's, and that training lowered the loss on held-out records."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from nemo_checkpoint_logits import megatron_for_inference, megatron_logits, megatron_model_from_checkpoint


def checkpoint_at(run_dir: Path, step: int) -> Path:
    return next(p for p in (run_dir / "checkpoints").iterdir() if f"step={step}-" in p.name and not p.name.endswith("-last"))


def plain_tensors(ckpt: Path) -> dict:
    """Every tensor of a dist checkpoint, unsharded (layers stacked on dim 0), without building a model."""
    from megatron.core import dist_checkpointing

    from conversion._cpu import cuda_queries_answered_by_cpu
    from conversion.average import single_process_megatron

    with single_process_megatron(), cuda_queries_answered_by_cpu():
        loaded = dist_checkpointing.load_plain_tensors(str(ckpt / "weights"))
    return {k.removeprefix("module."): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def model_weights(ckpt: Path) -> dict:
    return {k: v for k, v in plain_tensors(ckpt).items() if not k.startswith("optimizer") and v.is_floating_point()
            and not k.endswith("_extra_state")}


PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]
MAX_ABS_LOGIT_DIFF = 1e-3  # as for the import (tests/conversion/test_logit_parity.py)
HELD_OUT = Path(__file__).resolve().parents[1] / "data" / "sft_examples" / "tiny_sft" / "validation.jsonl"


@functools.lru_cache(maxsize=1)  # one 135M model in memory at a time
def hf_model(hf_dir: Path):
    """transformers' model and tokenizer of a folder, loaded once for the checks made on it in a row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(hf_dir)


def prompt_ids(tokenizer) -> torch.Tensor:
    return tokenizer(tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True), return_tensors="pt").input_ids


def generate(hf_dir: Path) -> str:
    config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in config.get("chat_template", ""), "the ChatML template must travel with the export"
    model, tokenizer = hf_model(hf_dir)
    ids = prompt_ids(tokenizer)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    print(f"\n[generate] {hf_dir.name}: {text!r}")
    return text


def assert_export_has_the_checkpoints_logits(nemo_ckpt: Path, hf_dir: Path) -> None:
    """The exported folder, run by transformers, gives the logits the NeMo checkpoint gives on the same chat prompt."""
    model, tokenizer = hf_model(hf_dir)
    ids = prompt_ids(tokenizer)
    with torch.no_grad():
        exported = model(ids).logits
    with megatron_for_inference():
        trained = megatron_logits(megatron_model_from_checkpoint(nemo_ckpt)[0], ids)
    assert trained.shape == exported.shape
    worst = (trained - exported).abs().max().item()
    print(f"\n[export parity] {hf_dir.name}: max |logit diff| NeMo checkpoint vs exported HF = {worst:.3e}")
    assert worst < MAX_ABS_LOGIT_DIFF


@functools.cache  # the base model's, computed once
def held_out_answer_loss(hf_dir: Path) -> float:
    """Mean loss of the model's answer tokens on the recipes' held-out records, rendered as trained (ChatML)."""
    model, tokenizer = hf_model(hf_dir)
    losses = []
    for line in HELD_OUT.read_text().splitlines():
        record = json.loads(line)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": record["input"]}], tokenize=False,
                                               add_generation_prompt=True)
        prompt_ids = tokenizer(prompt).input_ids
        ids = torch.tensor([prompt_ids + tokenizer(record["output"] + "<|im_end|>").input_ids])
        labels = ids.clone()
        labels[0, :len(prompt_ids)] = -100
        with torch.no_grad():
            losses.append(model(ids, labels=labels).loss.item())
    return sum(losses) / len(losses)


def assert_training_lowered_the_held_out_loss(base_hf: Path, trained_hf: Path) -> None:
    """Per-step training losses are of different batches (2 records each); the held-out loss compares like with like."""
    after = held_out_answer_loss(trained_hf)  # first: the trained model is the one loaded
    before = held_out_answer_loss(base_hf)
    print(f"\n[held-out loss] {trained_hf.name}: {before:.3f} -> {after:.3f}")
    assert after < before
