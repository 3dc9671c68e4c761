"""SmolLM2 fine-tuned on CPU through launch.py, then exported: full SFT (with the end-of-run checkpoint
average) --then average,export,eval -> transformers generates from the export, evaluation's JSON names it; LoRA -> merge_lora -> merged == base + alpha/r * B @ A
-> nemo_to_hf -> transformers generates."""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import pytest
import torch

from conversion.merge_lora import merge_lora
from conversion.nemo_to_hf import export_nemo
from launching import assert_succeeded, launch, training_steps
from nemo_checkpoint_logits import megatron_for_inference, megatron_logits, megatron_model_from_checkpoint

LORA_RANK, LORA_ALPHA = 8, 16  # recipes/smollm2_135m.py
ADAPTED = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")


def timed(label: str, step):
    started = time.perf_counter()
    result = step()
    print(f"\n[timing] {label}: {time.perf_counter() - started:.1f}s")
    return result


def output_of(result) -> str:
    return result.stdout + result.stderr


def from_fixture(smollm2_nemo: Path, restore: Path | None = None) -> list[str]:
    """The recipes' imported checkpoint and tokenizer (nemo://HuggingFaceTB/SmolLM2-135M-Instruct) -> the session
    fixture's: the two overrides `python -m conversion.hf_to_nemo --out` prints."""
    return [f"resume.restore_config.path={restore or smollm2_nemo}", f"data.tokenizer.source={smollm2_nemo}"]


def run_recipe(name: str, smollm2_nemo: Path, cwd: Path, *args: str) -> tuple[Path, list, str]:
    result = timed(name, lambda: launch(f"recipe={name}", *from_fixture(smollm2_nemo), *args, cwd=cwd))
    assert_succeeded(result)
    assert f"Restoring model weights from RestoreConfig(path='{smollm2_nemo}'" in output_of(result)
    steps = training_steps(output_of(result))
    print(f"\n[{name}] losses: {[round(loss, 3) for _, loss, _ in steps]}")
    return cwd / "results" / name, steps, output_of(result)


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
HELD_OUT = Path(__file__).resolve().parents[2] / "data" / "sft_examples" / "tiny_sft" / "validation.jsonl"


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


EVALUATION = ("then.eval.limit=2", "then.eval.threads=1", "then.eval.max_new_tokens=48")


def test_sft_then_average_export_eval(smollm2_hf, smollm2_nemo, tmp_path):
    """launch.py --then average,export,eval: the recipe's own average is exported and evaluated, in order."""
    run_dir, steps, output = run_recipe(
        "smollm2_135m_sft", smollm2_nemo, tmp_path, *EVALUATION, "--then", "average,export,eval:arithmetic"
    )
    assert [s[0] for s in steps] == list(range(10))
    assert all(math.isfinite(loss) for _, loss, _ in steps)

    # The recipe's AverageLastCheckpoints(last=2) ran after llm.finetune returned: mean of steps 4 and 9.
    averaged_dir = run_dir / "averaged"
    assert (averaged_dir / "context" / "io.json").is_file(), "the end-of-training average is missing"
    step4, step9 = model_weights(checkpoint_at(run_dir, 4)), model_weights(checkpoint_at(run_dir, 9))
    averaged = model_weights(averaged_dir)
    assert sorted(averaged) == sorted(step9)
    moved = 0
    for name, tensor in step9.items():
        expected = ((step4[name].double() + tensor.double()) / 2).to(tensor.dtype)
        assert torch.equal(averaged[name], expected), name
        moved += not torch.equal(step4[name], tensor)
    assert moved > 0, "training changed no weight between steps 4 and 9"

    # Then, after training: the averaged checkpoint exported (python -m conversion.nemo_to_hf), then evaluated.
    hf_dir = run_dir / "hf"
    assert "[then] average: done when training ends" in output
    assert f"[then] export: python -m conversion.nemo_to_hf --nemo {run_dir.resolve() / 'averaged'}" in output
    assert generate(hf_dir).strip()
    assert_export_has_the_checkpoints_logits(averaged_dir, hf_dir)
    assert_training_lowered_the_held_out_loss(smollm2_hf, hf_dir)
    record = json.loads((run_dir / "eval.json").read_text())
    assert Path(record["checkpoint"]) == hf_dir.resolve() and record["model_kind"] == "hf"
    rows = [row for row in record["results"] if row["benchmark"] == "arithmetic"]
    assert rows and all(row["samples"] == 2 for row in rows), record["results"]


