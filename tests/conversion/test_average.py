"""Checkpoint averaging: last-K selection in a run dir, exact element-wise mean, new loadable checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conversion.average import (
    average_checkpoints,
    is_weight,
    load_model_weights,
    megatron_model_from_context,
    save_model_weights,
    select_checkpoints,
    single_process_megatron,
)
from conversion.errors import ConversionError, ConversionFailed


def linked_checkpoint(source: Path, dest: Path) -> Path:
    """Same weights without copying 540 MB: weights/ symlinked, context/ copied."""
    dest.mkdir(parents=True)
    (dest / "weights").symlink_to(source / "weights", target_is_directory=True)
    shutil.copytree(source / "context", dest / "context")
    return dest


def scaled_checkpoint(source: Path, dest: Path, factor: float) -> None:
    with single_process_megatron():
        model = megatron_model_from_context(source)
        weights = load_model_weights(model, source)
        model.load_state_dict({k: v * factor if is_weight(k, v) else v for k, v in weights.items()}, strict=True)
        save_model_weights(model, source, dest)


def read_weights(ckpt: Path) -> dict:
    with single_process_megatron():
        model = megatron_model_from_context(ckpt)
        return {k: v for k, v in load_model_weights(model, ckpt).items() if is_weight(k, v)}


@pytest.fixture(scope="module")
def run_dir(smollm2_nemo, tmp_path_factory) -> Path:
    """A fake training run: step 100 = the imported model, step 200 = its weights x2, plus a `-last` copy."""
    run = tmp_path_factory.mktemp("run")
    checkpoints = run / "checkpoints"
    linked_checkpoint(smollm2_nemo, checkpoints / "smollm2--step=100-consumed_samples=800.0")
    scaled_checkpoint(smollm2_nemo, checkpoints / "smollm2--step=200-consumed_samples=1600.0", factor=2.0)
    linked_checkpoint(smollm2_nemo, checkpoints / "smollm2--step=200-consumed_samples=1600.0-last")
    return run


def test_select_last_k_and_named_steps(run_dir):
    with pytest.raises(ConversionError, match=r"give --last K \(K >= 1\) or --steps"):
        select_checkpoints(run_dir, last=0)
    with pytest.raises(ConversionError, match="no `...step=N...` NeMo 2 checkpoints"):
        select_checkpoints(run_dir / "checkpoints" / "smollm2--step=100-consumed_samples=800.0" / "context", last=1)
    assert [p.name for p in select_checkpoints(run_dir, last=1)] == ["smollm2--step=200-consumed_samples=1600.0"]
    assert len(select_checkpoints(run_dir, last=2)) == 2
    assert len(select_checkpoints(run_dir / "checkpoints", steps=[100, 200])) == 2
    with pytest.raises(ConversionError, match="no checkpoint for steps \\[300\\]"):
        select_checkpoints(run_dir, steps=[300])
    with pytest.raises(ConversionError, match="has 2"):
        select_checkpoints(run_dir, last=3)


def test_average_is_exact_elementwise_mean_and_replaces_an_output_only_once_complete(smollm2_nemo, run_dir, tmp_path):
    out = tmp_path / "averaged"
    out.mkdir()
    (out / "earlier-output").write_text("kept until a new average is complete")
    with pytest.raises(ConversionError, match=r"already exists \(pass --overwrite to replace it\)"):
        average_checkpoints(select_checkpoints(run_dir, last=2), out)
    # A run that fails after it started (a checkpoint whose context does not match its weights) leaves it as it was.
    mismatched = linked_checkpoint(smollm2_nemo, tmp_path / "mismatched")
    io_json = mismatched / "context" / "io.json"
    io_json.write_text(io_json.read_text().replace('"value": 1536, "paths": ["<root>.model.config.ffn_hidden_size"]',
                                                   '"value": 1600, "paths": ["<root>.model.config.ffn_hidden_size"]'))
    with pytest.raises(ConversionFailed, match="do not share the model"):
        average_checkpoints([smollm2_nemo, mismatched], out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["averaged", "mismatched"]  # no partial output left
    assert [p.name for p in out.iterdir()] == ["earlier-output"]

    assert average_checkpoints(select_checkpoints(run_dir, last=2), out, overwrite=True) == out.resolve()
    assert not (out / "earlier-output").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["averaged", "mismatched"]
    assert (out / "context" / "io.json").is_file()
    assert (out / "weights" / "metadata.json").is_file()

    original, averaged = read_weights(smollm2_nemo), read_weights(out)
    assert sorted(averaged) == sorted(original)
    for name, tensor in original.items():
        # (w + 2w) / 2 == 1.5 w exactly: the sum is accumulated in float64.
        assert torch.equal(averaged[name], tensor * 1.5), name


def test_training_entry_runs_the_after_training_hook_of_each_callback():
    """AverageLastCheckpoints acts through this hook: runtime.entry knows no callback by name."""
    import functools
    import types

    from runtime import entry
    from training.checkpoint_averaging import AverageLastCheckpoints

    calls = []

    class Hook:
        def after_training(self, trainer):
            calls.append(trainer)

    trainer = types.SimpleNamespace(callbacks=[object(), Hook()])
    entry._after_training(functools.partial(lambda **_: None, trainer=trainer))
    assert calls == [trainer]
    not_rank_0 = types.SimpleNamespace(global_rank=1, checkpoint_callback=object())
    assert AverageLastCheckpoints(last=2).after_training(not_rank_0) is None
