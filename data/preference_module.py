"""Serves preference pairs to NeMo 2 / megatron-core training (DPO, SimPO): a LightningDataModule.

Reads raw pair files (any layout `data.preference` accepts, tokenized here with the chat template) or
files that `python -m data.preference` already tokenized (.jsonl / .npy with `prompt_ids`).

Batch layout -- `micro_batch_size` and `global_batch_size` count *sequences*, and a pair is two of them:
the chosen and the rejected answer of pair i are rows 2i and 2i+1 of one micro batch, so both batch
sizes must be even (the constructor refuses odd ones, naming the key). The sampler draws pairs, never
single rows, so shuffling cannot separate a pair. Each micro batch holds::

    tokens         [2P, S]   prompt + answer, right-padded with 0
    labels         [2P, S]   tokens shifted left by one (labels[t] = ids[t + 1])
    loss_mask      [2P, S]   1 where labels[t] is a trained answer token (prompt and padding are 0)
    position_ids   [2P, S]
    attention_mask [2P, 1, S, S] causal, True = masked (megatron's convention), unless disabled
    pair_index     [P]       position of the pair in its split (keys precomputed reference log-probs)
    split          "train" / "validation"

S is the longest sequence of the micro batch rounded up to `pad_to_multiple_of`. Pairs whose longer
side exceeds `seq_length` are dropped (counted in the log), never truncated: a truncated answer would
change which tokens are compared.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from data.preference import read_pairs, tokenize_pairs
from data.sft import BadLinePolicy, prepare_template
from nemo.collections.llm.gpt.data.fine_tuning import FineTuningDataModule
from nemo.lightning.pytorch.plugins import MegatronDataSampler

log = logging.getLogger(__name__)


class PreferenceConfigError(ValueError):
    """A preference data setting that would silently misbehave; the message names the key."""


class PairSampler(MegatronDataSampler):
    """NeMo's Megatron sampler, counting sequences, but drawing whole pairs from a dataset of pairs."""

    def transform_dataloader(self, dataloader: DataLoader, consumed_samples: int = 0) -> DataLoader:
        from megatron.core import parallel_state

        from nemo.lightning.data import add_megatron_sampler

        mode = getattr(dataloader, "mode", "train")
        return add_megatron_sampler(
            dataloader,
            micro_batch_size=self.micro_batch_size // 2,
            global_batch_size=self.global_batch_size // 2,
            consumed_samples=(self.init_consumed_samples // 2) if mode == "train" else 0,
            dataloader_type="single",
            drop_last=True,
            dataloader_mode=mode,
            rank=parallel_state.get_data_parallel_rank(),
            world_size=parallel_state.get_data_parallel_world_size(),
        )


class PairDataset(Dataset):
    """The pairs of a split, repeated to `length` items (the pairs a run draws): one pass in a fixed shuffled
    order per epoch, like NeMo's SFT datasets. One long Lightning epoch over the whole run lets a resumed
    run continue at exactly the pair it stopped at; items carry their pair's index (the reference key)."""

    def __init__(self, records: list[dict], split: str, length: int | None = None, seed: int = 1234,
                 shuffle: bool = True):
        self.records = records
        self.split = split
        self.length = max(length or 0, len(records))
        self.seed = seed
        self.shuffle = shuffle
        self._order: tuple[int, list[int]] = (0, list(range(len(records))))

    def __len__(self) -> int:
        return self.length

    def order(self, epoch: int) -> list[int]:
        """Epoch 0 in file order (already shuffled once by the data module), later epochs reshuffled."""
        if self._order[0] != epoch:
            order = list(range(len(self.records)))
            if self.shuffle:
                random.Random(self.seed + epoch).shuffle(order)
            self._order = (epoch, order)
        return self._order[1]

    def __getitem__(self, index: int) -> dict:
        epoch, position = divmod(index, len(self.records))
        pair = self.order(epoch)[position]
        return {"index": pair, **self.records[pair]}


def _is_tokenized(path: Path) -> bool:
    if path.suffix == ".npy":
        return True
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                return "prompt_ids" in json.loads(line)
    return False


def load_pairs(paths: Sequence[str], hf_tokenizer, template: str) -> list[dict]:
    """Tokenized pairs (data.preference schema) from raw or pre-tokenized files."""
    records, raw = [], []
    for path in paths:
        (records.extend(read_pairs(path)) if _is_tokenized(Path(path)) else raw.append(str(path)))
    if raw:
        records.extend(tokenize_pairs(raw, hf_tokenizer, prepare_template(template, hf_tokenizer), BadLinePolicy()))
    return records


def collate_pairs(items: list[dict], split: str, pad_to_multiple_of: int = 16, attention_mask: bool = True) -> dict:
    rows = []
    for item in items:
        prompt = list(item["prompt_ids"])
        for side in ("chosen", "rejected"):
            ids = prompt + list(item[f"{side}_ids"])
            mask = [0] * len(prompt) + list(item[f"{side}_loss_mask"])
            rows.append((ids[:-1], ids[1:], mask[1:]))
    length = max(len(r[0]) for r in rows)
    length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    tokens = torch.zeros(len(rows), length, dtype=torch.long)
    labels = torch.zeros(len(rows), length, dtype=torch.long)
    loss_mask = torch.zeros(len(rows), length, dtype=torch.float32)
    for row, (inp, lab, msk) in enumerate(rows):
        tokens[row, : len(inp)] = torch.tensor(inp)
        labels[row, : len(lab)] = torch.tensor(lab)
        loss_mask[row, : len(msk)] = torch.tensor(msk, dtype=torch.float32)
    batch = {
        "tokens": tokens,
        "labels": labels,
        "loss_mask": loss_mask,
        "position_ids": torch.arange(length).unsqueeze(0).expand(len(rows), length).contiguous(),
        "pair_index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        "split": split,
    }
    if attention_mask:
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
        batch["attention_mask"] = (~causal).expand(len(rows), 1, length, length).contiguous()
    return batch


class PreferenceDataModule(pl.LightningDataModule):
    """Preference pairs for DPO / SimPO; see the module docstring for the batch layout."""

    def __init__(
        self,
        paths: list[str],
        tokenizer=None,
        template: str = "chatml",
        seq_length: int = 2048,
        micro_batch_size: int = 2,
        global_batch_size: int = 64,
        validation_pairs: int = 0,
        seed: int = 1234,
        num_workers: int = 0,
        pad_to_multiple_of: int = 16,
        create_attention_mask: bool = True,
        shuffle: bool = True,
    ):
        super().__init__()
        for key, value in (("data.micro_batch_size", micro_batch_size), ("data.global_batch_size", global_batch_size)):
            if value < 2 or value % 2:
                raise PreferenceConfigError(
                    f"{key}={value}: preference batches count sequences and a pair is two (chosen, rejected), "
                    "so it must be even and >= 2; an odd size would split a pair across micro batches"
                )
        self.paths = list(paths)
        self.tokenizer = tokenizer
        self.template = template
        self.seq_length = seq_length
        self.micro_batch_size = micro_batch_size
        self.global_batch_size = global_batch_size
        self.validation_pairs = validation_pairs
        self.seed = seed
        self.num_workers = num_workers
        self.pad_to_multiple_of = pad_to_multiple_of
        self.create_attention_mask = create_attention_mask
        self.shuffle = shuffle
        self.data_sampler = PairSampler(
            seq_len=seq_length,
            micro_batch_size=micro_batch_size,
            global_batch_size=global_batch_size,
            dataloader_type="single",  # in dataset order: PairDataset shuffles per epoch, and resumes exactly
        )
        self.datasets: dict[str, PairDataset] = {}
        self.init_global_step = 0

    def setup(self, stage: str = "") -> None:
        if self.datasets:
            return
        hf_tokenizer = getattr(self.tokenizer, "tokenizer", self.tokenizer)
        records = load_pairs(self.paths, hf_tokenizer, self.template)
        fits = [r for r in records if len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) - 1 <= self.seq_length]
        if len(fits) < len(records):
            log.warning("preference data: dropped %d of %d pairs longer than data.seq_length=%d",
                        len(records) - len(fits), len(records), self.seq_length)
        random.Random(self.seed).shuffle(fits)
        validation, train = fits[: self.validation_pairs], fits[self.validation_pairs :]
        pairs_per_step = self.global_batch_size // 2
        if len(train) < pairs_per_step:
            raise PreferenceConfigError(
                f"data.global_batch_size={self.global_batch_size} needs {pairs_per_step} pairs per step but only "
                f"{len(train)} training pairs fit data.seq_length={self.seq_length}"
            )
        steps = getattr(self.trainer, "max_steps", -1) if self.trainer is not None else -1
        self.datasets = {
            "train": PairDataset(train, "train", length=steps * pairs_per_step, seed=self.seed, shuffle=self.shuffle),
            "validation": PairDataset(validation, "validation", shuffle=False),
        }

    # A resumed run continues the data where it stopped: the consumed samples are saved and restored exactly
    # as NeMo's FineTuningDataModule does it (the same functions, on the same attributes).
    state_dict = FineTuningDataModule.state_dict
    load_state_dict = FineTuningDataModule.load_state_dict

    def _loader(self, split: str) -> DataLoader:
        from nemo.lightning.data import WrappedDataLoader

        if self.trainer is not None:
            self.init_global_step = self.trainer.global_step  # what state_dict counts consumed samples from
            self.data_sampler.init_global_step = self.init_global_step
        return WrappedDataLoader(
            mode="train" if split == "train" else "validation",
            dataset=self.datasets[split],
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=_Collate(split, self.pad_to_multiple_of, self.create_attention_mask),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation")

    def reference_batches(self, split: str, pairs_per_batch: int):
        """Every pair of a split once, in order, as collated batches: the reference pre-pass reads these."""
        records = self.datasets[split].records if split in self.datasets else []
        collate = _Collate(split, self.pad_to_multiple_of, self.create_attention_mask)
        for start in range(0, len(records), pairs_per_batch):
            yield collate([{"index": i, **records[i]} for i in range(start, min(start + pairs_per_batch, len(records)))])

    def pairs(self, split: str) -> int:
        """How many distinct pairs the split holds (the reference table has two rows per pair)."""
        return len(self.datasets[split].records) if split in self.datasets else 0


class _Collate:
    """Picklable collate function (data loader workers)."""

    def __init__(self, split: str, pad_to_multiple_of: int, attention_mask: bool):
        self.split, self.pad, self.attention_mask = split, pad_to_multiple_of, attention_mask

    def __call__(self, items):
        return collate_pairs(items, self.split, self.pad, self.attention_mask)