@pytest.fixture(scope="module")
def lora_run(smollm2_nemo, tmp_path_factory) -> Path:
    run_dir, steps, _ = run_recipe("smollm2_135m_lora", smollm2_nemo, tmp_path_factory.mktemp("lora"))
    assert [s[0] for s in steps] == list(range(10))
    assert all(math.isfinite(loss) for _, loss, _ in steps)
    return run_dir


@pytest.fixture(scope="module")
def merged(lora_run, tmp_path_factory) -> Path:
    return timed("merge_lora", lambda: merge_lora(checkpoint_at(lora_run, 9), tmp_path_factory.mktemp("merged") / "ckpt"))


def test_lora_merge_is_base_plus_scaled_low_rank_update(smollm2_nemo, lora_run, merged):
    base, result = model_weights(smollm2_nemo), model_weights(merged)
    adapters = plain_tensors(checkpoint_at(lora_run, 9))
    assert sorted(result) == sorted(base)
    assert all(t.dtype == torch.float32 for t in result.values()), "the merge must keep the fp32 weights"
    worst, merged_names = 0.0, []
    for name, weight in base.items():
        layer, _, leaf = name.rpartition(".")
        if layer.rsplit(".", 1)[-1] in ADAPTED and leaf == "weight":
            a, b = adapters[f"{layer}.adapter.linear_in.weight"], adapters[f"{layer}.adapter.linear_out.weight"]
            expected = weight.double() + (LORA_ALPHA / LORA_RANK) * (b.double() @ a.double())
            assert b.abs().max() > 0, f"{layer}: B is still zero after training"
            diff = (result[name].double() - expected).abs().max().item()
            worst = max(worst, diff)
            merged_names.append(name)
        else:
            assert torch.equal(result[name], weight), f"{name} is not adapted and must be unchanged"
    print(f"\n[merge] {len(merged_names)} adapted tensors, max |merged - (W + a/r B A)| = {worst:.3g}")
    assert len(merged_names) == len(ADAPTED)
    assert worst < 1e-6


def test_lora_adapter_checkpoints_are_refused_by_export_and_averaging(lora_run, tmp_path):
    from conversion.errors import ConversionError
    from training.checkpoint_averaging import average_run

    adapter = checkpoint_at(lora_run, 9)
    with pytest.raises(ConversionError, match=r"holds LoRA adapter weights only: merge them first \(python -m conversion.merge_lora\)"):
        export_nemo(adapter, tmp_path / "hf")
    with pytest.raises(ConversionError, match=r"holds LoRA adapter checkpoints: merge them \(conversion.merge_lora\) before averaging"):
        average_run(lora_run, last=2, out_dir=tmp_path / "averaged")
    assert sorted(tmp_path.iterdir()) == []


def test_merged_lora_exports_and_generates(smollm2_hf, merged, tmp_path):
    hf_dir = timed("nemo_to_hf (merged lora)", lambda: export_nemo(merged, tmp_path / "lora-hf"))
    assert json.loads((hf_dir / "config.json").read_text()).get("torch_dtype") in ("float32", None)
    assert generate(hf_dir).strip()
    assert_export_has_the_checkpoints_logits(merged, hf_dir)
    assert_training_lowered_the_held_out_loss(smollm2_hf, hf_dir)


def test_launch_without_the_imported_checkpoint_names_the_commands(smollm2_nemo, tmp_path):
    missing = tmp_path / "not-imported"
    result = launch("recipe=smollm2_135m_lora", *from_fixture(smollm2_nemo, restore=missing), cwd=tmp_path)
    assert result.returncode == 2, output_of(result)[-3000:]
    assert f"error: resume.restore_config.path: {missing} does not exist" in result.stderr
    assert f"python -m conversion.hf_to_nemo --hf <Hugging Face folder of HuggingFaceTB/SmolLM2-135M-Instruct> " \
           f"--model smollm2_135m --out {missing}" in result.stderr
    assert "global_step" not in output_of(result)
