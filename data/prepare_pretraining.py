"""Tokenize JSONL documents into a Megatron indexed dataset (PREFIX_text_document.bin/.idx).

    python -m data.prepare_pretraining --input 'corpus/*.jsonl' --tokenizer models/tokenizers/tiny \\
        --output-prefix /data/pydoc --append-eod

One JSON line is one document. The output is byte-identical to Megatron-LM's tools/preprocess_data.py
with `--tokenizer-type HuggingFaceTokenizer --tokenizer-model DIR` and the same `--append-eod` choice
(documents are tokenized whole with `tokenizer(text).input_ids`, empty documents keep their place in
the document index but hold no sequence and no eod), so either tool can feed megatron-core's
IndexedDataset and NeMo's PreTrainingDataModule. Unlike that script it validates every line, reports
bad ones as `file:line: problem`, skips blank lines, and replaces its outputs atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

CHUNK_BYTES = 1 << 20  # one pool task: big enough to amortise pickling, small enough to balance workers
CHUNK_MAX_LINES = 4096
TASKS_IN_FLIGHT_PER_WORKER = 4
BAD_LINES_SHOWN = 5


class CorpusError(ValueError):
    """The inputs or the tokenizer cannot produce a corpus; the message says where and why."""


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


# ---------------------------------------------------------------------------------------------------
# inputs, tokenizer, output names


def resolve_inputs(patterns: Sequence[str]) -> list[str]:
    """Expand files and globs in the order given (each glob sorted, so runs are reproducible)."""
    if not patterns:
        raise CorpusError("no --input given")
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            raise CorpusError(f"{pattern} is a directory; pass its files, e.g. '{pattern}/*.jsonl'")
        if os.path.isfile(pattern):
            paths.append(pattern)
            continue
        if not glob.has_magic(pattern):
            raise CorpusError(f"{pattern}: no such file")
        matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not matches:
            raise CorpusError(f"no files match {pattern!r}")
        paths.extend(matches)
    return paths


def load_tokenizer(tokenizer_dir: str):
    if not os.path.isdir(tokenizer_dir):
        raise CorpusError(
            f"tokenizer folder {tokenizer_dir} does not exist (expected a local Hugging Face tokenizer folder)"
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except Exception as error:  # OSError, ValueError, KeyError... depending on what is missing
        raise CorpusError(f"cannot load a Hugging Face tokenizer from {tokenizer_dir}: {error}") from error
    # Documents are tokenized whole on purpose; silence the "longer than model_max_length" warning.
    tokenizer.model_max_length = sys.maxsize
    return tokenizer


def end_of_document_id(tokenizer, tokenizer_dir: str) -> int:
    # Megatron-LM's HuggingFaceTokenizer makes the sep token the eos when there is no eos.
    eos = tokenizer.eos_token or tokenizer.sep_token
    if eos is None:
        raise CorpusError(f"--append-eod needs an eos token, and the tokenizer in {tokenizer_dir} has none")
    return tokenizer.convert_tokens_to_ids(eos)


def token_dtype(tokenizer) -> type[np.number]:
    from megatron.core.datasets.indexed_dataset import DType

    # Megatron-LM sizes the dtype by len(tokenizer) (added tokens included), not tokenizer.vocab_size.
    return DType.optimal_dtype(len(tokenizer))


def dataset_prefix(output_prefix: str, text_key: str) -> str:
    # Megatron-LM's naming: {output_prefix}_{json key}_{level}, level "document" without sentence splitting.
    return f"{output_prefix}_{text_key}_document"


# ---------------------------------------------------------------------------------------------------
# work done in the pool: raw lines -> validated texts -> one flat token array per chunk


@dataclass(frozen=True)
class _Chunk:
    path: str
    first_line: int
    lines: list[bytes]

    @property
    def size(self) -> int:
        return sum(map(len, self.lines))


@dataclass(frozen=True)
class _EncodedChunk:
    path: str
    tokens: np.ndarray  # the documents' tokens back to back (int32; the builder casts to the output dtype)
    lengths: np.ndarray  # tokens per document; 0 for an empty document
    bad_lines: list[BadLine]
    size: int


@dataclass(frozen=True)
class _EncodeSettings:
    tokenizer_dir: str
    text_key: str
    eod_id: int | None


_worker_tokenizer = None
_worker_settings: _EncodeSettings | None = None


def _init_worker(settings: _EncodeSettings) -> None:
    global _worker_tokenizer, _worker_settings
    _worker_tokenizer = load_tokenizer(settings.tokenizer_dir)
    _worker_settings = settings


def _init_worker_process(settings: _EncodeSettings) -> None:
    # The pool is the parallelism: a Rust thread pool per worker on top would oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _init_worker(settings)


def _text_of(raw: bytes, text_key: str) -> str:
    """The document text of one JSON line; ValueError saying what is wrong otherwise."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"not valid UTF-8 ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"malformed JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(
            f"expected a JSON object with a string field {text_key!r}, got a JSON {_json_type(record)}"
        )
    if text_key not in record:
        present = ", ".join(map(repr, record)) or "none"
        raise ValueError(f"missing field {text_key!r} (fields present: {present})")
    text = record[text_key]
    if not isinstance(text, str):
        raise ValueError(f"field {text_key!r} must be a string, got a JSON {_json_type(text)}")
    return text


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _tokenize(texts: list[str], line_numbers: list[int], chunk: _Chunk, bad_lines: list[BadLine]):
    try:
        return _worker_tokenizer(texts)["input_ids"]
    except Exception:
        pass
    # Rare (e.g. a lone surrogate from a "\ud800" escape): find the offending lines one by one.
    ids = []
    for text, line in zip(texts, line_numbers):
        try:
            ids.append(_worker_tokenizer(text)["input_ids"])
        except Exception as error:
            bad_lines.append(BadLine(chunk.path, line, f"text cannot be tokenized ({error})"))
    return ids


