"""Preference pairs (for DPO / SimPO / ...): validate, tokenize with a chat template, write JSONL or .npy.

``python -m data.preference --input pairs.jsonl [more.jsonl 'dir/*.jsonl'] --output pairs.tok.jsonl
--tokenizer DIR --template chatml [--skip-bad-lines]``

Accepted input records (one per JSONL line, or rows of a ``datasets.save_to_disk`` directory):

* ``{"chosen": [messages], "rejected": [messages]}`` -- two conversations that share every message but
  the last (the prompt) and end with an assistant turn each;
* ``{"prompt": "text", "chosen": "text", "rejected": "text"}`` -- a single user turn and two answers;
* ``{"prompt": [messages], "chosen": ..., "rejected": ...}`` where each answer is a string or a list
  holding exactly one assistant message (the TRL "conversational" layout).

Messages are ``{"role": "system"|"user"|"assistant", "content": text}`` and are stripped of surrounding
whitespace.  A pair is rejected (``file:line`` and the field in the message; ``--skip-bad-lines`` skips
and counts) when the prompts differ, a final turn is not from the assistant, the two answers are
identical, or the prompt tokenizes differently in front of the two answers.

Output schema -- one record per pair, the same keys in the ``.jsonl`` lines and in the dicts of the
``.npy`` object array (``np.load(path, allow_pickle=True)``)::

    {
      "source": "pairs.jsonl:12",      # where the pair came from
      "prompt_ids": [int, ...],        # template-rendered prompt, ending with the assistant header
                                       # (e.g. "<|im_start|>assistant\\n"); includes BOS if the template has one
      "chosen_ids": [int, ...],        # the chosen answer: content, end-of-turn token, then any untrained
                                       # template suffix (e.g. "\\n" after <|im_end|> in ChatML)
      "chosen_loss_mask": [0|1, ...],  # same length as chosen_ids; 1 on content + end-of-turn token
      "rejected_ids": [int, ...],      # likewise for the rejected answer
      "rejected_loss_mask": [0|1, ...]
    }

The full chosen sequence is ``prompt_ids + chosen_ids`` and is exactly what ``data.sft`` tokenizes for the
conversation ``prompt + [chosen]``; likewise for rejected.  Masks are token-aligned (``mask[i]`` is about
token ``i`` itself); to score log-probabilities, shift as usual: the logit at position ``t`` predicts token
``t + 1``, so sum ``log p(ids[t + 1])`` over ``t`` with ``mask[t + 1] == 1``.  Prompt tokens are never in the
loss, including earlier assistant turns of a multi-turn prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from data.sft import (
    BadLinePolicy,
    DataError,
    SourceRecord,
    TemplateError,
    atomic_write,
    load_tokenizer,
    prepare_template,
    read_records,
    require_field,
    tokenize_conversation,
    validate_messages,
)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tokenizer = load_tokenizer(args.tokenizer)
        template = prepare_template(args.template, tokenizer)
        policy = BadLinePolicy(skip=args.skip_bad_lines)
        records = tokenize_pairs(args.input, tokenizer, template, policy, args.split)
        write_pairs(args.output, records)
        policy.report()
        print(f"wrote {len(records)} preference pairs to {args.output}")
    except (DataError, TemplateError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
