"""The fully resolved view of a recipe: every argument the run will use, class defaults included.

nemo_run's YAML shows only explicitly set values; reviewers need the rest too (a changed NeMo default
must show up in a diff), so each buildable is expanded over its target's whole signature.
"""

import dataclasses
import enum
import inspect
from pathlib import Path

import fiddle as fdl
import yaml

from launcher.overrides import parameter_names
from models.catalog import REPO_ROOT

REPO_MARK = "<repo>"


def qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def leaf(value):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (str, Path)):
        return str(value).replace(str(REPO_ROOT), REPO_MARK)
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if inspect.isclass(value) or inspect.isfunction(value) or inspect.isbuiltin(value):
        return qualified_name(value)
    text = repr(value)
    return text.replace(str(REPO_ROOT), REPO_MARK)


def _argument(buildable: fdl.Buildable, name: str):
    try:
        return getattr(buildable, name)
    except AttributeError:
        return "<required>"
    except ValueError:  # fiddle will not run a dataclass default_factory for us
        field = {f.name: f for f in dataclasses.fields(fdl.get_callable(buildable))}[name]
        return field.default_factory()


def resolved(value):
    """Nested plain data (dicts, lists, scalars) for a config value."""
    if isinstance(value, fdl.Buildable):
        out = {"_target_": qualified_name(fdl.get_callable(value))}
        if isinstance(value, fdl.Partial):
            out["_partial_"] = True
        for name in parameter_names(value):
            out[name] = resolved(_argument(value, name))
        return out
    if isinstance(value, (list, tuple)):
        return [resolved(v) for v in value]
    if isinstance(value, dict):
        return {str(k): resolved(v) for k, v in value.items()}
    return leaf(value)


def flatten(tree, prefix: str = "") -> dict:
    """{'trainer.strategy.tensor_model_parallel_size': 1, ...}"""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list) and tree:
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    flat = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def to_yaml(config) -> str:
    return yaml.safe_dump(resolved(config), sort_keys=False, width=120)
