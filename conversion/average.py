"""Average the model weights of several NeMo 2 checkpoints into a new NeMo 2 checkpoint.

--run is a training run's log dir or its checkpoints/ dir, holding NeMo's `<name>--step=N-...`
checkpoints. The result is the element-wise mean of the model tensors (accumulated in float64,
stored in the checkpoints' dtype); optimizer state and LR schedulers are not carried, so the
output is for export, evaluation or as a fine-tuning start, not for resuming a run. The context/
(model config + tokenizer) is copied from the newest checkpoint.

Usage: conversion/README.md.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from common import cli
from conversion.errors import ConversionError, ConversionFailed, failed
from conversion.hf_to_nemo import publish, report
from conversion.nemo_to_hf import find_checkpoint_dir, first_line_mentioning, is_checkpoint_dir

STEP_PATTERN = re.compile(r"step=(\d+)")
MODEL_PREFIX = "module."  # NeMo stores the mcore model as LightningModule.module


def log(message: str) -> None:
    print(f"[average] {message}", flush=True)


# ---------------------------------------------------------------- choosing checkpoints


def checkpoint_step(ckpt_dir: Path) -> int | None:
    match = STEP_PATTERN.search(ckpt_dir.name)
    return int(match.group(1)) if match else None


def run_checkpoints(run_dir: Path) -> dict[int, Path]:
    """step -> checkpoint dir; NeMo's `-last` copies duplicate a step and are skipped when the original exists."""
    folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    by_step: dict[int, Path] = {}
    for candidate in sorted(folder.iterdir(), key=lambda p: p.name.endswith("-last")):
        step = checkpoint_step(candidate)
        if step is not None and is_checkpoint_dir(candidate) and step not in by_step:
            by_step[step] = candidate
    if not by_step:
        raise ConversionError(f"no `...step=N...` NeMo 2 checkpoints (weights/ + context/) in {folder}")
    return by_step


def newest_checkpoint(run_dir: Path) -> Path:
    """The run's checkpoint of the highest step (what a finished run ends with)."""
    by_step = run_checkpoints(run_dir)
    return by_step[max(by_step)]


def select_checkpoints(run_dir: Path, last: int | None = None, steps: list[int] | None = None) -> list[Path]:
    by_step = run_checkpoints(run_dir)
    if steps:
        missing = sorted(set(steps) - set(by_step))
        if missing:
            raise ConversionError(f"no checkpoint for steps {missing} in {run_dir}; available: {sorted(by_step)}")
        return [by_step[step] for step in sorted(set(steps))]
    if not last or last < 1:
        raise ConversionError("give --last K (K >= 1) or --steps")
    if last > len(by_step):
        raise ConversionError(f"asked for the last {last} checkpoints but {run_dir} has {len(by_step)}: {sorted(by_step)}")
    return [by_step[step] for step in sorted(by_step)[-last:]]


# ---------------------------------------------------------------- megatron on one CPU process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def single_process_megatron() -> Iterator[None]:
    """A gloo group of one and megatron parallel_state with TP=PP=1 (left as found if already up)."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    owns_parallel_state = not parallel_state.model_parallel_is_initialized()
    if owns_parallel_state:
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=1)
    try:
        yield
    finally:
        if owns_parallel_state:
            parallel_state.destroy_model_parallel()
        if owns_group:
            dist.destroy_process_group()


def megatron_model_from_context(ckpt_dir: Path):
    """The mcore GPTModel described by the checkpoint's context, on CPU, uninitialised (weights come next)."""
    from nemo.lightning import io

    from conversion._cpu import fusions_off

    with fusions_off():
        lightning_model = io.load_context(ckpt_dir, subpath="model")
    config = lightning_model.config
    config.perform_initialization = False
    config.use_cpu_initialization = True  # megatron's own switch: parameters allocated on CPU
    return config.configure_model(lightning_model.tokenizer).eval()


def load_model_weights(model, ckpt_dir: Path) -> dict:
    """Loaded tensors keyed like model.state_dict(); optimizer entries in the checkpoint are not read."""
    from megatron.core import dist_checkpointing

    from conversion._cpu import cuda_queries_answered_by_cpu

    with cuda_queries_answered_by_cpu():
        loaded = dist_checkpointing.load(model.sharded_state_dict(prefix=MODEL_PREFIX), str(ckpt_dir / "weights"))
    return {key.removeprefix(MODEL_PREFIX): value for key, value in loaded.items() if key.startswith(MODEL_PREFIX)}


