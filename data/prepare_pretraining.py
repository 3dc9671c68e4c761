"""Pretraining corpus preparation: JSONL documents (one per line) tokenized into a Megatron indexed dataset,
``PREFIX_<text key>_document.bin/.idx``, byte-identical to Megatron-LM's ``tools/preprocess_data.py`` with a
``HuggingFaceTokenizer``, with a record of the tokenizer that made it beside it.

Every line is validated before anything is tokenized, so bad input is reported in the time it takes to
read the files. Documents are then tokenized in batches by the Rust tokenizer's own threads (the
``tokenizers`` library straight from tokenizer.json when transformers would load it unchanged) while this
thread reads the next batch and writes the last one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from data.core.atomic import atomic_outputs
from data.core.command import run_command
from data.core.errors import DataError, json_type
from data.core.sources import expand_inputs, json_object
from data.core.tokenizer import load_backend_tokenizer, special_tokens, tokenizer_identity
from data.corpus_tokenizer import corpus_record, record_path
from data.indexed_dataset import IndexedDatasetWriter, token_dtype

BATCH_BYTES = 1 << 20  # one encode call: enough documents to keep every tokenizer thread busy
BATCHES_IN_FLIGHT = 2  # one being tokenized while the previous one is written
BAD_LINES_SHOWN = 5


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}"


@dataclass(frozen=True)
class PreparedCorpus:
    prefix: str  # what GPTDataset / PreTrainingDataModule take: the path without .bin/.idx
    documents: int
    empty_documents: int
    tokens: int
    input_bytes: int
    seconds: float
    skipped_lines: int
    first_skipped: tuple[BadLine, ...]

    @property
    def bin_path(self) -> str:
        return self.prefix + ".bin"

    @property
    def idx_path(self) -> str:
        return self.prefix + ".idx"

    def summary(self) -> str:
        rate = self.tokens / self.seconds if self.seconds > 0 else float("inf")
        empty = f" ({self.empty_documents} empty)" if self.empty_documents else ""
        return (
            f"prepared {self.documents} documents{empty}, {self.tokens} tokens, "
            f"{self.input_bytes / 1e6:.1f} MB in {self.seconds:.1f} s ({rate:,.0f} tokens/s) "
            f"-> {self.prefix}.{{bin,idx}}"
        )


def dataset_prefix(output_prefix: str, text_key: str) -> str:
    # Megatron-LM's naming: {output_prefix}_{json key}_{level}, level "document" without sentence splitting.
    return f"{output_prefix}_{text_key}_document"


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------
# reading and validating lines


def document_text(raw: bytes, text_key: str) -> str:
    """The document text of one JSON line; ValueError saying what is wrong otherwise."""
    record = json_object(raw)
    if text_key not in record:
        present = ", ".join(map(repr, record)) or "none"
        raise ValueError(f"missing field {text_key!r} (fields present: {present})")
    text = record[text_key]
    if not isinstance(text, str):
        raise ValueError(f"field {text_key!r} must be a string, got a JSON {json_type(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # a "\ud800" escape: JSON allows it, no tokenizer can encode it
        raise ValueError(f"field {text_key!r} holds a lone surrogate at character {error.start}") from None
    return text


def numbered_lines(paths: Sequence[Path]) -> Iterator[tuple[Path, int, bytes]]:
    """Every non-blank line with its file and line number."""
    for path in paths:
        with open(path, "rb") as stream:
            for number, raw in enumerate(stream, start=1):
                if raw.strip():
                    yield path, number, raw


@dataclass
class Scan:
    bad_lines: int = 0
    first_bad: tuple[BadLine, ...] = ()


def scan(paths: Sequence[Path], text_key: str, skip_bad_lines: bool) -> Scan:
    """Validate every line before any tokenizing: the first bad one stops the run, or all are counted."""
    result = Scan()
    for path, number, raw in numbered_lines(paths):
        try:
            document_text(raw, text_key)
        except ValueError as error:
            bad = BadLine(str(path), number, str(error))
            if not skip_bad_lines:
                raise DataError(f"{bad}; fix the input or pass --skip-bad-lines") from None
            result.bad_lines += 1
            result.first_bad = (result.first_bad + (bad,))[:BAD_LINES_SHOWN]
    return result


def text_batches(paths: Sequence[Path], text_key: str) -> Iterator[tuple[list[str], int]]:
    """The documents' texts in input order, about BATCH_BYTES of input at a time, with their input size;
    bad lines (already reported by :func:`scan`) are left out."""
    texts, size = [], 0
    for _, _, raw in numbered_lines(paths):
        try:
            texts.append(document_text(raw, text_key))
        except ValueError:
            continue
        size += len(raw)
        if size >= BATCH_BYTES:
            yield texts, size
            texts, size = [], 0
    if texts:
        yield texts, size


# ---------------------------------------------------------------------------------------------------
# tokenizing and writing


@dataclass(frozen=True)
class Encoder:
    backend: object  # tokenizers.Tokenizer
    dtype: type
    eod_id: int | None

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The documents' tokens back to back (in the output dtype) and each document's length."""
        # tokenizer(texts).input_ids as transformers computes it (special tokens added), without offsets.
        documents = [encoding.ids for encoding in self.backend.encode_batch_fast(texts)]
        if self.eod_id is not None:
            for ids in documents:
                if ids:  # like Megatron-LM: an empty document gets no eod, so it stays empty
                    ids.append(self.eod_id)
        lengths = np.fromiter(map(len, documents), dtype=np.int64, count=len(documents))
        tokens = np.fromiter(chain.from_iterable(documents), dtype=self.dtype, count=int(lengths.sum()))
        return tokens, lengths


