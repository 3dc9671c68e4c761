"""Supervised fine-tuning data: normalise, render with a chat template, tokenize with answer-only loss.

Two normalised record shapes come out of ``python -m data.sft convert``; both are read by NeMo 2's own
fine-tuning datasets, so training goes through NeMo's normal path:

* ``{"input": PROMPT, "output": ANSWER}`` -- read by ``GPTSFTDataset`` (``FineTuningDataModule``), whose
  default ``prompt_template="{input} {output}"``, ``label_key="output"`` and ``answer_only_loss=True``
  train on the answer and the appended EOS only.
* ``{"messages": [{"role": "system"|"user"|"assistant", "content": TEXT}, ...]}`` -- read by
  ``GPTSFTChatDataset`` (``ChatDataModule(use_hf_tokenizer_chat_template=True)``), which masks the loss with
  the tokenizer chat template's ``{% generation %}`` markers.  Build it with :func:`chat_data_module` (or
  call :func:`install_chat_template` on the NeMo tokenizer first): NeMo silently trains on the whole
  conversation when the template has no markers, and these refuse such templates (or replace them with
  the Jinja export of one of our template files).

Inputs (``--input``, several files, globs, or a ``datasets.save_to_disk`` directory) may hold:

* prompt-response records: Dolly (``instruction``/``context``/``response``; the context is appended to
  the instruction after a blank line, and omitted when empty), Alpaca (``instruction``/``input``/``output``),
  ``input``/``output``, ``prompt``/``response``, ``question``/``answer``, or any ``--prompt-key`` /
  ``--response-key`` [/ ``--context-key``];
* chat records with ``messages``;
* OpenAssistant (oasst1) message rows (``message_id``, ``parent_id``, ``role`` prompter/assistant, ``text``,
  optional ``rank``, ``deleted``).  The rows of all inputs form trees.  By default each tree yields ONE
  conversation: from the root, repeatedly follow the best-ranked reply (lowest ``rank``; unranked replies
  last; ties by input order), because lower-ranked siblings are by the annotators' judgement worse answers
  and every extra leaf path repeats the same prompt.  ``--oasst-paths all`` yields one conversation per
  leaf instead.  A trailing prompter turn is dropped; a tree with no assistant reply yields nothing.

Message contents are stripped of surrounding whitespace; a conversation must end with an assistant turn,
and ``system`` may only be the first message.

Templates are data (``data/templates/*.json``): special tokens, a per-role prefix/suffix, the trained
roles, the end-of-turn token and the BOS string.  ``--template hf`` means the tokenizer's own Hugging Face
chat template, used through ``apply_chat_template(..., return_assistant_tokens_mask=True)``; it must have
``{% generation %}`` markers, otherwise tokenization fails rather than training on the whole conversation.

Tokenizing with a template file: the rendered segments are joined into ONE string, tokenized once (the
ids the model sees at inference, when a server renders the same template to a string), and the loss mask
is derived from the characters each token covers.  A token that straddles the boundary of a trained span
(content + end-of-turn token of an assistant turn) is an error, because its mask bit would be ambiguous;
with special tokens around every turn that never happens for well-formed templates.  This is what
"rendering is consistent with the tokenizer" means here, and the tests also check that the ids and mask
equal ``apply_chat_template`` with the Jinja export of the same template (:func:`template_to_jinja`).

Every error about the data names ``file:line`` (``dir:row N`` for saved datasets), the field and what was
expected.  ``--skip-bad-lines`` skips such records and reports how many.  Outputs are written to a
temporary name and moved into place only when complete; the same inputs give the same bytes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
HF_TEMPLATE = "hf"
CHAT_ROLES = ("system", "user", "assistant")
# Same pattern NeMo uses (nemo.collections.llm.gpt.data.utils.GENERATION_REGEX) to decide masking.
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
PROMPT_RESPONSE_KEYS = (  # (prompt, response, context) tried in this order when no keys are given
    ("instruction", "response", "context"),  # Dolly
    ("instruction", "output", "input"),  # Alpaca
    ("input", "output", None),
    ("prompt", "response", None),
    ("question", "answer", None),
)


# ----------------------------------------------------------------------------------------------- errors


class DataError(ValueError):
    """A problem with one input record; the message starts with its location (``file:line``)."""


class TemplateError(ValueError):
    """A template cannot be used with a tokenizer (missing tokens, no generation markers, ...)."""


@dataclass
class BadLinePolicy:
    """Raise on the first bad record, or (``skip=True``) count it and go on."""

    skip: bool = False
    skipped: list[str] = field(default_factory=list)

    def handle(self, error: DataError) -> None:
        if not self.skip:
            raise error
        self.skipped.append(str(error))

    def report(self) -> None:
        if self.skipped:
            print(f"skipped {len(self.skipped)} bad line(s); first: {self.skipped[0]}", file=sys.stderr)


def type_name(expected: type | tuple[type, ...]) -> str:
    names = {str: "a string", list: "a list", dict: "an object", int: "an integer", type(None): "null"}
    expected = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(names.get(t, t.__name__) for t in expected)


def require_field(record: dict, key: str, expected: type | tuple[type, ...], where: str) -> Any:
    if key not in record:
        raise DataError(f"{where}: missing field '{key}' (expected {type_name(expected)})")
    value = record[key]
    # bool is an int subclass, but a bool rank or text is certainly a mistake
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in _as_tuple(expected)):
        raise DataError(
            f"{where}: field '{key}' must be {type_name(expected)}, got {type(value).__name__} {_preview(value)}"
        )
    return value


def _as_tuple(expected):
    return expected if isinstance(expected, tuple) else (expected,)


def _preview(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------------------ input


@dataclass(frozen=True)
class SourceRecord:
    where: str  # "path:line" or "dir:row N", used in every error message
    record: dict


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Files and saved-dataset directories named by ``patterns`` (globs sorted, so runs are repeatable)."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or not all(os.path.exists(m) for m in matches):
            raise DataError(f"{pattern}: no such file, directory or matching glob")
        paths.extend(Path(m) for m in matches)
    return paths


def is_saved_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json"))


def read_jsonl(path: Path, policy: BadLinePolicy) -> Iterator[SourceRecord]:
    with open(path, encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                policy.handle(DataError(f"{where}: malformed JSON ({error.msg} at column {error.colno})"))
                continue
            if not isinstance(record, dict):
                policy.handle(DataError(f"{where}: expected a JSON object, got {type(record).__name__}"))
                continue
            yield SourceRecord(where, record)


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
    for path in expand_inputs(patterns):
        if is_saved_hf_dataset(path):
            yield from read_saved_dataset(path, split)
        elif path.is_dir():
            raise DataError(f"{path}: a directory that is not a saved Hugging Face dataset (datasets.save_to_disk)")
        else:
            yield from read_jsonl(path, policy)


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
            raise DataError(f"{turn_where}: expected an object with 'role' and 'content', got {_preview(message)}")
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


def atomic_write(path: Path | str, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write via ``write(stream)`` to a temporary name in the same directory, then ``os.replace`` it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb" if binary else "w", encoding=None if binary else "utf-8") as stream:
            write(stream)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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


# ------------------------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class RoleFormat:
    prefix: str
    suffix: str


@dataclass(frozen=True)
class ChatTemplate:
    """A chat format loaded from ``data/templates/*.json``."""

    name: str
    bos: str
    end_of_turn: str
    trained_roles: frozenset[str]
    roles: dict[str, RoleFormat]
    special_tokens: tuple[str, ...]

    @property
    def generation_prompt(self) -> str:
        return self.roles["assistant"].prefix


@dataclass(frozen=True)
class HFChatTemplate:
    """The tokenizer's own Hugging Face chat template (``--template hf``)."""

    name: str = HF_TEMPLATE


Template = ChatTemplate | HFChatTemplate


def available_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.json"))


def load_template(spec: str) -> Template:
    """``hf``, a name from ``data/templates`` (e.g. ``chatml``), or a path to a template JSON file."""
    if spec == HF_TEMPLATE:
        return HFChatTemplate()
    path = Path(spec) if spec.endswith(".json") else TEMPLATES_DIR / f"{spec}.json"
    if not path.is_file():
        raise TemplateError(f"unknown template {spec!r}: use 'hf', a template JSON file, or one of {available_templates()}")
    return parse_template(json.loads(path.read_text(encoding="utf-8")), str(path))


def parse_template(spec: dict, where: str) -> ChatTemplate:
    try:
        roles = {role: RoleFormat(fmt["prefix"], fmt["suffix"]) for role, fmt in spec["roles"].items()}
        template = ChatTemplate(
            name=spec["name"],
            bos=spec.get("bos") or "",
            end_of_turn=spec["end_of_turn"],
            trained_roles=frozenset(spec["trained_roles"]),
            roles=roles,
            special_tokens=tuple(spec.get("special_tokens", ())),
        )
    except (KeyError, TypeError) as error:
        raise TemplateError(f"{where}: malformed template, missing or invalid {error}") from error
    missing_roles = set(CHAT_ROLES) - set(roles)
    if missing_roles:
        raise TemplateError(f"{where}: template lacks roles {sorted(missing_roles)}")
    for role in template.trained_roles:
        if not roles[role].suffix.startswith(template.end_of_turn):
            raise TemplateError(f"{where}: suffix of trained role {role!r} must start with end_of_turn")
    return template


def template_to_jinja(template: ChatTemplate) -> str:
    """The template as a Hugging Face Jinja chat template with ``{% generation %}`` markers.

    Set it as ``tokenizer.chat_template`` to train with NeMo's ``ChatDataModule`` on exactly the tokens
    and mask that :func:`tokenize_conversation` produces for this template.
    """

    def literal(text: str) -> str:
        return "{{ " + json.dumps(text) + " }}" if text else ""

    branches = []
    for role in CHAT_ROLES:
        fmt = template.roles[role]
        if role in template.trained_roles:
            body = (
                literal(fmt.prefix)
                + "{% generation %}{{ message['content'] }}"
                + literal(template.end_of_turn)
                + "{% endgeneration %}"
                + literal(fmt.suffix[len(template.end_of_turn) :])
            )
        else:
            body = literal(fmt.prefix) + "{{ message['content'] }}" + literal(fmt.suffix)
        branches.append(f"{{% {'if' if not branches else 'elif'} message['role'] == '{role}' %}}{body}")
    unknown_role = "{% else %}{{ raise_exception('unsupported role: ' + message['role']) }}{% endif %}"
    return (
        literal(template.bos)
        + "{% for message in messages %}"
        + "".join(branches)
        + unknown_role
        + "{% endfor %}"
        + "{% if add_generation_prompt %}"
        + literal(template.generation_prompt)
        + "{% endif %}"
    )


def load_tokenizer(path: str | Path):
    """A Hugging Face fast tokenizer from a local directory (offsets are needed for the loss mask)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not tokenizer.is_fast:
        raise TemplateError(f"{path}: a fast (Rust) tokenizer is needed for character offsets, got a slow one")
    return tokenizer


def check_template_tokens(template: ChatTemplate, tokenizer) -> None:
    """Every special token of the template must be a single token of this tokenizer."""
    missing = [
        token for token in template.special_tokens if len(tokenizer.encode(token, add_special_tokens=False)) != 1
    ]
    if missing:
        raise TemplateError(
            f"tokenizer {tokenizer.name_or_path!r} has no single-token {missing} needed by template "
            f"{template.name!r}; choose the template that matches the model"
        )


def check_generation_markers(tokenizer) -> None:
    chat_template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    if chat_template is None:
        raise TemplateError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template; pass a template file "
            f"(--template {' / '.join(available_templates())} or a path to a template JSON)"
        )
    if not GENERATION_MARKER.search(chat_template):
        raise TemplateError(
            f"the chat template of tokenizer {tokenizer.name_or_path!r} has no {{% generation %}} markers, so the "
            "assistant tokens cannot be located and training would use the whole conversation. Pass a "
            f"template file instead (--template {' / '.join(available_templates())} or a path to a template JSON), "
            "or add {% generation %}...{% endgeneration %} around the assistant content in the tokenizer's template"
        )


# ----------------------------------------------------------------------------------------- tokenizing


@dataclass(frozen=True)
class Segment:
    text: str
    trained: bool


@dataclass(frozen=True)
class TokenizedSequence:
    input_ids: list[int]
    loss_mask: list[int]  # 1 where the token is trained (aligned with input_ids, not shifted)


def render_segments(messages: Sequence[dict], template: ChatTemplate) -> list[Segment]:
    segments = [Segment(template.bos, False)]
    for message in messages:
        fmt = template.roles[message["role"]]
        if message["role"] in template.trained_roles:
            segments += [
                Segment(fmt.prefix, False),
                Segment(message["content"] + template.end_of_turn, True),
                Segment(fmt.suffix[len(template.end_of_turn) :], False),
            ]
        else:
            segments.append(Segment(fmt.prefix + message["content"] + fmt.suffix, False))
    return [s for s in segments if s.text]


def trained_character_spans(segments: Sequence[Segment]) -> list[tuple[int, int]]:
    spans, position = [], 0
    for segment in segments:
        if segment.trained:
            spans.append((position, position + len(segment.text)))
        position += len(segment.text)
    return spans


def mask_from_offsets(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], text: str) -> list[int]:
    """1 for tokens inside a trained span; error for a token that crosses a span boundary."""
    mask, span_index = [], 0
    for start, end in offsets:
        while span_index < len(spans) and spans[span_index][1] <= start:
            span_index += 1
        if span_index == len(spans) or end <= spans[span_index][0] and start < spans[span_index][0]:
            mask.append(0)
            continue
        span_start, span_end = spans[span_index]
        if span_start <= start and end <= span_end:
            mask.append(1)
        else:
            raise TemplateError(
                f"token covering {text[start:end]!r} crosses the boundary of a trained span "
                f"({text[span_start:span_end][:40]!r}...); the tokenizer merges template text with message text"
            )
    return mask


def tokenize_conversation(messages: Sequence[dict], tokenizer, template: Template) -> TokenizedSequence:
    """Token ids and answer-only loss mask (assistant content + end-of-turn token) for one conversation."""
    if isinstance(template, HFChatTemplate):
        return tokenize_with_hf_template(messages, tokenizer)
    segments = render_segments(messages, template)
    text = "".join(s.text for s in segments)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = mask_from_offsets(encoding["offset_mapping"], trained_character_spans(segments), text)
    return TokenizedSequence(list(encoding["input_ids"]), mask)


def tokenize_with_hf_template(messages: Sequence[dict], tokenizer) -> TokenizedSequence:
    check_generation_markers(tokenizer)
    encoding = tokenizer.apply_chat_template(
        list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    mask = list(encoding["assistant_masks"])
    if not any(mask):
        raise TemplateError("the tokenizer's chat template marked no assistant tokens for this conversation")
    return TokenizedSequence(list(encoding["input_ids"]), mask)


def prepare_template(spec: str, tokenizer) -> Template:
    """Load a template and check up front that it can work with this tokenizer."""
    template = load_template(spec)
    if isinstance(template, HFChatTemplate):
        check_generation_markers(tokenizer)
    else:
        check_template_tokens(template, tokenizer)
    return template


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
    tokenizer = load_tokenizer(args.tokenizer)
    template = prepare_template(args.template, tokenizer)
    sequence = tokenize_conversation(as_messages(records[args.index]), tokenizer, template)
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
    show_parser.add_argument("--template", default="chatml", help=f"'hf' or one of {available_templates()} or a file")
    show_parser.add_argument("--index", type=int, default=0)
    show_parser.add_argument("--plain", action="store_true", help="only the [[...]] plain-text form")
    show_parser.set_defaults(run=show_example)

    jinja_parser = commands.add_parser("jinja", help="print a template file as a Jinja chat template")
    jinja_parser.add_argument("--template", required=True)
    jinja_parser.set_defaults(run=lambda args: print(template_to_jinja(load_template(args.template))))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (DataError, TemplateError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
