"""`trainer.max_steps=-1` (ONE_EPOCH, the default of the GPU recipes) means one pass over the data:
computed at launch from the prepared data's size, so it tracks whatever `data.*` points at."""

import copy
import math
from pathlib import Path

import fiddle as fdl

from common.errors import UserError
from launcher import data_files
from recipes.blocks import ONE_EPOCH

COUNTED_AT_LAUNCH = "trainer.max_steps=-1: one epoch, counted at launch"


class _TokenizerNotRead:
    """Stands in for the run's tokenizer while counting: megatron-core's GPTDatasetConfig requires one, but
    building the sample index reads only the documents' lengths (the real tokenizer may be a checkpoint's, not
    yet imported, or a hub download)."""

    unique_identifiers = {"class": "_TokenizerNotRead"}  # megatron names each dataset by its config's fields


def _pretraining_samples(data) -> int:
    """The samples NeMo's own GPTDataset yields for one epoch of the training split, built as the run builds them
    (megatron-core splits by documents and cuts sequences of seq_length + 1 tokens; blends included)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    counting = copy.deepcopy(data)
    counting.tokenizer = _TokenizerNotRead()
    module = fdl.build(counting)
    blend = module.build_kwargs.get("blend")
    if blend and blend[1] is not None:  # megatron-core refuses an unsized blend with weights, in an assert
        raise UserError(f"trainer.max_steps=-1 (one epoch) is not defined for a weighted blend (data.paths="
                        f"{list(data.paths)}): megatron draws from each corpus by its weight; set trainer.max_steps")
    dataset_config = module.gpt_dataset_config
    # One epoch's index is not the run's: built in memory only. An empty cache path means that to megatron-core
    # (None would write it beside the data; a folder would need a process group for a blend).
    dataset_config.path_to_cache = ""
    train, _, _ = BlendedMegatronDatasetBuilder(module.dataset_cls, [None, None, None], lambda: True, dataset_config).build()
    return len(train)


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
