"""Pack tokenized SFT conversations into fixed-size bins for NeMo's packed-sequence training.

Reads normalised SFT JSONL (``messages`` or ``input``/``output`` records, :mod:`data.sft`), tokenizes each
record with answer-only loss (:func:`data.chat_templates.tokenize_conversation`), packs, and writes exactly what NeMo 2.7's
own ``prepare_packed_sequence_data`` writes, so ``FineTuningDataModule`` trains on it unchanged:

* ``training_{N}.npy`` / ``validation_{N}.npy``: a pickled object array of dicts, one per bin, read by
  ``GPTSFTPackedDataset``::

      {"input_ids": [...], "loss_mask": [...], "seq_start_id": [0, s1, s2, ...]}

  ``input_ids`` is the concatenation of the bin's sequences; ``seq_start_id`` the start of each.
  ``loss_mask`` is label-aligned like NeMo's ``fill_packing_strategy`` writes it: per sequence,
  ``loss_mask[i]`` says whether token ``i + 1`` is trained (the token-aligned mask rolled left by one,
  0 at the sequence's last position).
* ``{N}_metadata.jsonl``: a JSON list with one dict per packed file (``dataset_max_seqlen``,
  ``max_samples_per_bin``, ``packing_factor``, ``packing_efficiency``, ``pack_size``,
  ``min_packed_seqlen``), needed for ``pad_cu_seqlens`` (CUDA graphs).

Bin capacity counts what the model sees: a sequence of L stored tokens gives L - 1 inputs (labels are
the inputs shifted by one), so a bin holds sequences whose (L - 1) sum to at most N, as in NeMo.  With
``--context-parallel-size`` CP > 1 every sequence is padded with EOS (loss 0) until L - 1 is a multiple of
2 x CP, which THD attention with context parallelism requires of every packed sub-sequence (the same
padding Megatron-Bridge applies with ``pad_seq_to_mult``).

Packing is best-fit decreasing: sequences sorted longest first, each placed in the open bin with the
least room that still fits it.  Open bins are kept by remaining room in a sorted list of distinct room
values (at most N + 1 of them) searched with bisect, so the whole run is O(n log n) -- NeMo's own
``first_fit`` rescans every bin for every sequence, which is quadratic.  No sequence is ever split or
dropped: one longer than the bin is an error naming its line, or is cut to fit with ``--truncate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from bisect import bisect_left, insort
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from data.chat_templates import TokenizedSequence, prepare_template
from data.core.atomic import atomic_outputs
from data.core.command import run_command
from data.core.errors import BadLinePolicy, DataError
from data.core.sources import expand_inputs, read_records
from data.core.tokenizer import load_hf_tokenizer
from data.sft import KeyChoice, add_training_format_arguments, prompt_response_from_record
from data.sft_records import TrainingFormat


@dataclass(frozen=True)
class LocatedSequence:
    where: str  # file:line of the record it came from
    sequence: TokenizedSequence
    real_tokens: int  # model inputs (L - 1) before any context-parallel padding


# ------------------------------------------------------------------------------------------- packing


def best_fit_decreasing(costs: Sequence[int], capacity: int) -> list[list[int]]:
    """Group the indices of ``costs`` into bins whose costs sum to at most ``capacity``."""
    oversized = [i for i, cost in enumerate(costs) if cost > capacity]
    if oversized:
        raise ValueError(f"item {oversized[0]} has cost {costs[oversized[0]]} > capacity {capacity}")
    bins: list[list[int]] = []
    bins_by_room: dict[int, list[int]] = {}  # room left -> ids of open bins with that room
    rooms: list[int] = []  # sorted distinct keys of bins_by_room
    # reverse=True keeps equal costs in input order (sort stability), so the result is deterministic
    for item in sorted(range(len(costs)), key=costs.__getitem__, reverse=True):
        cost = costs[item]
        position = bisect_left(rooms, cost)
        if position == len(rooms):
            bin_id, room = len(bins), capacity
            bins.append([])
        else:
            room = rooms[position]
            bin_id = bins_by_room[room].pop()
            if not bins_by_room[room]:
                del bins_by_room[room]
                rooms.pop(position)
        bins[bin_id].append(item)
        room -= cost
        if room not in bins_by_room:
            bins_by_room[room] = []
            insort(rooms, room)
        bins_by_room[room].append(bin_id)
    return bins


def ceil_to_multiple(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def pad_for_context_parallel(sequence: TokenizedSequence, multiple: int, pad_id: int) -> TokenizedSequence:
    """Pad so that the model-input length (L - 1) is a multiple of ``multiple``; pads are never trained."""
    padding = ceil_to_multiple(len(sequence.input_ids) - 1, multiple) - (len(sequence.input_ids) - 1)
    return TokenizedSequence(sequence.input_ids + [pad_id] * padding, sequence.loss_mask + [0] * padding)


def fit_to_pack_size(
    sequence: TokenizedSequence, pack_size: int, multiple: int, truncate: bool, where: str
) -> TokenizedSequence:
    limit = pack_size // multiple * multiple  # longest model-input length that still pads to a multiple
    inputs = len(sequence.input_ids) - 1
    if inputs <= limit:
        return sequence
    if not truncate:
        raise DataError(
            f"{where}: sequence has {inputs + 1} tokens ({inputs} model inputs), more than pack size {limit}"
            " allows; raise --pack-size or pass --truncate"
        )
    return TokenizedSequence(sequence.input_ids[: limit + 1], sequence.loss_mask[: limit + 1])


def label_aligned(loss_mask: Sequence[int]) -> list[int]:
    # GPTSFTPackedDataset expects the mask of the *label* at each position (see fill_packing_strategy).
    return list(loss_mask[1:]) + [0]


def packed_bin(sequences: Sequence[TokenizedSequence]) -> dict:
    input_ids, loss_mask, starts = [], [], []
    for sequence in sequences:
        starts.append(len(input_ids))
        input_ids.extend(sequence.input_ids)
        loss_mask.extend(label_aligned(sequence.loss_mask))
    return {"input_ids": input_ids, "loss_mask": loss_mask, "seq_start_id": starts}


@dataclass(frozen=True)
class PackResult:
    bins: list[dict]
    metadata: dict
    summary: str


def pack(sequences: Sequence[LocatedSequence], pack_size: int) -> PackResult:
    if not sequences:
        raise DataError("nothing to pack: no sequences")
    costs = [len(s.sequence.input_ids) - 1 for s in sequences]
    assignments = best_fit_decreasing(costs, pack_size)
    bins = [packed_bin([sequences[i].sequence for i in members]) for members in assignments]
    bin_costs = [sum(costs[i] for i in members) for members in assignments]
    real = sum(s.real_tokens for s in sequences)
    metadata = {  # same keys and rounding as nemo.utils.sequence_packing_utils.create_packing_strategy
        "dataset_max_seqlen": max(costs),
        "max_samples_per_bin": max(len(members) for members in assignments),
        "packing_factor": round(len(sequences) / len(assignments), 2),
        "packing_efficiency": round(sum(bin_costs) / len(assignments) / pack_size * 100, 2),
        "pack_size": pack_size,
        "min_packed_seqlen": min(bin_costs),
    }
    summary = (
        f"packed {len(sequences)} sequences into {len(assignments)} bins, "
        f"{100 * real / (len(assignments) * pack_size):.1f}% of tokens are real"
    )
    return PackResult(bins, metadata, summary)


# -------------------------------------------------------------------------------------------- input


def tokenize_file(
    path: str,
    tokenizer,
    template,
    pack_size: int,
    context_parallel_size: int,
    truncate: bool,
    policy: BadLinePolicy,
    training_format: TrainingFormat = TrainingFormat(),
) -> tuple[list[LocatedSequence], int]:
    """Tokenized, CP-padded sequences of one normalised JSONL file, and how many were truncated.

    Each record is tokenized as the recipe's data module does it (``training_format``: system prompt,
    trained turns; ``template`` is its template, prepared for ``tokenizer``)."""
    multiple = 2 * context_parallel_size if context_parallel_size > 1 else 1
    sequences, truncated = [], 0
    for source in read_records([path], policy):
        try:
            record = source.record
            if "messages" not in record:  # any prompt/response layout data.sft convert reads
                record = prompt_response_from_record(source, KeyChoice())
            tokenized = training_format.sequence(record, tokenizer, template, source.where)
            fitted = fit_to_pack_size(tokenized, pack_size, multiple, truncate, source.where)
        except DataError as error:
            policy.handle(error)
            continue
        truncated += fitted is not tokenized
        padded = pad_for_context_parallel(fitted, multiple, tokenizer.eos_token_id) if multiple > 1 else fitted
        sequences.append(LocatedSequence(source.where, padded, len(fitted.input_ids) - 1))
    if not sequences:
        raise DataError(f"{path}: no records to pack")
    return sequences, truncated


# ------------------------------------------------------------------------------------------- output


def write_packed(stream, bins: Sequence[dict]) -> None:
    array = np.empty(len(bins), dtype=object)
    array[:] = list(bins)
    np.save(stream, array, allow_pickle=True)


def save_outputs(paths: dict[str, Path], bins_per_split: dict[str, Sequence[dict]], metadata: Sequence[dict]) -> None:
    """Every split's bins and the metadata, moved into place together once all are written (metadata last):
    a run killed or failing before the end leaves the previous outputs, never a new training file beside an
    old validation file."""
    finals = [paths[split] for split in bins_per_split] + [paths["metadata"]]
    with atomic_outputs(*finals) as temporary:
        for temporary_path, bins in zip(temporary, bins_per_split.values()):
            with open(temporary_path, "wb") as stream:
                write_packed(stream, bins)
        with open(temporary[-1], "w", encoding="utf-8") as stream:
            json.dump(list(metadata), stream)


def packed_paths(output_dir: Path | str, pack_size: int) -> dict[str, Path]:
    """The files this module writes, named as NeMo names its own packed files."""
    output_dir = Path(output_dir)
    return {
        "training": output_dir / f"training_{pack_size}.npy",
        "validation": output_dir / f"validation_{pack_size}.npy",
        "metadata": output_dir / f"{pack_size}_metadata.jsonl",
    }


def run(args: argparse.Namespace) -> None:
    if args.pack_size < 2:
        raise DataError("--pack-size must be at least 2")
    if args.context_parallel_size < 1:
        raise DataError("--context-parallel-size must be at least 1")
    splits = [("training", args.train)] + ([("validation", args.validation)] if args.validation else [])
    expand_inputs([path for _, path in splits])  # a missing input is named before the slow tokenizer load
    tokenizer = load_hf_tokenizer(args.tokenizer)
    template = prepare_template(args.template, tokenizer)
    paths = packed_paths(args.output_dir, args.pack_size)
    bins_per_split, metadata = {}, []
    for split, path in splits:
        policy = BadLinePolicy(skip=args.skip_bad_lines)
        sequences, truncated = tokenize_file(
            path, tokenizer, template, args.pack_size, args.context_parallel_size, args.truncate, policy,
            TrainingFormat(args.template, args.system_prompt, args.last_turn_only),
        )
        result = pack(sequences, args.pack_size)
        bins_per_split[split] = result.bins
        metadata.append(result.metadata)
        policy.report()
        notes = f" ({truncated} truncated)" if truncated else ""
        print(f"{split}: {result.summary}{notes} -> {paths[split]}")
    save_outputs(paths, bins_per_split, metadata)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data.packing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="normalised SFT JSONL (python -m data.sft convert)")
    parser.add_argument("--validation", help="normalised SFT JSONL for validation")
    parser.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory")
    add_training_format_arguments(parser)
    parser.add_argument("--pack-size", type=int, required=True, help="tokens per bin (PackedSequenceSpecs size)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--context-parallel-size", type=int, default=1)
    parser.add_argument("--truncate", action="store_true", help="cut sequences longer than a bin instead of failing")
    parser.add_argument("--skip-bad-lines", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
