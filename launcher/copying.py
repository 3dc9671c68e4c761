"""`python launch.py copy SOURCE NEW_NAME`: a new recipe file started from an existing recipe.

The file holds the source recipe renamed, the module-level constants it reads (so `MODEL` and the
like are there to edit) and the imports those need; functions and classes of the source module that
it calls (helpers, other recipes) are imported from there, so the copy builds exactly the source's
config and no code is duplicated.
"""

import ast
import re
from pathlib import Path

from common import cli
from common.errors import UserError
from recipes import registry


def _bound_names(node: ast.stmt) -> set[str]:
    """The module-level names a top-level statement defines."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return {n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}


def _used_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


FIRST_PARTY = ("common", "launcher", "recipes", "models", "data", "training", "runtime", "conversion")


def _needed(tree: ast.Module, source_name: str) -> tuple[list[ast.stmt], set[str], list[str]]:
    """(statements to copy, the names they need, functions and classes to import from the source module)."""
    definitions = {name: node for node in tree.body for name in _bound_names(node)}
    function = definitions[source_name]
    copied, names, imported = [], set(), []
    pending = list(_used_names(function))
    while pending:
        name = pending.pop()
        node = definitions.get(name)
        if name in names or node is None or node is function:
            continue
        names.add(name)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            imported.append(name)
        elif node not in copied:
            copied.append(node)
            pending += [] if isinstance(node, (ast.Import, ast.ImportFrom)) else list(_used_names(node))
    future = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    names |= {a.name for n in future for a in n.names}
    return sorted(copied + future, key=lambda n: n.lineno) + [function], names, sorted(imported)


def _source_of(lines: list[str], node: ast.stmt) -> str:
    """The statement's text with its decorators and the comment lines right above it."""
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    return "\n".join(lines[start : node.end_lineno])


def _import_text(lines: list[str], node: ast.Import | ast.ImportFrom, names: set[str]) -> str:
    """The import as written when every name it binds is needed, else only the needed ones."""
    kept = [a for a in node.names if (a.asname or a.name).split(".")[0] in names]
    if len(kept) == len(node.names):
        return _source_of(lines, node)
    narrowed = type(node)(**{**node.__dict__, "names": kept})
    return ast.unparse(narrowed)


def _is_first_party(node: ast.Import | ast.ImportFrom) -> bool:
    module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
    return (module or "").split(".")[0] in FIRST_PARTY


def recipe_source(info: registry.RecipeInfo, new_name: str) -> str:
    """The text of the new module: the source recipe renamed, with what it uses."""
    text = info.path.read_text()
    tree, lines = ast.parse(text), text.splitlines()
    statements, names, imported = _needed(tree, info.name)
    imports = [n for n in statements if isinstance(n, (ast.Import, ast.ImportFrom))]
    third_party = [_import_text(lines, n, names) for n in imports if not _is_first_party(n)]
    first_party = [_import_text(lines, n, names) for n in imports if _is_first_party(n)]
    first_party += [f"from {info.module} import {', '.join(imported)}"] if imported else []
    constants = [_source_of(lines, n) for n in statements[:-1] if n not in imports]
    function = re.sub(rf"\b{info.name}\b", new_name, _source_of(lines, statements[-1]))
    header = f'"""{new_name}: copied from {info.name} ({info.path.name}); edit freely."""'
    sections = [header, "\n".join(third_party), "\n".join(sorted(first_party)), "\n".join(constants)]
    return "\n\n".join(s for s in sections if s) + "\n\n\n" + function + "\n"


def _check_new_name(new_name: str) -> None:
    recipes = registry.discover()
    if new_name in recipes:
        raise UserError(f"recipe '{new_name}' already exists in {recipes[new_name].path}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", new_name):
        raise UserError(f"'{new_name}' is not a valid recipe name: use lowercase letters, digits and _")
    if not any(new_name.endswith(f"_{a}") for a in registry.ALGORITHMS):
        raise UserError(f"'{new_name}' must end with the algorithm: <model>_<{'|'.join(registry.ALGORITHMS)}>")


def copy_recipe(source_name: str, new_name: str, directory: Path = registry.RECIPES_DIR) -> Path:
    """Writes `<directory>/<new_name>.py` and returns its path."""
    source = registry.find(source_name)
    _check_new_name(new_name)
    target = Path(directory) / f"{new_name}.py"
    if target.exists():
        raise UserError(f"{target} already exists")
    target.write_text(recipe_source(source, new_name))
    return target


def main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="launch.py copy", description=__doc__)
    parser.add_argument("source", help="an existing recipe")
    parser.add_argument("new_name", help="<model>_<algorithm> for the new recipe")
    args = parser.parse_args(argv)
    path = copy_recipe(args.source, args.new_name)
    print(f"wrote {path}\ncheck it: python launch.py recipe={args.new_name} --dryrun")
    return 0
