"""Preference pairs: the accepted pair layouts validated into prompt + chosen + rejected, tokenized with a
chat template into ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` and their loss masks, written and read
back as JSONL or .npy (schema in data/README.md)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from data.chat_templates import TemplateError, prepare_template, tokenize_conversation
from data.core.atomic import atomic_write
from data.core.command import run_command
from data.core.errors import BadLinePolicy, DataError, require_field
from data.core.sources import SourceRecord, expand_inputs, read_records
from data.core.tokenizer import load_hf_tokenizer
from data.sft import validate_messages


@dataclass(frozen=True)
class PreferencePair:
    where: str
    prompt: list[dict]
    chosen: str
    rejected: str


# ------------------------------------------------------------------------------------------ validation


def answer_text(record: dict, key: str, where: str) -> str:
    value = require_field(record, key, (str, list), where)
    if isinstance(value, str):
        messages = validate_messages([{"role": "assistant", "content": value}], f"{where}: field '{key}'")
    else:
        messages = validate_messages(value, f"{where}: field '{key}'")
        if len(messages) != 1:
            raise DataError(f"{where}: field '{key}' must hold exactly one assistant message when 'prompt' is given")
    return messages[0]["content"]


def pair_from_prompt_record(source: SourceRecord) -> PreferencePair:
    record, where = source.record, source.where
    prompt = require_field(record, "prompt", (str, list), where)
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    prompt = validate_messages(prompt, f"{where}: field 'prompt'", must_end_with_assistant=False)
    return PreferencePair(where, prompt, answer_text(record, "chosen", where), answer_text(record, "rejected", where))


def pair_from_conversations(source: SourceRecord) -> PreferencePair:
    record, where = source.record, source.where
    chosen = validate_messages(require_field(record, "chosen", list, where), f"{where}: field 'chosen'")
    rejected = validate_messages(require_field(record, "rejected", list, where), f"{where}: field 'rejected'")
    if len(chosen) < 2 or chosen[:-1] != rejected[:-1]:
        difference = first_difference(chosen[:-1], rejected[:-1])
        raise DataError(
            f"{where}: fields 'chosen' and 'rejected' must share the prompt (every message but the last "
            f"assistant turn, at least one); {difference}"
        )
    return PreferencePair(where, chosen[:-1], chosen[-1]["content"], rejected[-1]["content"])


def first_difference(left: list[dict], right: list[dict]) -> str:
    if not left and not right:
        return "there is no prompt"
    for turn, (a, b) in enumerate(zip(left, right)):
        if a != b:
            return f"they differ at message {turn}"
    return f"prompt lengths differ ({len(left)} vs {len(right)} messages)"


def pair_from_record(source: SourceRecord) -> PreferencePair:
    pair = pair_from_prompt_record(source) if "prompt" in source.record else pair_from_conversations(source)
    if pair.chosen == pair.rejected:
        raise DataError(f"{source.where}: fields 'chosen' and 'rejected' have the same final answer")
    return pair


# ----------------------------------------------------------------------------------------- tokenizing


def split_at_final_answer(input_ids: list[int], loss_mask: list[int]) -> int:
    """Index of the first token of the last trained run: where the final assistant answer starts."""
    end = max(i for i, bit in enumerate(loss_mask) if bit) + 1
    start = end
    while start > 0 and loss_mask[start - 1]:
        start -= 1
    return start


def tokenize_pair(pair: PreferencePair, tokenizer, template) -> dict:
    sides = {}
    for side, answer in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        try:
            sequence = tokenize_conversation(pair.prompt + [{"role": "assistant", "content": answer}], tokenizer, template)
        except TemplateError as error:
            raise DataError(f"{pair.where}: field '{side}': {error}") from error
        start = split_at_final_answer(sequence.input_ids, sequence.loss_mask)
        sides[side] = (sequence.input_ids[:start], sequence.input_ids[start:], sequence.loss_mask[start:])
    if sides["chosen"][0] != sides["rejected"][0]:
        raise DataError(
            f"{pair.where}: the prompt tokenizes differently in front of 'chosen' and 'rejected' (the tokenizer "
            "merges the prompt's last characters with the answer); cannot share prompt_ids"
        )
    return {
        "source": pair.where,
        "prompt_ids": sides["chosen"][0],
        "chosen_ids": sides["chosen"][1],
        "chosen_loss_mask": sides["chosen"][2],
        "rejected_ids": sides["rejected"][1],
        "rejected_loss_mask": sides["rejected"][2],
    }


def tokenize_pairs(patterns: Sequence[str], tokenizer, template, policy: BadLinePolicy, split: str = "train") -> list[dict]:
    records = []
    for source in read_records(patterns, policy, split):
        try:
            records.append(tokenize_pair(pair_from_record(source), tokenizer, template))
        except DataError as error:
            policy.handle(error)
    if not records:
        raise DataError(f"no usable preference pairs in {', '.join(patterns)}")
    return records


# --------------------------------------------------------------------------------------------- output


def write_pairs(path: Path | str, records: Sequence[dict]) -> None:
    path = Path(path)
    if path.suffix == ".npy":
        array = np.empty(len(records), dtype=object)
        array[:] = list(records)
        atomic_write(path, lambda stream: np.save(stream, array, allow_pickle=True), binary=True)
    else:
        atomic_write(path, lambda stream: stream.writelines(json.dumps(r) + "\n" for r in records))


def read_pairs(path: Path | str) -> list[dict]:
    """Read what :func:`write_pairs` wrote (either format)."""
    path = Path(path)
    if path.suffix == ".npy":
        return list(np.load(path, allow_pickle=True))
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data.preference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", required=True, help="JSONL files, globs, or save_to_disk directories")
    parser.add_argument("--split", default="train", help="split to read from a saved DatasetDict")
    parser.add_argument("--output", required=True, help="tokenized pairs: .jsonl or .npy")
    parser.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory")
    parser.add_argument("--template", default="chatml", help="'hf', a name from data/templates, or a file")
    parser.add_argument("--skip-bad-lines", action="store_true")
    return parser


def tokenize_pair_files(args: argparse.Namespace) -> None:
    expand_inputs(args.input, directories=True)  # a missing input is named before the slow tokenizer load
    tokenizer = load_hf_tokenizer(args.tokenizer)
    template = prepare_template(args.template, tokenizer)
    policy = BadLinePolicy(skip=args.skip_bad_lines)
    records = tokenize_pairs(args.input, tokenizer, template, policy, args.split)
    write_pairs(args.output, records)
    policy.report()
    print(f"wrote {len(records)} preference pairs to {args.output}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: tokenize_pair_files(args))
