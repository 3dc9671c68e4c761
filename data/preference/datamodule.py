"""Serves preference pairs to NeMo 2 / megatron-core training (DPO, SimPO): a LightningDataModule.

Reads raw pair files (any layout `data.preference.pairs` accepts, tokenized here with the chat template) or
files that `python -m data.preference` already tokenized (.jsonl / .npy with `prompt_ids`).

Batch layout, padded (the default) -- `micro_batch_size` and `global_batch_size` count *sequences*,
and a pair is two of them: the chosen and the rejected answer of pair i are rows 2i and 2i+1 of one micro
batch, so both batch sizes must be even (the constructor refuses odd ones, naming the key). The sampler
draws pairs, never single rows, so shuffling cannot separate a pair. Each micro batch holds::

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

Packed (`pack_pairs=True`) -- whole pairs are packed, best fit decreasing, into rows of at most
`seq_length` tokens, the chosen sequence of each pair right before its rejected one, so little compute goes
to padding and a pair never straddles two rows. A micro batch is one packed row (`micro_batch_size` must
be 1: Transformer Engine's THD attention takes one) and `global_batch_size` counts packed rows. The
same keys with M packed rows and P pairs in them, plus the sequence boundaries in NeMo's packed-SFT
convention (`get_packed_seq_params` reads them)::

    tokens, labels, loss_mask, position_ids   [M, S]   position_ids restart at 0 in every sequence
    segment_ids    [M, S]   sequence number in the micro batch (2i chosen, 2i+1 rejected of pair_index[i]);
                            -1 on the padding at the end of a row
    cu_seqlens     [M, K]   int32 start of each sequence, then the row's end (the padding is one more
                            sequence), then -1s; cu_seqlens_argmin [M, 1] the first -1, max_seqlen [M, 1]
    attention_mask [M, 1, S, S] block-diagonal causal: each sequence sees only itself (megatron's local
                            attention; with Transformer Engine the boundaries go in as THD instead)

Pairs whose two sides together exceed `seq_length` are dropped (logged), never truncated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from data.chat_templates import prepare_template
from data.core.errors import BadLinePolicy
from data.packed_attention import block_causal_mask, causal_mask
from data.preference.pairs import read_pairs, tokenize_pairs
from nemo.collections.llm.gpt.data.fine_tuning import FineTuningDataModule
from nemo.lightning.pytorch.plugins import MegatronDataSampler

log = logging.getLogger(__name__)


class PreferenceConfigError(ValueError):
    """A preference data setting that would silently misbehave; the message names the key."""


class PairSampler(MegatronDataSampler):
    """NeMo's Megatron sampler over a dataset whose items are pairs (2 sequences each) or packed rows (1)."""

    def __init__(self, *args, sequences_per_item: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.sequences_per_item = sequences_per_item

    def transform_dataloader(self, dataloader: DataLoader, consumed_samples: int = 0) -> DataLoader:
        from megatron.core import parallel_state

        from nemo.lightning.data import add_megatron_sampler

        mode = getattr(dataloader, "mode", "train")
        per_item = self.sequences_per_item
        return add_megatron_sampler(
            dataloader,
            micro_batch_size=self.micro_batch_size // per_item,
            global_batch_size=self.global_batch_size // per_item,
            consumed_samples=(self.init_consumed_samples // per_item) if mode == "train" else 0,
            dataloader_type="single",
            drop_last=True,
            dataloader_mode=mode,
            rank=parallel_state.get_data_parallel_rank(),
            world_size=parallel_state.get_data_parallel_world_size(),
        )


class PairDataset(Dataset):
    """The items of a split (pairs, or packed rows of pairs), repeated to `length` (the items a run draws):
    one pass in a fixed shuffled order per epoch, like NeMo's SFT datasets. One long Lightning epoch over
    the whole run lets a resumed run continue at exactly the item it stopped at."""

    def __init__(self, items: list[dict], split: str, length: int | None = None, seed: int = 1234,
                 shuffle: bool = True):
        self.items = items
        self.split = split
        self.length = max(length or 0, len(items))
        self.seed = seed
        self.shuffle = shuffle
        self._order: tuple[int, list[int]] = (0, list(range(len(items))))

    def __len__(self) -> int:
        return self.length

    def order(self, epoch: int) -> list[int]:
        """Epoch 0 in the given order (already shuffled once by the data module), later epochs reshuffled."""
        if self._order[0] != epoch:
            order = list(range(len(self.items)))
            if self.shuffle:
                random.Random(self.seed + epoch).shuffle(order)
            self._order = (epoch, order)
        return self._order[1]

    def __getitem__(self, index: int) -> dict:
        epoch, position = divmod(index, len(self.items))
        return self.items[self.order(epoch)[position]]


def _is_tokenized(path: Path) -> bool:
    if path.suffix == ".npy":
        return True
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                return "prompt_ids" in json.loads(line)
    return False


def load_pairs(paths: Sequence[str], hf_tokenizer, template: str) -> list[dict]:
    """Tokenized pairs (data.preference.pairs schema) from raw or pre-tokenized files."""
    records, raw = [], []
    for path in paths:
        (records.extend(read_pairs(path)) if _is_tokenized(Path(path)) else raw.append(str(path)))
    if raw:
        records.extend(tokenize_pairs(raw, hf_tokenizer, prepare_template(template, hf_tokenizer), BadLinePolicy()))
    return records


def pair_sequences(item: dict) -> list[tuple[list[int], list[int], list[int]]]:
    """(inputs, labels, loss mask) of the chosen, then the rejected sequence of a pair: the model reads
    ids[:-1] and predicts ids[1:]; the mask is label-aligned."""
    prompt = list(item["prompt_ids"])
    sequences = []
    for side in ("chosen", "rejected"):
        ids = prompt + list(item[f"{side}_ids"])
        mask = [0] * len(prompt) + list(item[f"{side}_loss_mask"])
        sequences.append((ids[:-1], ids[1:], mask[1:]))
    return sequences


def pair_tokens(item: dict) -> tuple[int, int]:
    """Model inputs of (the longer side, both sides) of a pair: what padding and packing must fit."""
    prompt = len(item["prompt_ids"])
    chosen, rejected = prompt + len(item["chosen_ids"]) - 1, prompt + len(item["rejected_ids"]) - 1
    return max(chosen, rejected), chosen + rejected


def _padded_length(longest: int, multiple: int) -> int:
    return -(-longest // multiple) * multiple


def collate_pairs(items: list[dict], split: str, pad_to_multiple_of: int = 16, attention_mask: bool = True) -> dict:
    """A padded micro batch: one sequence per row (see the module docstring)."""
    rows = [sequence for item in items for sequence in pair_sequences(item)]
    length = _padded_length(max(len(r[0]) for r in rows), pad_to_multiple_of)
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
        batch["attention_mask"] = causal_mask(length).expand(len(rows), 1, length, length).contiguous()
    return batch


def collate_packs(packs: list[dict], split: str, pad_to_multiple_of: int = 16, attention_mask: bool = True) -> dict:
    """A packed micro batch: one row per pack, its pairs' sequences back to back (see the module docstring)."""
    rows = [[sequence for item in pack["pairs"] for sequence in pair_sequences(item)] for pack in packs]
    length = _padded_length(max(sum(len(s[0]) for s in row) for row in rows), pad_to_multiple_of)
    tokens = torch.zeros(len(rows), length, dtype=torch.long)
    labels = torch.zeros(len(rows), length, dtype=torch.long)
    loss_mask = torch.zeros(len(rows), length, dtype=torch.float32)
    position_ids = torch.zeros(len(rows), length, dtype=torch.long)
    segment_ids = torch.full((len(rows), length), -1, dtype=torch.long)
    boundaries, sequence = [], 0
    for row, sequences in enumerate(rows):
        starts = [0]
        for inp, lab, msk in sequences:
            span = slice(starts[-1], starts[-1] + len(inp))
            tokens[row, span], labels[row, span] = torch.tensor(inp), torch.tensor(lab)
            loss_mask[row, span] = torch.tensor(msk, dtype=torch.float32)
            position_ids[row, span] = torch.arange(len(inp))
            segment_ids[row, span] = sequence
            sequence += 1
            starts.append(span.stop)
        if starts[-1] < length:  # the padding is a sequence of its own, as NeMo's packed SFT collates it
            position_ids[row, starts[-1] :] = torch.arange(length - starts[-1])
            starts.append(length)
        boundaries.append(starts)
    width = max(len(b) for b in boundaries) + 1  # at least one -1 per row: argmin finds the end
    cu_seqlens = torch.tensor([b + [-1] * (width - len(b)) for b in boundaries], dtype=torch.int32)
    seqlens = [max(b[i + 1] - b[i] for i in range(len(b) - 1)) for b in boundaries]
    batch = {
        "tokens": tokens,
        "labels": labels,
        "loss_mask": loss_mask,
        "position_ids": position_ids,
        "segment_ids": segment_ids,
        "cu_seqlens": cu_seqlens,
        "cu_seqlens_argmin": torch.argmin(cu_seqlens, dim=1, keepdim=True),
        "max_seqlen": torch.tensor(seqlens, dtype=torch.int32).unsqueeze(1),
        "pair_index": torch.tensor([item["index"] for pack in packs for item in pack["pairs"]], dtype=torch.long),
        "split": split,
    }
    if attention_mask:
        batch["attention_mask"] = torch.stack([block_causal_mask(b, length) for b in boundaries]).unsqueeze(1)
    return batch


def pack_pairs(items: list[dict], capacity: int) -> list[dict]:
    """Packs of whole pairs whose sequences sum to at most `capacity` model inputs (best fit decreasing)."""
    from data.packing import best_fit_decreasing

    bins = best_fit_decreasing([pair_tokens(item)[1] for item in items], capacity)
    return [{"pairs": [items[i] for i in sorted(members)]} for members in bins]


class PreferenceDataModule(pl.LightningDataModule):
    """Preference pairs for DPO / SimPO, padded or packed; see the module docstring for the batch layout."""

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
        pack_pairs: bool = False,
    ):
        super().__init__()
        for problem in batch_size_problems(micro_batch_size, global_batch_size, pack_pairs):
            raise PreferenceConfigError(problem)
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
        self.pack_pairs = pack_pairs
        self.data_sampler = PairSampler(
            seq_len=seq_length,
            micro_batch_size=micro_batch_size,
            global_batch_size=global_batch_size,
            dataloader_type="single",  # in dataset order: PairDataset shuffles per epoch, and resumes exactly
            sequences_per_item=1 if pack_pairs else 2,
        )
        self.datasets: dict[str, PairDataset] = {}
        self.split_pairs: dict[str, list[dict]] = {}
        self.init_global_step = 0

    def setup(self, stage: str = "") -> None:
        if self.datasets:
            return
        hf_tokenizer = getattr(self.tokenizer, "tokenizer", self.tokenizer)
        records = load_pairs(self.paths, hf_tokenizer, self.template)
        measure = 1 if self.pack_pairs else 0  # packed: both sides together must fit; padded: the longer one
        fits = [r for r in records if pair_tokens(r)[measure] <= self.seq_length]
        if len(fits) < len(records):
            log.warning("preference data: dropped %d of %d pairs longer than data.seq_length=%d%s",
                        len(records) - len(fits), len(records), self.seq_length,
                        " (packed: chosen + rejected)" if self.pack_pairs else "")
        random.Random(self.seed).shuffle(fits)
        self.split_pairs = {
            "train": indexed_pairs(fits[self.validation_pairs :]),
            "validation": indexed_pairs(fits[: self.validation_pairs]),
        }
        items = {split: self._packs(pairs) if self.pack_pairs else pairs for split, pairs in self.split_pairs.items()}
        train = items["train"]
        unit = "packed rows" if self.pack_pairs else "pairs"
        per_step = self.global_batch_size // self.data_sampler.sequences_per_item
        if len(train) < per_step:
            raise PreferenceConfigError(
                f"data.global_batch_size={self.global_batch_size} needs {per_step} {unit} per step but the "
                f"training pairs that fit data.seq_length={self.seq_length} make only {len(train)}"
            )
        if self.pack_pairs:
            pairs = len(self.split_pairs["train"])
            rank_zero_info(f"preference data: {pairs} training pairs packed into {len(train)} rows of up to "
                           f"{self.seq_length} tokens ({pairs / len(train):.1f} pairs per row)")
        steps = getattr(self.trainer, "max_steps", -1) if self.trainer is not None else -1
        self.datasets = {
            "train": PairDataset(train, "train", length=steps * per_step, seed=self.seed, shuffle=self.shuffle),
            "validation": PairDataset(items["validation"], "validation", shuffle=False),
        }

    def _packs(self, pairs: list[dict]) -> list[dict]:
        """Packed rows in a seeded shuffled order (packing itself sorts by length)."""
        packs = pack_pairs(pairs, self.seq_length) if pairs else []
        random.Random(self.seed).shuffle(packs)
        return packs

    # A resumed run continues the data where it stopped: the consumed samples are saved and restored exactly
    # as NeMo's FineTuningDataModule does it (the same functions, on the same attributes).
    state_dict = FineTuningDataModule.state_dict
    load_state_dict = FineTuningDataModule.load_state_dict

    def reconfigure_limit_batches(self) -> None:
        """`trainer.limit_val_batches` (an int) counts validation steps, as with NeMo's pretraining data: NeMo's
        strategy calls this at setup. Lightning counts the loader's micro batches instead, and a validation
        step that runs out of them mid-step (limit below the micro batches of one global batch) ends the
        validation with a StopIteration that Lightning swallows: nothing validated, no val_ metric logged."""
        from nemo.collections.llm.gpt.data.utils import _reconfigure_limit_batches

        self.trainer.limit_val_batches = _reconfigure_limit_batches(self.trainer.limit_val_batches, None)

    def collate(self, split: str) -> "_Collate":
        return _Collate(split, self.pad_to_multiple_of, self.create_attention_mask, self.pack_pairs)

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
            collate_fn=self.collate(split),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation")

    def reference_batches(self, split: str, pairs_per_batch: int):
        """Every pair of a split once, as collated batches laid out as in training (padded: `pairs_per_batch`
        pairs each; packed: one packed row each): the reference pre-pass reads these."""
        collate = self.collate(split)
        if self.pack_pairs:
            items = self.datasets[split].items if split in self.datasets else []
            yield from (collate([pack]) for pack in items)
            return
        pairs = self.split_pairs.get(split, [])
        for start in range(0, len(pairs), pairs_per_batch):
            yield collate(pairs[start : start + pairs_per_batch])

    def pairs(self, split: str) -> int:
        """How many distinct pairs the split holds (the reference table has two rows per pair)."""
        return len(self.split_pairs.get(split, []))

    def fingerprint(self, split: str) -> str:
        """A digest of the split's pairs in index order, tokens and loss masks: what the reference table's rows
        belong to. Packing leaves it alone (the table is keyed by pair, not by row)."""
        digest = hashlib.sha256()
        for pair in self.split_pairs.get(split, []):
            for key in PAIR_KEYS:
                values = np.asarray(pair[key], dtype=np.int64)
                digest.update(len(values).to_bytes(8, "little"))  # so [1, 2] + [3] differs from [1] + [2, 3]
                digest.update(values.tobytes())
        return digest.hexdigest()[:16]


PAIR_KEYS = ("prompt_ids", "chosen_ids", "chosen_loss_mask", "rejected_ids", "rejected_loss_mask")


def indexed_pairs(pairs: list[dict]) -> list[dict]:
    """The pairs with their position in the split: the key of their reference log-probs."""
    return [{"index": i, **pair} for i, pair in enumerate(pairs)]


def batch_size_problems(micro_batch_size: int, global_batch_size: int, packed: bool):
    """What is wrong with these batch sizes for preference data, one message per problem, naming the key."""
    if packed:
        if micro_batch_size != 1:
            yield (f"data.pack_pairs=True needs data.micro_batch_size=1 (a packed row already holds many pairs, and "
                   f"Transformer Engine's THD attention takes one row), not {micro_batch_size}; "
                   "data.global_batch_size then counts packed rows")
        return
    for key, value in (("data.micro_batch_size", micro_batch_size), ("data.global_batch_size", global_batch_size)):
        if value < 2 or value % 2:
            yield (f"{key}={value}: preference batches count sequences and a pair is two (chosen, rejected), "
                   "so it must be even and >= 2; an odd size would split a pair across micro batches "
                   "(or pack pairs: data.pack_pairs=True)")


class _Collate:
    """Picklable collate function (data loader workers)."""

    def __init__(self, split: str, pad_to_multiple_of: int, attention_mask: bool, packed: bool = False):
        self.split, self.pad, self.attention_mask, self.packed = split, pad_to_multiple_of, attention_mask, packed

    def __call__(self, items):
        collate = collate_packs if self.packed else collate_pairs
        return collate(items, self.split, self.pad, self.attention_mask)
