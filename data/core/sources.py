"""Input sources: files and globs resolved in a repeatable order, JSONL lines and saved Hugging Face
datasets read as records that carry their location (``file:line``) for every error message."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from data.core.errors import BadLinePolicy, DataError, json_type


@dataclass(frozen=True)
class SourceRecord:
    where: str  # "path:line" or "dir:row N", used in every error message
    record: dict


def expand_inputs(patterns: Sequence[str | Path], directories: bool = False) -> list[Path]:
    """Files named by ``patterns`` in the order given, each glob sorted (``**`` allowed), so runs are
    repeatable. ``directories=True`` also accepts folders (saved datasets)."""
    if not patterns:
        raise DataError("no --input given")
    paths: list[Path] = []
    for pattern in map(str, patterns):
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if directories or os.path.isfile(p))
            if not matches:
                raise DataError(f"no files match {pattern!r}")
        elif os.path.isdir(pattern) and not directories:
            raise DataError(f"{pattern} is a directory; pass its files, e.g. '{pattern}/*.jsonl'")
        elif not os.path.exists(pattern):
            raise DataError(f"{pattern}: no such file{' or directory' if directories else ''}")
        else:
            matches = [pattern]
        paths.extend(map(Path, matches))
    return paths


def json_object(line: bytes | str) -> dict:
    """One JSONL line decoded to an object; ValueError saying what is wrong otherwise."""
    try:
        record = json.loads(line)
    except UnicodeDecodeError as error:
        raise ValueError(f"not valid UTF-8 ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"malformed JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got a JSON {json_type(record)}")
    return record


def read_jsonl(path: Path, policy: BadLinePolicy) -> Iterator[SourceRecord]:
    """The objects of a JSONL file; blank lines are ignored, bad ones go to ``policy``."""
    with open(path, "rb") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield SourceRecord(f"{path}:{line_number}", json_object(line))
            except ValueError as error:
                policy.handle(DataError(f"{path}:{line_number}: {error}"))


def is_saved_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json"))


def read_saved_dataset(path: Path, split: str) -> Iterator[SourceRecord]:
    import datasets  # imported lazily: slow, and only needed for this input kind

    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise DataError(f"{path}: saved DatasetDict has no split '{split}' (splits: {sorted(dataset)})")
        dataset = dataset[split]
    for row, record in enumerate(dataset):
        yield SourceRecord(f"{path}:row {row}", dict(record))


def read_records(patterns: Sequence[str], policy: BadLinePolicy, split: str = "train") -> Iterator[SourceRecord]:
    """Every record of JSONL files, globs and ``datasets.save_to_disk`` folders, in input order."""
    for path in expand_inputs(patterns, directories=True):
        if is_saved_hf_dataset(path):
            yield from read_saved_dataset(path, split)
        elif path.is_dir():
            raise DataError(f"{path}: a directory that is not a saved Hugging Face dataset (datasets.save_to_disk)")
        else:
            yield from read_jsonl(path, policy)
