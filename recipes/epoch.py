"""`trainer.max_steps=-1` (ONE_EPOCH, the default of the GPU recipes) means one pass over the data:
computed at launch from the prepared data's size, so it tracks whatever `data.*` points at."""

import math
from pathlib import Path

import fiddle as fdl

from recipes.errors import UserError

ONE_EPOCH = -1


def _prefixes(paths) -> list[str]:
    """data.paths is [prefix, ...] or a blend [weight, prefix, weight, prefix, ...]."""
    return [str(p) for p in paths if not isinstance(p, (int, float))]


def _pretraining_samples(data) -> int:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    tokens = 0
    for prefix in _prefixes(data.paths):
        if not Path(f"{prefix}.idx").exists():
            raise UserError(f"data.paths: no prepared corpus at {prefix}.bin/.idx (python -m data.prepare_pretraining)")
        dataset = IndexedDataset(prefix)  # kept alive: its lengths are a view of its memory map
        tokens += int(dataset.sequence_lengths.sum())
    split = [float(s) for s in str(data.split).replace("/", ",").split(",")]
    return int(tokens * split[0] / sum(split)) // data.seq_length


def _finetuning_samples(data) -> int:
    training = Path(data.dataset_root) / "training.jsonl"
    if not training.exists():
        raise UserError(f"data.dataset_root: {training} does not exist (python -m data.sft convert --output-dir DIR)")
    with training.open("rb") as f:
        return sum(1 for line in f if line.strip())


def samples_in_one_epoch(data) -> int:
    if hasattr(data, "paths"):
        return _pretraining_samples(data)
    if hasattr(data, "dataset_root"):
        return _finetuning_samples(data)
    raise UserError(f"trainer.max_steps=-1 (one epoch) is not supported for {fdl.get_callable(data).__name__}: set trainer.max_steps")


def fill_max_steps(config) -> str | None:
    """Replaces ONE_EPOCH by the step count of one epoch; returns a note for the dry run, or None."""
    if config.trainer.max_steps != ONE_EPOCH:
        return None
    samples = samples_in_one_epoch(config.data)
    config.trainer.max_steps = max(1, math.ceil(samples / config.data.global_batch_size))
    return f"trainer.max_steps={config.trainer.max_steps} (one epoch: {samples} samples / global batch {config.data.global_batch_size})"
