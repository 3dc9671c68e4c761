"""Bad input: the one error type of the data commands, the bad-line policy and field checks."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from common.errors import UserError


class DataError(UserError, ValueError):
    """Bad input or a refused request; the message starts with its location (``file:line``) where there is one
    and says what would be valid."""


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


def _as_tuple(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def type_name(expected: type | tuple[type, ...]) -> str:
    names = {str: "a string", list: "a list", dict: "an object", int: "an integer", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in _as_tuple(expected))


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, as a user who wrote the file would call it."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def preview(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def require_field(record: dict, key: str, expected: type | tuple[type, ...], where: str) -> Any:
    if key not in record:
        raise DataError(f"{where}: missing field '{key}' (expected {type_name(expected)})")
    value = record[key]
    # bool is an int subclass, but a bool rank or text is certainly a mistake
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in _as_tuple(expected)):
        raise DataError(
            f"{where}: field '{key}' must be {type_name(expected)}, got {type(value).__name__} {preview(value)}"
        )
    return value
