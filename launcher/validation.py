"""Checks a whole recipe config before anything expensive starts: the rule registry and the view rules read.

Each rule (registered with `@rule` by a module of launcher/rules/) reads the values the run will use,
class defaults included, and yields one message per problem, naming the dotted paths involved.
"""

import importlib
import pkgutil
from dataclasses import dataclass

import fiddle as fdl

from common.errors import UserError
from launcher.overrides import parameter_names

RULES = []


def rule(check):
    """Registers `check(get: View) -> Iterator[str]` as a validation rule."""
    RULES.append(check)
    return check


class ConfigInvalid(UserError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


class UnknownConfigPath(AttributeError):
    """A rule read a path that its config does not have: a misspelling would silently disable the rule."""


def _field_names(node) -> set[str]:
    return set(parameter_names(node)) if isinstance(node, fdl.Buildable) else set(vars(node))


@dataclass
class View:
    """Reads dotted paths from a fiddle config, the way rules need them.

    `get(path)` is strict: a name its parent's class lacks raises UnknownConfigPath. A parent that is
    set to None (no peft, no fp8 plugin) reads as `default`: an option that is off. `get.optional(path)`
    also reads fields that only some config classes have (packed SFT specs) as `default` when absent.
    """

    config: object

    def __call__(self, path: str, default=None):
        return self._read(path, default, absent_ok=False)

    def optional(self, path: str, default=None):
        return self._read(path, default, absent_ok=True)

    def exists(self, path: str) -> bool:
        """True when every name on the path is a field of its parent (a None parent ends the walk)."""
        try:
            self._read(path, None, absent_ok=False)
        except UnknownConfigPath:
            return False
        return True

    def _read(self, path: str, default, absent_ok: bool):
        node = self.config
        for name in path.split("."):
            if node is None:
                return default
            if name not in _field_names(node):
                if absent_ok:
                    return default
                raise UnknownConfigPath(f"{path}: {type(node).__name__} has no field '{name}'")
            node = getattr(node, name)
        return default if node is None else node


def _load_rule_modules() -> None:
    """Imports every module of launcher/rules/ once, so each registers its rules."""
    from launcher import rules

    for module in pkgutil.iter_modules(rules.__path__):
        importlib.import_module(f"{rules.__name__}.{module.name}")


def problems(config) -> list[str]:
    _load_rule_modules()
    get = View(config)
    return [message for check in RULES for message in check(get)]


def validate(config) -> None:
    found = problems(config)
    if found:
        raise ConfigInvalid(found)
