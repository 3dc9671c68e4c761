"""What an SFT or LoRA recipe trains on, record by record.

A dataset folder from ``python -m data.sft convert`` holds one of two record forms: prompt/response
(``{"input", "output"}``) or chat (``{"messages": [...]}``). :func:`detect_form` reads every record before
launch and refuses a folder whose records fit neither form or mix both, naming the file and line.
:class:`TrainingFormat` turns a record of either form into the conversation, token ids and loss mask the
model trains on; the recipe's data module (:mod:`data.sft_datamodule`), ``python -m data.sft show`` and
``python -m data.packing`` all go through it, so what is shown and packed is what is trained.

No NeMo, torch or tokenizer import: the launcher calls :func:`detect_form` before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data.chat_templates import Template, TemplateError, TokenizedSequence, tokenize_conversation
from data.core.errors import BadLinePolicy, DataError, require_field
from data.core.sources import read_records
from data.sft import messages_from_record

PROMPT_RESPONSE = "prompt_response"
CHAT = "chat"
AUTO = "auto"
RECORD_FORMS = (PROMPT_RESPONSE, CHAT)
SPLIT_FILES = ("training.jsonl", "validation.jsonl")
EXPECTED_FIELDS = {
    PROMPT_RESPONSE: '{"input": PROMPT, "output": ANSWER}',
    CHAT: '{"messages": [{"role": "system"|"user"|"assistant", "content": TEXT}, ...]}',
}
CONVERT = "python -m data.sft convert --output-dir DIR (add --output-format messages for one chat form)"


def expected_forms() -> str:
    return " or ".join(f"{form} {fields}" for form, fields in EXPECTED_FIELDS.items())


def form_of(record: dict, where: str) -> str:
    """The form of one record, checked as the training dataset will read it."""
    if "messages" in record:
        messages_from_record(record, where)
        return CHAT
    if "input" in record and "output" in record:
        for key in ("input", "output"):
            require_field(record, key, str, where)
        return PROMPT_RESPONSE
    raise DataError(f"{where}: a record of neither SFT form (fields {sorted(record)}); expected {expected_forms()}; "
                    f"make the folder with {CONVERT}")


def detect_form(dataset_root: str | Path, expected: str = AUTO) -> str:
    """The one record form of every record in the folder's training and validation files.

    ``expected`` (``auto`` or a form) is the recipe's ``data.record_form``; a record of the other form, a
    record of neither, or a folder mixing both is a DataError naming the file and line.
    """
    if expected not in (AUTO, *RECORD_FORMS):
        raise DataError(f"data.record_form={expected!r}: expected one of {[AUTO, *RECORD_FORMS]}")
    files = [str(path) for name in SPLIT_FILES if (path := Path(dataset_root) / name).is_file()]
    first: tuple[str, str] | None = None if expected == AUTO else (expected, "data.record_form")
    for source in read_records(files, BadLinePolicy()):
        form = form_of(source.record, source.where)
        if first is None:
            first = (form, source.where)
        elif form != first[0]:
            raise DataError(f"{source.where}: a {form} record, but {first[1]} is {first[0]}: the records of one "
                            f"dataset must all be {EXPECTED_FIELDS[first[0]]}; make the folder with {CONVERT}")
    if first is None:
        raise DataError(f"{dataset_root}: no records in {' or '.join(SPLIT_FILES)}; make the folder with {CONVERT}")
    return first[0]


@dataclass(frozen=True)
class TrainingFormat:
    """How a record becomes training tokens: a template (``plain``, ``chatml``, ``llama3_instruct``, ``hf``
    or a file), an optional system prompt for prompt/response records, and which answers are trained."""

    template: str = "plain"
    system_prompt: str | None = None
    last_turn_only: bool = False

    def conversation(self, record: dict, where: str) -> list[dict]:
        """A chat record's messages; a prompt/response record as one turn, after the system prompt if any."""
        if form_of(record, where) == CHAT:
            return messages_from_record(record, where)
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": record["input"]}, {"role": "assistant", "content": record["output"]}]

    def sequence(self, record: dict, tokenizer, template: Template, where: str) -> TokenizedSequence:
        """Token ids and loss mask of one record (``template``: this format's, prepared for ``tokenizer``)."""
        try:
            return tokenize_conversation(self.conversation(record, where), tokenizer, template, self.last_turn_only)
        except TemplateError as error:
            raise DataError(f"{where}: {error}") from error
