"""One launch from a recipe name and overrides: build, override, fit to the machine, validate, then
explain, diff, print (dry run) or run it through a nemo_run executor."""

from dataclasses import dataclass, field

import fiddle as fdl
import nemo_run as run

from recipes import overrides, registry, resolve, validation
from recipes.errors import UserError
from runtime import entry, executors, machine


@dataclass
class Prepared:
    name: str
    config: run.Partial
    machine_changes: list[str] = field(default_factory=list)


def prepare(name: str, override_args: list[str], fit_to_machine: bool = True) -> Prepared:
    config = registry.build(name)
    overrides.apply(config, override_args)
    changes = machine.adapt(config) if fit_to_machine else []
    validation.validate(config)
    return Prepared(name, config, changes)


def _parent_and_leaf(config, key: str):
    overrides.check_key(config, key)
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
        node = node[int(name)] if isinstance(node, (list, tuple)) else getattr(node, name)
    return node, leaf


def _where(entry) -> str:
    location = entry.location
    if location.filename == "command line":
        return f"command line ({location.function_name})"
    path = resolve._leaf(location.filename)
    return f"{path}:{location.line_number} ({location.function_name})"


def explain(prepared: Prepared, key: str) -> str:
    """The value of `key` and every place that set it, newest first."""
    parent, leaf = _parent_and_leaf(prepared.config, key)
    value = resolve.resolved(getattr(parent, leaf)) if isinstance(parent, fdl.Buildable) else parent[int(leaf)]
    lines = [f"{key} = {value!r}"]
    history = parent.__argument_history__[leaf] if isinstance(parent, fdl.Buildable) else []
    setters = [h for h in history if h.kind.name == "UPDATE"]
    for position, setter in enumerate(reversed(setters)):
        label = "set at" if position == 0 else "which overrode"
        lines.append(f"  {label} {_where(setter)}: {resolve.resolved(setter.new_value)!r}")
    if not setters:
        target = resolve._name_of(fdl.get_callable(parent))
        lines.append(f"  never set by a recipe: the default of {target}")
    return "\n".join(lines)


def diff(a: Prepared, b: Prepared) -> str:
    left = resolve.flatten(resolve.resolved(a.config))
    right = resolve.flatten(resolve.resolved(b.config))
    rows = []
    for key in sorted(left.keys() | right.keys()):
        if left.get(key, "<absent>") != right.get(key, "<absent>"):
            rows.append(f"{key}: {left.get(key, '<absent>')!r} -> {right.get(key, '<absent>')!r}")
    header = f"--- {a.name}\n+++ {b.name}\n{len(rows)} fields differ"
    return "\n".join([header, *rows])


def task(prepared: Prepared) -> run.Partial:
    """What the executor runs: the recipe behind the machine preparation of runtime.entry."""
    return run.Partial(entry.train, recipe=prepared.config)


def dryrun(prepared: Prepared) -> str:
    executor = executors.for_recipe(prepared.config)
    parts = [f"# recipe: {prepared.name}", resolve.to_yaml(prepared.config).rstrip()]
    if prepared.machine_changes:
        parts.append("# fitted to this machine:\n" + "\n".join(f"#   {c}" for c in prepared.machine_changes))
    parts.append("# launch command:\n" + executors.describe(executor, prepared.name))
    return "\n".join(parts)


def launch(prepared: Prepared) -> int:
    executor = executors.for_recipe(prepared.config)
    executors.check_can_run(prepared.config)
    executors.launch(task(prepared), executor, prepared.name)
    return 0


__all__ = ["Prepared", "prepare", "explain", "diff", "dryrun", "launch", "UserError"]
