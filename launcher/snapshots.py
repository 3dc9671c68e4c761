"""Committed resolved configs: recipes/snapshots/<recipe>.yaml holds every value each recipe's run
uses (NeMo's class defaults included), so a change to a shared default shows, in the pull request
diff, every recipe it affects. This module renders, checks and rewrites them (usage: README.md).
"""

import argparse
import sys
from pathlib import Path

from launcher import resolve, validation
from recipes import registry

SNAPSHOT_DIR = registry.RECIPES_DIR / "snapshots"
REGENERATE = "python -m launcher.snapshots"


def render(name: str) -> str:
    """The recipe as written: no overrides, and no fitting to the machine that renders it."""
    config = registry.build(name)
    validation.validate(config)
    return f"# {name}: resolved config. Regenerate with `{REGENERATE}`.\n" + resolve.to_yaml(config)


def path_for(name: str) -> Path:
    return SNAPSHOT_DIR / f"{name}.yaml"


def stale(names) -> list[str]:
    return [n for n in names if not path_for(n).exists() or path_for(n).read_text() != render(n)]


def write_all(names) -> None:
    SNAPSHOT_DIR.mkdir(exist_ok=True)
    for name in names:
        path_for(name).write_text(render(name))
    known = {path_for(n) for n in names}
    for orphan in set(SNAPSHOT_DIR.glob("*.yaml")) - known:
        orphan.unlink()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    names = sorted(registry.discover())
    if args.check:
        out_of_date = stale(names)
        for name in out_of_date:
            print(f"stale snapshot: {path_for(name)} (recipe {name}); run `{REGENERATE}`")
        return 1 if out_of_date else 0
    write_all(names)
    print(f"wrote {len(names)} snapshots to {SNAPSHOT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