@dataclass
class Tally:
    documents: int = 0
    empty_documents: int = 0
    tokens: int = 0
    max_token_id: int | None = None

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        self.documents += len(lengths)
        self.empty_documents += int((lengths == 0).sum())
        self.tokens += tokens.size
        if tokens.size:
            self.max_token_id = max(self.max_token_id or 0, int(tokens.max()))


def encoded_batches(encoder: Encoder, batches: Iterator[tuple[list[str], int]]):
    """(tokens, lengths, input bytes) per batch, in input order; the next batch is tokenized (in Rust,
    outside the GIL) while the caller writes this one."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool:
        in_flight = deque()
        for texts, size in batches:
            in_flight.append((pool.submit(encoder.encode, texts), size))
            if len(in_flight) >= BATCHES_IN_FLIGHT:
                future, size = in_flight.popleft()
                yield (*future.result(), size)
        while in_flight:
            future, size = in_flight.popleft()
            yield (*future.result(), size)


def end_of_document_id(backend, tokenizer_dir: str) -> int:
    # Megatron-LM's HuggingFaceTokenizer makes the sep token the eos when there is no eos.
    tokens = special_tokens(Path(tokenizer_dir))
    eos = tokens.get("eos_token") or tokens.get("sep_token")
    if eos is None or backend.token_to_id(eos) is None:
        raise DataError(f"--append-eod needs an eos token, and the tokenizer in {tokenizer_dir} has none")
    return backend.token_to_id(eos)


def progress_bar(total_bytes: int, enabled: bool):
    if not (enabled and sys.stderr.isatty()):
        return None
    from tqdm import tqdm  # only on a terminal: logs and tests stay clean

    return tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing")


def use_tokenizer_threads(workers: int) -> None:
    # The Rust tokenizer's thread pool reads this once, at its first batch in this process.
    os.environ["RAYON_NUM_THREADS"] = str(workers)
    os.environ.pop("TOKENIZERS_PARALLELISM", None)


def prepare(
    inputs: Sequence[str] | str,
    tokenizer_dir: str,
    output_prefix: str,
    text_key: str = "text",
    append_eod: bool = True,
    workers: int | None = None,
    skip_bad_lines: bool = False,
    progress: bool = False,
) -> PreparedCorpus:
    """Tokenize JSONL files/globs into ``{output_prefix}_{text_key}_document.{bin,idx}`` and its tokenizer
    record. Raises DataError for missing/empty inputs, an unusable tokenizer or (without skip_bad_lines)
    the first bad line, before writing anything; previous outputs are only ever replaced whole."""
    started = time.perf_counter()
    paths = expand_inputs([inputs] if isinstance(inputs, str) else inputs)
    input_bytes = sum(os.path.getsize(p) for p in paths)
    if input_bytes == 0:
        raise DataError(f"no documents: {', '.join(map(str, paths))} {'is' if len(paths) == 1 else 'are'} empty")
    workers = workers or default_workers()
    if workers < 1:
        raise DataError(f"workers must be at least 1, got {workers}")
    checked = scan(paths, text_key, skip_bad_lines)

    use_tokenizer_threads(workers)
    backend = load_backend_tokenizer(tokenizer_dir)
    identity = tokenizer_identity(tokenizer_dir, backend)
    encoder = Encoder(backend, token_dtype(identity.vocab_size),
                      end_of_document_id(backend, tokenizer_dir) if append_eod else None)
    prefix = dataset_prefix(output_prefix, text_key)
    tally = Tally()
    bar = progress_bar(input_bytes, progress)
    # .idx last: a reader never pairs a new index with an old, shorter .bin.
    with atomic_outputs(prefix + ".bin", record_path(prefix), prefix + ".idx") as (bin_path, record, idx_path):
        with open(bin_path, "wb") as bin_stream:
            writer = IndexedDatasetWriter(bin_stream, encoder.dtype)
            for tokens, lengths, size in encoded_batches(encoder, text_batches(paths, text_key)):
                writer.add_documents(tokens, lengths)
                tally.add(tokens, lengths)
                if bar is not None:
                    bar.update(size)
        if tally.documents == 0:
            skipped = f" ({checked.bad_lines} bad lines skipped)" if checked.bad_lines else ""
            raise DataError(f"no documents in {', '.join(map(str, paths))}{skipped}")
        record.write_text(corpus_record(identity, tally.max_token_id), encoding="utf-8")
        with open(idx_path, "wb") as idx_stream:
            writer.write_index(idx_stream)
    if bar is not None:
        bar.close()

    return PreparedCorpus(
        prefix=prefix,
        documents=tally.documents,
        empty_documents=tally.empty_documents,
        tokens=tally.tokens,
        input_bytes=input_bytes,
        seconds=time.perf_counter() - started,
        skipped_lines=checked.bad_lines,
        first_skipped=checked.first_bad,
    )


# ---------------------------------------------------------------------------------------------------
# command line


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m data.prepare_pretraining",
        description=(
            "Tokenize JSONL documents (one per line) into a Megatron indexed dataset\n"
            "PREFIX_<text-key>_document.{bin,idx}, byte-identical to Megatron-LM's tools/preprocess_data.py\n"
            "with a HuggingFaceTokenizer. Pass PREFIX_<text-key>_document as the data path of\n"
            "PreTrainingDataModule / GPTDataset."
        ),
        epilog=(
            "example:\n  python -m data.prepare_pretraining --input data/corpora/pydoc_topics.jsonl 'more/*.jsonl' \\\n"
            "      --tokenizer models/tokenizers/tiny --output-prefix work/pretrain/pydoc --append-eod\n"
            "  -> work/pretrain/pydoc_text_document.bin, .idx and .tokenizer.json"
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_GLOB",
                        help="JSONL files or quoted globs ('dir/*.jsonl', '**' allowed); read in the order given, "
                        "each glob sorted. Blank lines are ignored.")
    parser.add_argument("--text-key", default="text", help="JSON field holding the document text (a string)")
    parser.add_argument("--tokenizer", required=True, metavar="DIR",
                        help="local Hugging Face tokenizer folder (with tokenizer.json)")
    parser.add_argument("--output-prefix", required=True, metavar="PREFIX",
                        help="writes PREFIX_<text-key>_document.bin and .idx (folders are created)")
    parser.add_argument("--append-eod", action="store_true",
                        help="append the tokenizer's eos id to each non-empty document "
                        "(off unless given, as in Megatron-LM)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="tokenizer threads")
    parser.add_argument("--skip-bad-lines", action="store_true",
                        help="skip lines that are not JSON objects with a string text field, and report them, "
                        "instead of failing on the first one")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is only drawn on a terminal anyway)")
    return parser.parse_args(argv)


def prepare_from_args(args: argparse.Namespace) -> None:
    corpus = prepare(
        args.input,
        args.tokenizer,
        args.output_prefix,
        text_key=args.text_key,
        append_eod=args.append_eod,
        workers=args.workers,
        skip_bad_lines=args.skip_bad_lines,
        progress=not args.no_progress,
    )
    if corpus.skipped_lines:
        shown = "\n  ".join(map(str, corpus.first_skipped))
        print(f"skipped {corpus.skipped_lines} bad lines, first ones:\n  {shown}", file=sys.stderr)
    print(corpus.summary())


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(lambda: prepare_from_args(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
