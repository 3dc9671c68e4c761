"""The one command-line entry: lists, copies, explains, compares, dry-runs and launches recipes
(usage: README.md, "Launching")."""

import argparse
import sys

from common import cli
from common.errors import UserError
from recipes import registry


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        prog="launch.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("assignments", nargs="*", metavar="key=value", help="recipe=NAME, then overrides")
    parser.add_argument("--list", action="store_true", help="list every recipe (no NeMo import)")
    parser.add_argument("--dryrun", action="store_true", help="print the resolved config and launch command")
    parser.add_argument("--explain", metavar="KEY", help="show a value and where it was set")
    parser.add_argument("--diff", metavar="RECIPE", help="compare the resolved config with another recipe")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="executor=slurm: a chain of N dependent jobs (afterany), each resuming from the last checkpoint")
    parser.add_argument("--after", metavar="ID", help="executor=slurm: start after this Slurm job id or nemo_run experiment id")
    parser.add_argument("--then", metavar="STEPS", help="after training, in order: average[:K],export,eval[:benchmark,...] (README.md, 'After training')")
    return parser.parse_args(argv)


def print_recipe_table() -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("recipe", "model", "algorithm", "description", box=None, pad_edge=False)
    for info in sorted(registry.discover().values(), key=lambda i: i.name):
        table.add_row(info.name, info.model, info.algorithm, info.description)
    Console(width=200).print(table)


def split_recipe(assignments: list[str]) -> tuple[str, list[str]]:
    names = [a.partition("=")[2] for a in assignments if a.startswith("recipe=")]
    if len(names) != 1:
        raise UserError("name exactly one recipe: python launch.py recipe=NAME [key=value ...]")
    return names[0], [a for a in assignments if not a.startswith("recipe=")]


def run_command(argv: list[str]) -> int:
    if argv[:1] == ["copy"]:
        from launcher import copying

        return copying.main(argv[1:])
    args = parse_args(argv)
    if args.list:
        print_recipe_table()
        return 0
    name, overrides = split_recipe(args.assignments)
    registry.find(name)  # an unknown name fails here, before NeMo is imported
    from launcher import chain, inspection, session

    then, overrides = chain.split(args.then, overrides)
    prepared = session.prepare(name, overrides)
    prepared.jobs, prepared.after = args.jobs, args.after
    prepared.then = chain.plan(then, prepared) if then else None
    if args.explain:
        print(inspection.explain(prepared, args.explain))
    elif args.diff:
        print(inspection.diff(prepared, session.prepare(args.diff, [])))
    elif args.dryrun:
        print(session.dryrun(prepared))
    else:
        return session.launch(prepared)
    return 0


def main(argv: list[str]) -> int:
    return cli.run(lambda: run_command(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
