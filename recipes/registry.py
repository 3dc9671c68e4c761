"""The recipe registry: the `@recipe` decorator, and discovery of every decorated function in the
recipe folders by reading their source (listing recipes costs no NeMo import; building one imports
only its module). A recipe named `<model>_<algorithm>` says both.
"""

import ast
import difflib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parent
# Folders whose recipes are discovered, in order (tests add a temporary one for copies).
SEARCH_PATH = [RECIPES_DIR]
ALGORITHMS = ("pretrain", "sft", "lora", "dpo", "dpo_lora", "simpo", "simpo_lora")


def recipe(function):
    """Marks a function returning a nemo_run.Partial as a launchable recipe."""
    function.__recipe__ = True
    return function


@dataclass(frozen=True)
class RecipeInfo:
    name: str
    module: str
    path: Path
    line: int
    docstring: str

    @property
    def description(self) -> str:
        return self.docstring.split("\n")[0]

    @property
    def algorithm(self) -> str:
        return next(a for a in sorted(ALGORITHMS, key=len, reverse=True) if self.name.endswith(f"_{a}"))

    @property
    def model(self) -> str:
        return self.name[: -len(self.algorithm) - 1]




class UnknownRecipe(UserError):
    def __init__(self, name: str, known: list[str]):
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        super().__init__(f"unknown recipe '{name}'{hint} (`python launch.py --list` shows all {len(known)})")


def is_recipe_decorator(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "recipe") or (
        isinstance(node, ast.Attribute) and node.attr == "recipe"
    )


def _recipes_in(path: Path) -> list[RecipeInfo]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(map(is_recipe_decorator, node.decorator_list)):
            found.append(RecipeInfo(node.name, f"recipes.{path.stem}", path, node.lineno, ast.get_docstring(node) or ""))
    return found


def discover() -> dict[str, RecipeInfo]:
    recipes = {}
    for path in [p for folder in SEARCH_PATH for p in sorted(Path(folder).glob("*.py"))]:
        if "@recipe" not in path.read_text():
            continue
        for info in _recipes_in(path):
            if info.name in recipes:
                raise ValueError(f"recipe '{info.name}' is defined twice: {recipes[info.name].path} and {path}")
            if not any(info.name.endswith(f"_{a}") for a in ALGORITHMS):
                raise ValueError(f"{path}:{info.line}: recipe '{info.name}' must be named <model>_<{'|'.join(ALGORITHMS)}>")
            recipes[info.name] = info
    return recipes


def find(name: str) -> RecipeInfo:
    recipes = discover()
    if name not in recipes:
        raise UnknownRecipe(name, sorted(recipes))
    return recipes[name]


def build(name: str):
    """The recipe's fresh nemo_run.Partial."""
    info = find(name)
    return getattr(_module_of(info), name)()


def _module_of(info: RecipeInfo):
    """The recipe's module: imported from the recipes package, or loaded from its file in another folder."""
    if info.path.parent == RECIPES_DIR or info.module in sys.modules:
        return importlib.import_module(info.module)
    spec = importlib.util.spec_from_file_location(info.module, info.path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[info.module] = module
    spec.loader.exec_module(module)
    return module
