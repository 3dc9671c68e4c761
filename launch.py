"""The one command-line entry: lists, copies, explains, compares, plans, dry-runs and launches recipes
(usage: README.md, "Launching" and "Will it fit, and how long?").

  python launch.py recipe=NAME [key=value ...]            launch (local, or executor=slurm)
  python launch.py recipe=NAME [key=value ...] --plan     memory per GPU, step and run time, fixes [--gpu NAME]
  python launch.py recipe=NAME [key=value ...] --dryrun   resolved config, plan summary, launch command

A launch or dry run that the plan says cannot fit its GPUs (CPU recipes: this machine's memory) stops before
anything starts, with the breakdown and the changes that make it fit; --no-fit-check launches anyway."""

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
    parser.add_argument("--dryrun", action="store_true", help="print the resolved config, the plan's summary line and the launch command")
    parser.add_argument("--plan", action="store_true", help="print the memory of the most loaded GPU, the step and run time, and the changes that make it fit")
    parser.add_argument("--gpu", metavar="NAME", help="plan on this GPU (h100-80gb, h200-141gb, a100-80gb, a100-40gb, b200-180gb, l40s-48gb); default: the recipe's target; CPU recipes: this machine")
    parser.add_argument("--no-fit-check", action="store_true", help="launch or dry-run even when the plan says the run cannot fit")
    parser.add_argument("--explain", metavar="KEY", help="show a value and where it was set")
    parser.add_argument("--diff", metavar="RECIPE", help="compare the resolved config with another recipe")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="executor=slurm: a chain of N dependent jobs (afterany), each resuming from the last checkpoint")
    parser.add_argument("--after", metavar="ID", help="executor=slurm: start after this Slurm job id or nemo_run experiment id")
    parser.add_argument("--then", metavar="STEPS", help="after training, in order: average[:K],export,eval[:benchmark,...] (README.md, 'After training')")
    return parser.parse_intermixed_args(argv)  # overrides may follow the options too


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
    from launcher import plans

    plans.check_gpu_name(args.gpu)  # before NeMo is imported too
    from launcher import chain, inspection, session

    then, overrides = chain.split(args.then, overrides)
    prepared = session.prepare(name, overrides)
    prepared.jobs, prepared.after = args.jobs, args.after
    prepared.gpu, prepared.fit_check = args.gpu, not args.no_fit_check
    prepared.then = chain.plan(then, prepared) if then else None
    if args.plan:
        print(session.plan(prepared))
    elif args.explain:
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
