"""SmolLM2 LoRA-fine-tuned on CPU through launch.py, then merged and exported: merged == base + alpha/r * B @ A,
the export generates, has the merged checkpoint's logits and a lower held-out loss than the base model. Full SFT
then `--then average,export,eval` is checked on the README walkthrough's run (tests/test_walkthrough.py)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from conversion.merge_lora import merge_lora
from conversion.nemo_to_hf import export_nemo
from launching import assert_succeeded, launch, training_steps
from exported_model import (assert_export_has_the_checkpoints_logits, assert_training_lowered_the_held_out_loss,
                            checkpoint_at, generate, model_weights, plain_tensors)

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
