"""Dotted `key.path=value` overrides, type-checked by nemo_run's own CLI parser.

nemo_run's errors dump the whole config; here each failure names the key, the value, and what
would be valid (the keys at that level and the closest one, or the expected type).
"""

import ast
import dataclasses
import difflib
import inspect
import re
import types
import typing

import fiddle as fdl
import yaml
from fiddle import history
from nemo_run.cli.cli_parser import CLIException, ParseError, parse_cli_args, parse_factory, parse_value

from common.errors import UserError
from recipes import factories  # noqa: F401  registers object-valued choices with nemo_run


class OverrideError(UserError):
    pass


def parameter_names(buildable: fdl.Buildable) -> list[str]:
    """Every argument the buildable's target accepts, set or not."""
    target = fdl.get_callable(buildable)
    if dataclasses.is_dataclass(target):
        return [f.name for f in dataclasses.fields(target) if f.init]
    names = list(buildable.__signature_info__.parameters)
    return [n for n in names if inspect.signature(target).parameters[n].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _step(node, name: str, walked: str):
    if isinstance(node, (list, tuple)):
        if not name.isdigit() or int(name) >= len(node):
            raise OverrideError(f"{walked}: index '{name}' out of range (the list has {len(node)} items)")
        return node[int(name)]
    if not isinstance(node, fdl.Buildable):
        kind = type(node).__name__
        raise OverrideError(f"{walked} is a plain value ({kind} {node!r}); it has no key '{name}'")
    valid = parameter_names(node)
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f"; did you mean '{_join(walked, close[0])}'?" if close else ""
        target = fdl.get_callable(node).__name__
        raise OverrideError(
            f"unknown key '{_join(walked, name)}'{hint}\n  valid keys under '{walked or '<recipe>'}' ({target}): {', '.join(sorted(valid))}"
        )
    return getattr(node, name)


def _join(walked: str, name: str) -> str:
    return f"{walked}.{name}" if walked else name


def check_key(config: fdl.Buildable, key: str) -> None:
    node, walked = config, ""
    for name in key.split("."):
        node = _step(node, name, walked)
        walked = _join(walked, name)


def split_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise OverrideError(f"'{text}' is not an override; write key.path=value")
    return key.strip(), value.strip()


def apply(config: fdl.Buildable, overrides: list[str]) -> fdl.Buildable:
    """Applies each override in order, checking the key first so the message can be precise."""
    for text in overrides:
        key, value = split_override(text)
        check_key(config, key)
        with history.custom_location(lambda: history.Location("command line", 0, text)):
            _apply_one(config, key, value)
    return config


def _annotation(config: fdl.Buildable, key: str):
    parent = _parent(config, key)
    if not isinstance(parent, fdl.Buildable):
        return None
    try:
        parameters = inspect.signature(fdl.get_callable(parent), eval_str=True).parameters
    except Exception:  # unresolvable forward references: let nemo_run decide
        return None
    parameter = parameters.get(key.rsplit(".", 1)[-1])
    return None if parameter is None else parameter.annotation


def _union_members(annotation) -> tuple:
    """The members of a real union; Optional[X] is left to nemo_run's parser, which handles it."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return ()
    members = typing.get_args(annotation)
    return members if len([m for m in members if m is not type(None)]) > 1 else ()


def _literal(value: str):
    """A Python literal (1e-4, [1, 2], None) or else YAML (true, [a, b], plain words)."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return yaml.safe_load(value)


def _check_union_value(key: str, value: str, parsed, members: tuple) -> None:
    origins = tuple(typing.get_origin(m) or m for m in members)
    allowed = tuple(o for o in origins if isinstance(o, type))
    if parsed is None or not allowed or isinstance(parsed, allowed):
        return
    names = " | ".join(getattr(m, "__name__", str(m)) for m in members)
    raise OverrideError(f"{key}: '{value}' is not a valid {names}")


SCALARS = (bool, int, float, str)

FACTORY_CALL = re.compile(r"^[A-Za-z_]\w*(\(.*\))?$")


def _factory_value(config: fdl.Buildable, key: str, value: str):
    """`log.wandb=wandb(project=x)`: a factory registered with nemo_run for that argument, or None."""
    parent = _parent(config, key)
    if not FACTORY_CALL.match(value) or not isinstance(parent, fdl.Buildable) or value in ("None", "True", "False"):
        return None
    try:
        return parse_factory(fdl.get_callable(parent), key.rsplit(".", 1)[-1], _annotation(config, key), value)
    except Exception:  # not a registered factory: the value is parsed as a plain value instead
        return None


def _apply_one(config: fdl.Buildable, key: str, value: str) -> None:
    built = _factory_value(config, key, value)
    if built is not None:
        _set(config, key, built)
        return
    if isinstance(_parent(config, key), list):
        # An element (data.paths.0): no annotation to check against, and nemo_run's parser only
        # addresses attributes (it logs an error before giving up).
        _set(config, key, _literal(value))
        return
    annotation = _annotation(config, key)
    if typing.get_origin(annotation) in (list, tuple) or annotation in (list, tuple):
        # nemo_run's parser cannot read list[str]; a literal [a, b] can.
        parsed = _literal(value)
        if not isinstance(parsed, (list, tuple)):
            raise OverrideError(f"{key}: '{value}' is not a list; write {key}=[{value}]")
        _set(config, key, list(parsed))
        return
    members = _union_members(annotation)
    if members:
        # nemo_run's parser takes the first union member that accepts the text ('2' becomes str for
        # `list | str | int`); a YAML literal keeps 2 an int and [a, b] a list.
        parsed = _literal(value)
        _check_union_value(key, value, parsed, members)
        _set(config, key, parsed)
        return
    if annotation in SCALARS:
        # nemo_run resolves string annotations (modules with `from __future__ import annotations`) only
        # through TYPE_CHECKING imports, and gives up on 'bool'; its value parser takes the resolved type.
        try:
            _set(config, key, parse_value(value, annotation))
        except ParseError:
            raise OverrideError(f"{key}: '{value}' is not a valid {annotation.__name__}") from None
        return
    try:
        parse_cli_args(config, [f"{key}={value}"])
    except ParseError as error:
        raise OverrideError(f"{key}: '{value}' is not a valid {_expected_type(error)}") from None
    except CLIException:
        # The parser gives up on union annotations (e.g. `Path | List`): take a YAML literal.
        _set(config, key, _literal(value))


def _parent(config: fdl.Buildable, key: str):
    node = config
    for name in key.split(".")[:-1]:
        node = node[int(name)] if isinstance(node, list) else getattr(node, name)
    return node


def _set(config: fdl.Buildable, key: str, value) -> None:
    parent, leaf = _parent(config, key), key.rsplit(".", 1)[-1]
    if isinstance(parent, list):
        parent[int(leaf)] = value
    else:
        setattr(parent, leaf, value)


def _expected_type(error: ParseError) -> str:
    # nemo_run wraps the parse failure: the outer error's reason holds the inner context.
    expected = error.reason.get("expected_type") if isinstance(error.reason, dict) else error.expected_type
    if expected is None or isinstance(expected, str):
        return "value"
    return getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