def save_model_weights(model, source_ckpt: Path, out_ckpt: Path) -> None:
    """Write model weights as NeMo does ({"state_dict": ...} + common items), without optimizer state."""
    from megatron.core import dist_checkpointing

    from conversion._cpu import cuda_queries_answered_by_cpu

    common = dist_checkpointing.load_common_state_dict(str(source_ckpt / "weights"))
    common["optimizer_states"], common["lr_schedulers"] = {}, []
    weights_dir = out_ckpt / "weights"
    weights_dir.mkdir(parents=True)
    with cuda_queries_answered_by_cpu():
        dist_checkpointing.save(
            {**common, "state_dict": model.sharded_state_dict(prefix=MODEL_PREFIX)},
            str(weights_dir),
            content_metadata=common.get("content_metadata"),
        )
    shutil.copytree(source_ckpt / "context", out_ckpt / "context")


# ---------------------------------------------------------------- averaging


def is_weight(key: str, value) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and not key.endswith("_extra_state") and value.is_floating_point()


def mean_state(model, ckpt_dirs: list[Path]) -> dict:
    sums: dict = {}
    for index, ckpt_dir in enumerate(ckpt_dirs, start=1):
        log(f"loading {index}/{len(ckpt_dirs)}: {ckpt_dir.name}")
        for key, value in load_model_weights(model, ckpt_dir).items():
            if is_weight(key, value):
                sums[key] = sums[key] + value.double() if key in sums else value.double()
    reference = model.state_dict()
    return {key: (total / len(ckpt_dirs)).to(reference[key].dtype) for key, total in sums.items()}


def average_checkpoints(ckpt_dirs: list[Path | str], out_dir: Path | str, overwrite: bool = False) -> Path:
    from conversion.hf_to_nemo import refuse_existing_output

    out_dir = Path(out_dir).resolve()
    refuse_existing_output(out_dir, overwrite)
    ckpt_dirs = [find_checkpoint_dir(Path(p).resolve()) for p in ckpt_dirs]
    if not ckpt_dirs:
        raise ConversionError("no checkpoints to average")
    started = time.perf_counter()
    newest = ckpt_dirs[-1]
    log(f"averaging {len(ckpt_dirs)} checkpoints; context from {newest.name}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with single_process_megatron(), \
            tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-") as staging:
        model = megatron_model_from_context(newest)
        from torch.distributed.checkpoint.api import CheckpointException

        try:
            averaged = mean_state(model, ckpt_dirs)
        except (Exception, CheckpointException) as error:  # torch's CheckpointException is a BaseException
            reason = first_line_mentioning("mismatch", str(error)) or f"{type(error).__name__}: {error}"
            raise ConversionFailed(f"checkpoints do not share the model in {newest.name}/context: {reason}") from error
        model.load_state_dict(averaged, strict=False)
        staged = Path(staging) / "checkpoint"
        log(f"saving {len(averaged)} averaged tensors")
        from torch.distributed.checkpoint.api import CheckpointException

        try:
            save_model_weights(model, newest, staged)
        except (Exception, CheckpointException) as error:  # torch's CheckpointException is a BaseException
            raise failed("saving the average", out_dir, error) from error
        publish(staged, out_dir)
    log(f"wrote {out_dir} in {time.perf_counter() - started:.0f}s")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description="Average model weights of NeMo 2 checkpoints.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="training log dir or its checkpoints/ dir")
    source.add_argument("--ckpts", type=Path, nargs="+", help="explicit checkpoint dirs")
    parser.add_argument("--last", type=int, help="average the last K checkpoints of --run")
    parser.add_argument("--steps", type=int, nargs="+", help="average these steps of --run")
    parser.add_argument("--out", required=True, type=Path, help="new NeMo 2 checkpoint dir")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    return report(lambda: average_checkpoints(args.ckpts or select_checkpoints(args.run, args.last, args.steps),
                                              args.out, args.overwrite))


if __name__ == "__main__":
    raise SystemExit(main())
