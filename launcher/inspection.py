"""Reading a prepared launch (launcher.session.Prepared): `--explain KEY` (a value and every place
that set it) and `--diff OTHER` (the fields two resolved configs differ in)."""

import fiddle as fdl

from launcher import epoch, overrides, resolve
from recipes.blocks import ONE_EPOCH
from runtime import checkpoints


def _parent_and_leaf(config, key: str):
    overrides.check_key(config, key)
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
        node = node[int(name)] if isinstance(node, (list, tuple)) else getattr(node, name)
    return node, leaf


def _where(setter) -> str:
    location = setter.location
    if location.filename == "command line":
        return f"command line ({location.function_name})"
    path = resolve.leaf(location.filename)
    return f"{path}:{location.line_number} ({location.function_name})"


def _meaning(key: str, value) -> str:
    """What a value that is a convention rather than a number means, for --explain."""
    if key == "trainer.max_steps" and value == ONE_EPOCH:
        return f"  ({epoch.COUNTED_AT_LAUNCH})"
    if key == checkpoints.RESTORE_KEY:
        return f"  ({checkpoints.restore_status(value)})"
    return ""


def explain(prepared, key: str) -> str:
    """The value of `key` and every place that set it, newest first."""
    parent, leaf = _parent_and_leaf(prepared.config, key)
    value = resolve.resolved(getattr(parent, leaf)) if isinstance(parent, fdl.Buildable) else parent[int(leaf)]
    lines = [f"{key} = {value!r}" + _meaning(key, value)]
    history = parent.__argument_history__[leaf] if isinstance(parent, fdl.Buildable) else []
    setters = [h for h in history if h.kind.name == "NEW_VALUE"]
    for position, setter in enumerate(reversed(setters)):
        label = "set at" if position == 0 else "which overrode"
        lines.append(f"  {label} {_where(setter)}: {resolve.resolved(setter.new_value)!r}")
    if not setters:
        target = resolve.qualified_name(fdl.get_callable(parent))
        lines.append(f"  never set by a recipe: the default of {target}")
    return "\n".join(lines)


def diff(a, b) -> str:
    left = resolve.flatten(resolve.resolved(a.config))
    right = resolve.flatten(resolve.resolved(b.config))
    rows = []
    for key in sorted(left.keys() | right.keys()):
        if left.get(key, "<absent>") != right.get(key, "<absent>"):
            rows.append(f"{key}: {left.get(key, '<absent>')!r} -> {right.get(key, '<absent>')!r}")
    header = f"--- {a.name}\n+++ {b.name}\n{len(rows)} fields differ"
    return "\n".join([header, *rows])