def _encode_chunk(chunk: _Chunk) -> _EncodedChunk:
    settings = _worker_settings
    texts, line_numbers, bad_lines = [], [], []
    for line_number, raw in enumerate(chunk.lines, start=chunk.first_line):
        if not raw.strip():
            continue
        try:
            texts.append(_text_of(raw, settings.text_key))
            line_numbers.append(line_number)
        except ValueError as error:
            bad_lines.append(BadLine(chunk.path, line_number, str(error)))

    documents = _tokenize(texts, line_numbers, chunk, bad_lines)
    bad_lines.sort(key=lambda bad: bad.line)
    if settings.eod_id is not None:
        # Like Megatron-LM: an empty document gets no eod, so it stays empty.
        for ids in documents:
            if ids:
                ids.append(settings.eod_id)
    lengths = np.fromiter(map(len, documents), dtype=np.int64, count=len(documents))
    tokens = np.fromiter(itertools.chain.from_iterable(documents), dtype=np.int32, count=int(lengths.sum()))
    return _EncodedChunk(chunk.path, tokens, lengths, bad_lines, chunk.size)


# ---------------------------------------------------------------------------------------------------
# driving the pool and writing


def _read_chunks(paths: Iterable[str]) -> Iterator[_Chunk]:
    for path in paths:
        with open(path, "rb") as file:
            first_line, lines, size = 1, [], 0
            for raw in file:
                lines.append(raw)
                size += len(raw)
                if size >= CHUNK_BYTES or len(lines) >= CHUNK_MAX_LINES:
                    yield _Chunk(path, first_line, lines)
                    first_line, lines, size = first_line + len(lines), [], 0
            if lines:
                yield _Chunk(path, first_line, lines)


@contextlib.contextmanager
def _encoding(paths: list[str], settings: _EncodeSettings, workers: int) -> Iterator[Iterator[_EncodedChunk]]:
    """Encoded chunks in input order, whatever the worker count.

    The pool starts, and its first tasks are queued, on entering: the caller's slow imports then overlap
    with the workers' tokenizing.
    """
    if workers == 1:
        _init_worker(settings)
        yield map(_encode_chunk, _read_chunks(paths))
        return
    # A window of apply_async results instead of Pool.imap: imap reads the whole input ahead of the
    # workers, which holds an arbitrarily large corpus in memory.
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with context.Pool(workers, initializer=_init_worker_process, initargs=(settings,)) as pool:
        chunks = _read_chunks(paths)
        window = deque(
            pool.apply_async(_encode_chunk, (chunk,))
            for chunk in itertools.islice(chunks, workers * TASKS_IN_FLIGHT_PER_WORKER)
        )

        def in_order():
            while window:
                result = window.popleft().get()
                window.extend(pool.apply_async(_encode_chunk, (chunk,)) for chunk in itertools.islice(chunks, 1))
                yield result

        yield in_order()


@contextlib.contextmanager
def _atomic_outputs(*final_paths: str):
    """Temporary paths beside the finals, moved into place only if the block succeeds."""
    temporary = [
        os.path.join(os.path.dirname(p) or ".", f".{os.path.basename(p)}.{os.getpid()}.tmp") for p in final_paths
    ]
    try:
        yield temporary
    except BaseException:
        for path in temporary:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        raise
    # .idx last: a reader never sees a new index over an old, shorter .bin.
    for temporary_path, final_path in zip(temporary, final_paths):
        os.replace(temporary_path, final_path)


@dataclass
class _Tally:
    documents: int = 0
    empty_documents: int = 0
    tokens: int = 0
    skipped: int = 0
    first_skipped: tuple[BadLine, ...] = ()

    def skip(self, bad_lines: list[BadLine]) -> None:
        self.skipped += len(bad_lines)
        self.first_skipped = (self.first_skipped + tuple(bad_lines))[:BAD_LINES_SHOWN]


