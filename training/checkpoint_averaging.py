"""A recipe option: average the run's last checkpoints when training ends (maths: conversion/average.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from conversion.average import average_checkpoints, log, select_checkpoints
from conversion.errors import ConversionError

AVERAGED_DIR = "averaged"
REPO_ROOT = Path(__file__).resolve().parents[1]


class AverageLastCheckpoints(Callback):
    """`recipe.trainer.callbacks.append(run.Config(AverageLastCheckpoints, last=K))`.

    Does nothing during training. When llm.pretrain / llm.finetune returns, runtime.entry.train calls
    every callback's `after_training(trainer)`; this one averages the run's last K checkpoints into
    `<log_dir>/<name>/averaged` (beside checkpoints/). K must not exceed `log.ckpt.save_top_k`, the
    checkpoints the run keeps. After the trainer returns, not in a Lightning hook: the last checkpoint is
    written by then, and the run's model-parallel state is gone.
    """

    def __init__(self, last: int = 2):
        super().__init__()
        if last < 1:
            raise ValueError(f"AverageLastCheckpoints(last={last}): average at least 1 checkpoint")
        self.last = last

    def after_training(self, trainer) -> Path | None:
        """On global rank 0: the averaged checkpoint's directory (None on other ranks or without checkpoints)."""
        if trainer.global_rank != 0 or trainer.checkpoint_callback is None:
            return None
        run_dir = Path(trainer.checkpoint_callback.dirpath).parent
        log(f"recipe option AverageLastCheckpoints(last={self.last}) for {run_dir}")
        if trainer.world_size == 1:
            return average_run(run_dir, self.last)
        # Other ranks have left; a fresh process sees no leftover model-parallel state of the run.
        out = run_dir / AVERAGED_DIR
        command = [sys.executable, "-m", "conversion.average", "--run", str(run_dir), "--last", str(self.last)]
        subprocess.run([*command, "--out", str(out), "--overwrite"], check=True, cwd=REPO_ROOT)
        return out


def average_run(run_dir: Path | str, last: int, out_dir: Path | str | None = None) -> Path:
    """The last `last` checkpoints of a run dir (`<log_dir>/<name>`) averaged into `<run_dir>/averaged`."""
    run_dir = Path(run_dir)
    ckpts = select_checkpoints(run_dir, last=last)
    if any((c / "weights" / "adapter_metadata.json").is_file() for c in ckpts):
        raise ConversionError(f"{run_dir} holds LoRA adapter checkpoints: merge them (conversion.merge_lora) before averaging")
    return average_checkpoints(ckpts, out_dir or run_dir / AVERAGED_DIR, overwrite=True)
