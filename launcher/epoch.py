"""`trainer.max_steps=-1` (ONE_EPOCH, the default of the GPU recipes) means one pass over the data:
computed at launch from the prepared data's size, so it tracks whatever `data.*` points at."""

import math
from pathlib import Path

import fiddle as fdl

from common.errors import UserError
from launcher import data_files
from recipes.blocks import ONE_EPOCH

COUNTED_AT_LAUNCH = "trainer.max_steps=-1: one epoch, counted at launch"


def _pretraining_samples(data) -> int:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    tokens = 0
    for prefix in data_files.prefixes(data.paths):
        dataset = IndexedDataset(prefix)  # kept alive: its lengths are a view of its memory map
        tokens += int(dataset.sequence_lengths.sum())
    split = [float(s) for s in str(data.split).replace("/", ",").split(",")]
    return int(tokens * split[0] / sum(split)) // data.seq_length


def _finetuning_samples(data) -> int:
    training = Path(data.dataset_root) / "training.jsonl"
    with training.open("rb") as f:
        return sum(1 for line in f if line.strip())


def samples_in_one_epoch(data) -> int:
    data_files.require(data)
    if hasattr(data, "paths") and not data_files.is_preference_data(data):
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


def preview_max_steps(config) -> str | None:
    """For a dry run: fill_max_steps where the data is here; without it, a note that launch counts it."""
    if config.trainer.max_steps == ONE_EPOCH and data_files.missing(config.data):
        return f"{COUNTED_AT_LAUNCH} (the data is not on this machine)"
    return fill_max_steps(config)
