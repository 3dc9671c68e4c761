"""Supervised fine-tuning data: the record shapes NeMo 2's fine-tuning datasets read, normalised from
prompt-response, chat and OpenAssistant inputs, and the chat data module that trains on them.

Two normalised shapes: ``{"input": PROMPT, "output": ANSWER}`` (``GPTSFTDataset``, i.e.
``FineTuningDataModule``) and ``{"messages": [{"role": "system"|"user"|"assistant", "content": TEXT}, ...]}``
(``GPTSFTChatDataset``, i.e. ``ChatDataModule(use_hf_tokenizer_chat_template=True)``, built here by
:func:`chat_data_module` so that a template without ``{% generation %}`` markers is refused instead of
silently training on the whole conversation). OpenAssistant trees become one conversation per tree,
following the best-ranked reply at each step (or one per leaf).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from data.chat_templates import (
    CHAT_ROLES,
    HF_TEMPLATE,
    ChatTemplate,
    TokenizedSequence,
    available_templates,
    load_template,
    prepare_template,
    template_to_jinja,
    tokenize_conversation,
)
from data.core.atomic import atomic_write
from data.core.command import run_command
from data.core.errors import BadLinePolicy, DataError, preview, require_field
from data.core.sources import SourceRecord, read_records
from data.core.tokenizer import load_hf_tokenizer

PROMPT_RESPONSE_KEYS = (  # (prompt, response, context) tried in this order when no keys are given
    ("instruction", "response", "context"),  # Dolly
    ("instruction", "output", "input"),  # Alpaca
    ("input", "output", None),
    ("prompt", "response", None),
    ("question", "answer", None),
)


# ---------------------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class KeyChoice:
    prompt: str | None = None
    response: str | None = None
    context: str | None = None


def prompt_response_keys(record: dict, keys: KeyChoice, where: str) -> tuple[str, str, str | None]:
    if keys.prompt or keys.response:
        return keys.prompt or "instruction", keys.response or "response", keys.context
    for prompt, response, context in PROMPT_RESPONSE_KEYS:
        if prompt in record and response in record:
            return prompt, response, context
    known = ", ".join(f"{p}/{r}" for p, r, _ in PROMPT_RESPONSE_KEYS)
    raise DataError(
        f"{where}: unrecognised record (fields {sorted(record)}); expected 'messages', oasst 'message_id' rows, "
        f"or prompt/response fields ({known}; or pass --prompt-key/--response-key)"
    )


def non_empty_text(record: dict, key: str, where: str) -> str:
    text = require_field(record, key, str, where).strip()
    if not text:
        raise DataError(f"{where}: field '{key}' is empty (expected non-empty text)")
    return text


def prompt_response_from_record(source: SourceRecord, keys: KeyChoice) -> dict:
    record, where = source.record, source.where
    prompt_key, response_key, context_key = prompt_response_keys(record, keys, where)
    prompt = non_empty_text(record, prompt_key, where)
    response = non_empty_text(record, response_key, where)
    if context_key and record.get(context_key) is not None:
        context = require_field(record, context_key, str, where).strip()
        if context:
            prompt = f"{prompt}\n\n{context}"
    return {"input": prompt, "output": response}


def messages_from_record(record: dict, where: str, key: str = "messages") -> list[dict]:
    messages = require_field(record, key, list, where)
    return validate_messages(messages, f"{where}: field '{key}'")


def validate_messages(messages: list, where: str, must_end_with_assistant: bool = True) -> list[dict]:
    if not messages:
        raise DataError(f"{where}: empty conversation (expected a list of messages)")
    clean = []
    for turn, message in enumerate(messages):
        turn_where = f"{where}[{turn}]"
        if not isinstance(message, dict):
            raise DataError(f"{turn_where}: expected an object with 'role' and 'content', got {preview(message)}")
        role = require_field(message, "role", str, turn_where)
        if role not in CHAT_ROLES:
            raise DataError(f"{turn_where}: field 'role' must be one of {list(CHAT_ROLES)}, got {role!r}")
        if role == "system" and turn != 0:
            raise DataError(f"{turn_where}: a system message may only be the first message")
        clean.append({"role": role, "content": non_empty_text(message, "content", turn_where)})
    if must_end_with_assistant and clean[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be from the assistant (got {clean[-1]['role']!r})")
    return clean


# oasst1 trees


@dataclass(frozen=True)
class OasstMessage:
    message_id: str
    parent_id: str | None
    role: str  # user / assistant
    text: str
    rank: int | None
    order: int  # position in the input, the last tie-breaker
    where: str


def oasst_message_from_record(source: SourceRecord, order: int) -> OasstMessage | None:
    record, where = source.record, source.where
    if record.get("deleted") is True:
        return None
    role = require_field(record, "role", str, where)
    if role not in ("prompter", "assistant"):
        raise DataError(f"{where}: field 'role' must be 'prompter' or 'assistant', got {role!r}")
    rank = record.get("rank")
    if rank is not None:
        rank = require_field(record, "rank", int, where)
    return OasstMessage(
        message_id=require_field(record, "message_id", str, where),
        parent_id=require_field(record, "parent_id", (str, type(None)), where),
        role="user" if role == "prompter" else "assistant",
        text=non_empty_text(record, "text", where),
        rank=rank,
        order=order,
        where=where,
    )


def oasst_conversations(messages: list[OasstMessage], paths: str, policy: BadLinePolicy) -> list[dict]:
    """Flatten oasst trees: one conversation per tree (``best``) or per leaf (``all``)."""
    by_id = {m.message_id: m for m in messages}
    children: dict[str, list[OasstMessage]] = defaultdict(list)
    roots = []
    for message in messages:
        if message.parent_id is None:
            roots.append(message)
        elif message.parent_id in by_id:
            children[message.parent_id].append(message)
        else:
            policy.handle(DataError(f"{message.where}: field 'parent_id' names unknown message {message.parent_id!r}"))

    def best_reply(replies: list[OasstMessage]) -> OasstMessage:
        return min(replies, key=lambda m: (m.rank is None, m.rank or 0, m.order))

    def leaf_paths(node: OasstMessage) -> Iterator[list[OasstMessage]]:
        replies = children.get(node.message_id)
        if not replies:
            yield [node]
        elif paths == "best":
            yield [node, *next(leaf_paths(best_reply(replies)))]
        else:
            for reply in sorted(replies, key=lambda m: m.order):
                for tail in leaf_paths(reply):
                    yield [node, *tail]

    conversations = []
    for root in roots:
        for path in leaf_paths(root):
            while path and path[-1].role != "assistant":
                path = path[:-1]
            if path:
                conversations.append({"messages": [{"role": m.role, "content": m.text} for m in path]})
    return conversations


@dataclass(frozen=True)
class NormaliseOptions:
    keys: KeyChoice = KeyChoice()
    oasst_paths: str = "best"
    output_format: str = "auto"  # auto | input-output | messages
    split: str = "train"


def record_kind(record: dict, keys: KeyChoice) -> str:
    if keys.prompt or keys.response:
        return "prompt-response"
    if "messages" in record:
        return "messages"
    if "message_id" in record:
        return "oasst"
    return "prompt-response"


def normalise(patterns: Sequence[str], options: NormaliseOptions, policy: BadLinePolicy) -> list[dict]:
    """Read every input and return normalised records (all ``input``/``output`` or all ``messages``)."""
    records: list[dict] = []
    oasst_rows: list[OasstMessage] = []
    for order, source in enumerate(read_records(patterns, policy, options.split)):
        try:
            kind = record_kind(source.record, options.keys)
            if kind == "oasst":
                message = oasst_message_from_record(source, order)
                if message is not None:
                    oasst_rows.append(message)
            elif kind == "messages":
                records.append({"messages": messages_from_record(source.record, source.where)})
            else:
                records.append(prompt_response_from_record(source, options.keys))
        except DataError as error:
            policy.handle(error)
    records.extend(oasst_conversations(oasst_rows, options.oasst_paths, policy))
    if not records:
        raise DataError(f"no usable records in {', '.join(patterns)}")
    return unify_format(records, options.output_format)


def unify_format(records: list[dict], output_format: str) -> list[dict]:
    all_prompt_response = all("input" in r for r in records)
    if output_format == "input-output" or (output_format == "auto" and all_prompt_response):
        if not all_prompt_response:
            raise DataError("--output-format input-output needs prompt-response inputs only (chat records present)")
        return records
    return [{"messages": as_messages(r)} for r in records]


def as_messages(record: dict) -> list[dict]:
    if "messages" in record:
        return record["messages"]
    return [{"role": "user", "content": record["input"]}, {"role": "assistant", "content": record["output"]}]


# ---------------------------------------------------------------------------------------------- output


def write_jsonl(path: Path | str, records: Iterable[dict]) -> None:
    records = list(records)

    def write(stream):
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")

    atomic_write(path, write)
    remove_stale_nemo_index(Path(path))


def remove_stale_nemo_index(jsonl_path: Path) -> None:
    # NeMo's JSONL memmap reader caches line offsets in FILE.idx.{npy,info} and never checks that they
    # still match the file, so an index left from an earlier run would silently read the wrong lines.
    for suffix in (".idx.npy", ".idx.info"):
        Path(str(jsonl_path) + suffix).unlink(missing_ok=True)


def split_validation(records: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    """Every k-th record (k = round(1/fraction)) goes to validation; deterministic and order-preserving."""
    if fraction <= 0 or len(records) < 2:
        return records, []
    every = max(2, round(1 / fraction))
    validation_indices = set(range(every - 1, len(records), every)) or {len(records) - 1}
    training = [r for i, r in enumerate(records) if i not in validation_indices]
    validation = [r for i, r in enumerate(records) if i in validation_indices]
    return training, validation


def install_chat_template(nemo_tokenizer, template_spec: str = HF_TEMPLATE) -> None:
    """Make a NeMo ``AutoTokenizer`` safe for ``ChatDataModule(use_hf_tokenizer_chat_template=True)``.

    ``hf`` keeps the tokenizer's own template but fails unless it has ``{% generation %}`` markers (NeMo
    would otherwise train on the whole conversation); a template name/file replaces it with our template's
    Jinja export.
    """
    hf_tokenizer = nemo_tokenizer.tokenizer
    template = prepare_template(template_spec, hf_tokenizer)
    if isinstance(template, ChatTemplate):
        hf_tokenizer.chat_template = template_to_jinja(template)


def chat_data_module(chat_template: str = HF_TEMPLATE, **chat_data_module_kwargs):
    """NeMo's ``ChatDataModule`` with :func:`install_chat_template` applied to its tokenizer first.

    A plain function of strings and a tokenizer, so a fiddle/nemo_run recipe can configure it like the
    data module itself; ``use_hf_tokenizer_chat_template`` is always on.
    """
    from nemo.collections.llm.gpt.data.chat import ChatDataModule

    install_chat_template(chat_data_module_kwargs["tokenizer"], chat_template)
    return ChatDataModule(use_hf_tokenizer_chat_template=True, **chat_data_module_kwargs)


# ---------------------------------------------------------------------------------------------- show


def mask_groups(input_ids: Sequence[int], loss_mask: Sequence[int]) -> list[tuple[list[int], bool]]:
    groups: list[tuple[list[int], bool]] = []
    for token, trained in zip(input_ids, loss_mask):
        if groups and groups[-1][1] == bool(trained):
            groups[-1][0].append(token)
        else:
            groups.append(([token], bool(trained)))
    return groups


def decode_groups(sequence: TokenizedSequence, tokenizer) -> list[tuple[str, bool]]:
    return [
        (tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False), trained)
        for ids, trained in mask_groups(sequence.input_ids, sequence.loss_mask)
    ]


def plain_masked_text(groups: Sequence[tuple[str, bool]]) -> str:
    """Trained spans wrapped in ``[[...]]``."""
    return "".join(f"[[{text}]]" if trained else text for text, trained in groups)


def show_example(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.text import Text

    records = normalise(args.input, options_from_args(args), BadLinePolicy(skip=args.skip_bad_lines))
    if not 0 <= args.index < len(records):
        raise DataError(f"--index {args.index} out of range: {len(records)} record(s)")
    tokenizer = load_hf_tokenizer(args.tokenizer)
    template = prepare_template(args.template, tokenizer)
    # The recipe's data module tokenizes through the same TrainingFormat: what is shown is what is trained.
    from data.sft_records import TrainingFormat

    training_format = TrainingFormat(args.template, args.system_prompt, args.last_turn_only)
    sequence = training_format.sequence(records[args.index], tokenizer, template, f"record {args.index}")
    groups = decode_groups(sequence, tokenizer)
    console = Console(highlight=False)
    console.print(
        f"record {args.index}: {len(sequence.input_ids)} tokens, {sum(sequence.loss_mask)} trained "
        f"(template {template.name})",
        style="bold",
    )
    if not args.plain:
        styled = Text()
        for text, trained in groups:
            styled.append(text, style="bold black on green" if trained else "dim")
        console.print(styled)
        console.print("--- plain (trained spans in [[...]]) ---", style="bold")
    print(plain_masked_text(groups))


# ------------------------------------------------------------------------------------------------- CLI


def options_from_args(args: argparse.Namespace) -> NormaliseOptions:
    return NormaliseOptions(
        keys=KeyChoice(args.prompt_key, args.response_key, args.context_key),
        oasst_paths=args.oasst_paths,
        output_format=getattr(args, "output_format", "auto"),
        split=args.split,
    )


def convert(args: argparse.Namespace) -> None:
    policy = BadLinePolicy(skip=args.skip_bad_lines)
    records = normalise(args.input, options_from_args(args), policy)
    policy.report()
    if args.output:
        write_jsonl(args.output, records)
        print(f"wrote {len(records)} records to {args.output}")
        return
    training, validation = split_validation(records, args.val_fraction)
    output_dir = Path(args.output_dir)
    write_jsonl(output_dir / "training.jsonl", training)
    if validation:
        write_jsonl(output_dir / "validation.jsonl", validation)
    print(f"wrote {len(training)} training and {len(validation)} validation records to {output_dir}")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, help="JSONL files, globs, or save_to_disk directories")
    parser.add_argument("--split", default="train", help="split to read from a saved DatasetDict")
    parser.add_argument("--prompt-key", help="field holding the prompt (default: detect Dolly/Alpaca/...)")
    parser.add_argument("--response-key", help="field holding the response")
    parser.add_argument("--context-key", help="optional field appended to the prompt after a blank line")
    parser.add_argument("--oasst-paths", choices=("best", "all"), default="best")
    parser.add_argument("--skip-bad-lines", action="store_true", help="skip malformed records and report them")


def add_training_format_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of data.sft_records.TrainingFormat, named like the recipe's data.* overrides."""
    parser.add_argument("--template", default="plain",
                        help=f"data.template: 'hf' or one of {available_templates()} or a template JSON file")
    parser.add_argument("--system-prompt", help="data.system_prompt: a system message before each prompt/response record")
    parser.add_argument("--last-turn-only", action="store_true", help="data.last_turn_only: train only the final answer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data.sft", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    convert_parser = commands.add_parser("convert", help="normalise inputs to NeMo fine-tuning JSONL")
    add_input_arguments(convert_parser)
    destination = convert_parser.add_mutually_exclusive_group(required=True)
    destination.add_argument("--output", help="one normalised JSONL file")
    destination.add_argument("--output-dir", help="write training.jsonl + validation.jsonl (a NeMo dataset_root)")
    convert_parser.add_argument("--val-fraction", type=float, default=0.05)
    convert_parser.add_argument("--output-format", choices=("auto", "input-output", "messages"), default="auto")
    convert_parser.set_defaults(run=convert)

    show_parser = commands.add_parser("show", help="print one example with its trained tokens made visible")
    add_input_arguments(show_parser)
    show_parser.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory")
    add_training_format_arguments(show_parser)
    show_parser.add_argument("--index", type=int, default=0)
    show_parser.add_argument("--plain", action="store_true", help="only the [[...]] plain-text form")
    show_parser.set_defaults(run=show_example)

    jinja_parser = commands.add_parser("jinja", help="print a template file as a Jinja chat template")
    jinja_parser.add_argument("--template", required=True)
    jinja_parser.set_defaults(run=lambda args: print(template_to_jinja(load_template(args.template))))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