def _write_documents(builder, chunks: Iterable[_EncodedChunk], skip_bad_lines: bool, progress) -> _Tally:
    tally = _Tally()
    for chunk in chunks:
        if chunk.bad_lines and not skip_bad_lines:
            more = len(chunk.bad_lines) - 1
            also = f" (and {more} more bad line{'s' * (more > 1)} nearby)" if more else ""
            raise CorpusError(f"{chunk.bad_lines[0]}{also}; fix the input or pass --skip-bad-lines")
        tally.skip(chunk.bad_lines)
        offset = 0
        for length in chunk.lengths.tolist():
            # An empty document still gets its document-index entry, with no sequence (as Megatron-LM).
            builder.add_document(chunk.tokens[offset : offset + length], [length] if length else [])
            offset += length
        tally.documents += len(chunk.lengths)
        tally.empty_documents += int((chunk.lengths == 0).sum())
        tally.tokens += offset
        progress.update(chunk.size)
        progress.set_postfix(documents=tally.documents, tokens=tally.tokens, refresh=False)
    return tally


def _progress_bar(total_bytes: int, enabled: bool):
    from tqdm import tqdm

    # disable=None: draw only on a terminal, so logs and tests stay clean.
    return tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", disable=None if enabled else True)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
    """Tokenize JSONL files/globs into `{output_prefix}_{text_key}_document.{bin,idx}`.

    Raises CorpusError for missing/empty inputs, an unusable tokenizer, or (without skip_bad_lines) the
    first bad line; the previous outputs, if any, are then left as they were.
    """
    started = time.perf_counter()
    paths = resolve_inputs([inputs] if isinstance(inputs, str) else inputs)
    input_bytes = sum(os.path.getsize(p) for p in paths)
    if input_bytes == 0:
        raise CorpusError(f"no documents: {', '.join(paths)} {'is' if len(paths) == 1 else 'are'} empty")
    workers = workers or default_workers()
    if workers < 1:
        raise CorpusError(f"workers must be at least 1, got {workers}")

    tokenizer = load_tokenizer(tokenizer_dir)
    settings = _EncodeSettings(
        tokenizer_dir=tokenizer_dir,
        text_key=text_key,
        eod_id=end_of_document_id(tokenizer, tokenizer_dir) if append_eod else None,
    )
    prefix = dataset_prefix(output_prefix, text_key)
    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)

    with _encoding(paths, settings, workers) as encoded_chunks:
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        with _atomic_outputs(prefix + ".bin", prefix + ".idx") as (bin_path, idx_path):
            builder = IndexedDatasetBuilder(bin_path, dtype=token_dtype(tokenizer))
            try:
                with _progress_bar(input_bytes, progress) as bar:
                    tally = _write_documents(builder, encoded_chunks, skip_bad_lines, bar)
                if tally.documents == 0:
                    skipped = f" ({tally.skipped} bad lines skipped)" if tally.skipped else ""
                    raise CorpusError(f"no documents in {', '.join(paths)}{skipped}")
                builder.finalize(idx_path)
            except BaseException:
                # Close before the temporary files are removed: megatron-core may open the .bin through
                # multistorageclient, which writes elsewhere and renames into place on close.
                builder.data_file.close()
                raise

    return PreparedCorpus(
        prefix=prefix,
        documents=tally.documents,
        empty_documents=tally.empty_documents,
        tokens=tally.tokens,
        input_bytes=input_bytes,
        seconds=time.perf_counter() - started,
        skipped_lines=tally.skipped,
        first_skipped=tally.first_skipped,
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
            "  -> work/pretrain/pydoc_text_document.bin and .idx"
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_GLOB",
                        help="JSONL files or quoted globs ('dir/*.jsonl', '**' allowed); read in the order given, "
                        "each glob sorted. Blank lines are ignored.")
    parser.add_argument("--text-key", default="text", help="JSON field holding the document text (a string)")
    parser.add_argument("--tokenizer", required=True, metavar="DIR",
                        help="local Hugging Face tokenizer folder (loaded with transformers.AutoTokenizer)")
    parser.add_argument("--output-prefix", required=True, metavar="PREFIX",
                        help="writes PREFIX_<text-key>_document.bin and .idx (folders are created)")
    parser.add_argument("--append-eod", action="store_true",
                        help="append the tokenizer's eos id to each non-empty document "
                        "(off unless given, as in Megatron-LM)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="tokenizer processes")
    parser.add_argument("--skip-bad-lines", action="store_true",
                        help="skip lines that are not JSON objects with a string text field, and report them, "
                        "instead of failing on the first one")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is only drawn on a terminal anyway)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
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
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if corpus.skipped_lines:
        shown = "\n  ".join(map(str, corpus.first_skipped))
        print(f"skipped {corpus.skipped_lines} bad lines, first ones:\n  {shown}", file=sys.stderr)
    print(corpus.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
