"""`python launch.py copy SOURCE NEW_NAME`: start a new recipe from an existing one.

Writes recipes/NEW_NAME.py with the source module's imports and constants and the source recipe
renamed, so the new recipe is registered and valid at once; edit it from there.
"""

import argparse
import ast
import re
from pathlib import Path

from recipes import registry
from recipes.errors import UserError


def _header(source: str, tree: ast.Module) -> str:
    """Everything before the module's first function: imports and constants the recipe may use."""
    first_function = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    start = first_function.decorator_list[0].lineno if first_function.decorator_list else first_function.lineno
    return "\n".join(source.splitlines()[: start - 1]).rstrip() + "\n"


def _function_source(source: str, tree: ast.Module, name: str) -> str:
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    lines = source.splitlines()
    return "\n".join(lines[node.decorator_list[0].lineno - 1 : node.end_lineno]) + "\n"


def copy_recipe(source_name: str, new_name: str) -> Path:
    """Writes the new recipe file and returns its path."""
    recipes = registry.discover()
    source = registry.find(source_name)
    if new_name in recipes:
        raise UserError(f"recipe '{new_name}' already exists in {recipes[new_name].path}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", new_name):
        raise UserError(f"'{new_name}' is not a valid recipe name: use lowercase letters, digits and _")
    if not any(new_name.endswith(f"_{a}") for a in registry.ALGORITHMS):
        raise UserError(f"'{new_name}' must end with the algorithm: <model>_<{'|'.join(registry.ALGORITHMS)}>")
    target = registry.RECIPES_DIR / f"{new_name}.py"
    if target.exists():
        raise UserError(f"{target} already exists")
    text = source.path.read_text()
    tree = ast.parse(text)
    function = _function_source(text, tree, source_name)
    function = re.sub(rf"\b{source_name}\b", new_name, function)
    header = f'"""{new_name}: copied from {source_name} ({source.path.name}); edit freely."""\n'
    body = _header(text, tree)
    body = body.split('"""', 2)[-1].lstrip("\n") if body.lstrip().startswith('"""') else body
    target.write_text(header + "\n" + body + "\n\n" + function)
    return target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="launch.py copy", description=__doc__)
    parser.add_argument("source", help="an existing recipe")
    parser.add_argument("new_name", help="<model>_<algorithm> for the new recipe")
    args = parser.parse_args(argv)
    path = copy_recipe(args.source, args.new_name)
    print(f"wrote {path}\ncheck it: python launch.py recipe={args.new_name} --dryrun")
    return 0
