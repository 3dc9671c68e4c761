"""Chat templates as data (``data/templates/*.json``) or the tokenizer's own (``hf``), and tokenizing a
conversation with them into ids and an answer-only loss mask."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from data.core.errors import DataError

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
HF_TEMPLATE = "hf"
CHAT_ROLES = ("system", "user", "assistant")
# Same pattern NeMo uses (nemo.collections.llm.gpt.data.utils.GENERATION_REGEX) to decide masking.
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


class TemplateError(DataError):
    """A template cannot be used with a tokenizer (missing tokens, no generation markers, ...)."""


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
    # The tokenizer's end-of-sequence token closes the last answer (and is trained): for templates without a
    # turn token of their own (plain), so that the model learns to stop.
    end_with_eos: bool = False

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
            end_with_eos=bool(spec.get("end_with_eos", False)),
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
                + ("{% if loop.last %}{{ eos_token }}{% endif %}" if template.end_with_eos else "")
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


def check_template_tokens(template: ChatTemplate, tokenizer) -> None:
    """Every special token of the template must be a single token of this tokenizer."""
    missing = [
        token for token in template.special_tokens if len(tokenizer.encode(token, add_special_tokens=False)) != 1
    ]
    if template.end_with_eos and tokenizer.eos_token is None:
        missing.append("an eos token")
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


def render_segments(messages: Sequence[dict], template: ChatTemplate, eos_token: str | None = None) -> list[Segment]:
    segments = [Segment(template.bos, False)]
    for turn, message in enumerate(messages):
        fmt = template.roles[message["role"]]
        if message["role"] in template.trained_roles:
            closing = eos_token if template.end_with_eos and turn == len(messages) - 1 else ""
            segments += [
                Segment(fmt.prefix, False),
                Segment(message["content"] + template.end_of_turn + closing, True),
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


def tokenize_conversation(
    messages: Sequence[dict], tokenizer, template: Template, last_turn_only: bool = False
) -> TokenizedSequence:
    """Token ids and answer-only loss mask (assistant content + end-of-turn token) for one conversation;
    every assistant turn is trained, or with ``last_turn_only`` the final one alone."""
    if isinstance(template, HFChatTemplate):
        sequence = tokenize_with_hf_template(messages, tokenizer)
    else:
        segments = render_segments(messages, template, tokenizer.eos_token)
        text = "".join(s.text for s in segments)
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        mask = mask_from_offsets(encoding["offset_mapping"], trained_character_spans(segments), text)
        sequence = TokenizedSequence(list(encoding["input_ids"]), mask)
    return only_last_trained_span(sequence) if last_turn_only else sequence


def only_last_trained_span(sequence: TokenizedSequence) -> TokenizedSequence:
    """The mask with every trained span but the last (the final assistant answer) set to 0."""
    mask = list(sequence.loss_mask)
    end = max(i for i, trained in enumerate(mask) if trained) + 1
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    return TokenizedSequence(sequence.input_ids, [0] * start + mask[start:end] + [0] * (len(mask) - end))


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

