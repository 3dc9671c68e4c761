"""Imports go one way, down the layers README.md's layout table describes: a test, so a wrong-way
import (function-level ones included) fails here rather than in a review."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# top-level package (or launch.py) -> the project packages it may import; from README.md's layout table.
ALLOWED = {
    "launch": {"launcher", "recipes", "common"},
    "launcher": {"recipes", "models", "data", "training", "evaluation", "planning", "runtime", "conversion", "common"},
    "evaluation": {"conversion", "common"},
    "planning": {"recipes", "models", "common"},
    "recipes": {"models", "data", "training", "runtime", "common"},
    "models": {"common"},
    "data": {"models", "common"},
    "training": {"conversion", "runtime", "common"},
    "conversion": {"models", "runtime", "common"},
    "runtime": {"common"},
    "common": set(),
}
PROJECT = set(ALLOWED) | {"bench", "tests"}  # bench/ and tests/ may import anything


def _package_of(path: Path) -> str:
    relative = path.relative_to(REPO)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported_packages(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return {(name, line) for name, line in found if name in PROJECT}


def test_imports_go_down_the_layers():
    wrong = []
    sources = [REPO / "launch.py"] + [path for package in ALLOWED for path in (REPO / package).rglob("*.py")]
    for path in sorted(sources):
        package = _package_of(path)
        for imported, line in _imported_packages(path):
            if imported != package and imported not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {package} imports {imported}")
    assert wrong == [], "imports against the layers (README.md, Layout):\n" + "\n".join(sorted(wrong))


def test_every_package_has_a_layer():
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= PROJECT, f"add {packages - PROJECT} to ALLOWED and README.md's layout table"
