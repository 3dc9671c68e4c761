"""Which tokenizer made a pretraining corpus: the small JSON record written beside ``PREFIX.bin/.idx``
(``PREFIX.tokenizer.json``) and :func:`check_corpus_fits`, which a launcher calls before training on a corpus.

Pure Python and numpy: no NeMo, torch or tokenizer library is imported, so the check costs a launch nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from data.core.tokenizer import TokenizerIdentity, fingerprint
from data.indexed_dataset import largest_token_id

PREPARE_COMMAND = "python -m data.prepare_pretraining"


def record_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.tokenizer.json")


def corpus_record(identity: TokenizerIdentity, max_token_id: int | None) -> str:
    """The record's text: the tokenizer's identity and the largest token id written."""
    return json.dumps({**identity.as_json(), "max_token_id": max_token_id}, indent=2) + "\n"


def read_record(prefix: str | Path) -> dict | None:
    path = record_path(prefix)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _same_tokenizer(record: dict, tokenizer: str) -> bool:
    # Compare contents where the run's tokenizer is a local folder (wherever either folder lies), else names.
    if os.path.isdir(tokenizer) and record.get("fingerprint", "unknown") != "unknown":
        return fingerprint(tokenizer) == record["fingerprint"]
    return os.path.normpath(record.get("tokenizer", "")) == os.path.normpath(tokenizer)


def check_corpus_fits(prefix: str | Path, tokenizer_identity: str | Path, vocab_size: int) -> list[str]:
    """Problems training on corpus ``prefix`` (``PREFIX.bin/.idx``) with the tokenizer ``tokenizer_identity``
    (its folder or name) and a model vocabulary of ``vocab_size``; empty when it fits.

    With a record (written by data.prepare_pretraining) the tokenizers are compared and the recorded largest
    id is checked; without one (Megatron-LM's own tool) the largest id in the .bin is. A missing corpus is
    not reported here (the missing-data check names it).
    """
    prefix, tokenizer = os.fspath(prefix), os.fspath(tokenizer_identity)
    if not (os.path.isfile(prefix + ".bin") and os.path.isfile(prefix + ".idx")):
        return []
    fix = f"re-run {PREPARE_COMMAND} --tokenizer {tokenizer} on its input"
    record = read_record(prefix)
    if record is None:
        largest = largest_token_id(prefix)
        made_by = "made by a tool that records no tokenizer (e.g. Megatron-LM's preprocess_data.py)"
        if largest is not None and largest >= vocab_size:
            return [f"corpus {prefix} ({made_by}) holds token id {largest}, but tokenizer {tokenizer} has a "
                    f"vocabulary of {vocab_size}: it was made with another tokenizer; {fix}"]
        return []
    made_with = f"tokenizer {record['tokenizer']} (vocabulary {record['vocab_size']})"
    problems = []
    if not _same_tokenizer(record, tokenizer):
        problems.append(f"corpus {prefix} was prepared with {made_with}, but this run uses tokenizer "
                        f"{tokenizer} (vocabulary {vocab_size}); {fix}")
    largest = record.get("max_token_id")
    if largest is not None and largest >= vocab_size:
        problems.append(f"corpus {prefix} (prepared with {made_with}) holds token id {largest}, beyond the "
                        f"vocabulary of {vocab_size} of tokenizer {tokenizer}; {fix}")
    return problems
