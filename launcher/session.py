"""One launch from a recipe name and overrides: build, override, fit to the machine, validate, then
explain, diff, print (dry run) or run it through a nemo_run executor."""

from dataclasses import dataclass, field

import fiddle as fdl
import nemo_run as run

from common.errors import UserError
from launcher import data_files, epoch, executor_args, overrides, resolve, validation
from recipes import registry
from recipes.blocks import ONE_EPOCH
from runtime import entry, executors, machine, slurm


@dataclass
class Prepared:
    name: str
    config: run.Partial
    machine_changes: list[str] = field(default_factory=list)
    executor: str = "local"  # or "slurm" (runtime/slurm.py)
    executor_config: object = None  # run.Config(run.SlurmExecutor, ...) for executor=slurm
    jobs: int = 1  # executor=slurm: a chain of dependent jobs (--jobs)
    after: str | None = None  # executor=slurm: a Slurm job id or nemo_run experiment to start after (--after)


def prepare(name: str, override_args: list[str], fit_to_machine: bool = True) -> Prepared:
    kind, executor_settings, override_args = executor_args.split_args(override_args)
    config = registry.build(name)
    overrides.apply(config, override_args)
    # A Slurm job runs elsewhere: fitting the config to this (submitting) machine would be wrong there.
    changes = machine.adapt(config) if fit_to_machine and kind == "local" else []
    if kind == "slurm" and config.trainer.max_steps == ONE_EPOCH:
        raise UserError("executor=slurm needs trainer.max_steps: one epoch (-1) is counted from data this machine may not see")
    validation.validate(config)
    prepared = Prepared(name, config, changes, executor=kind)
    if kind == "slurm":
        prepared.executor_config = executor_args.apply_overrides(slurm.executor_config(config), executor_settings)
        slurm.check_no_secrets(prepared.executor_config)
    return prepared


def _parent_and_leaf(config, key: str):
    overrides.check_key(config, key)
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
        node = node[int(name)] if isinstance(node, (list, tuple)) else getattr(node, name)
    return node, leaf


def _where(setter) -> str:
    location = setter.location
    if location.filename == "command line":
        return f"command line ({location.function_name})"
    path = resolve.leaf(location.filename)
    return f"{path}:{location.line_number} ({location.function_name})"


def _meaning(key: str, value) -> str:
    """What a value that is a convention rather than a number means, for --explain."""
    return f"  ({epoch.COUNTED_AT_LAUNCH})" if key == "trainer.max_steps" and value == ONE_EPOCH else ""


def explain(prepared: Prepared, key: str) -> str:
    """The value of `key` and every place that set it, newest first."""
    parent, leaf = _parent_and_leaf(prepared.config, key)
    value = resolve.resolved(getattr(parent, leaf)) if isinstance(parent, fdl.Buildable) else parent[int(leaf)]
    lines = [f"{key} = {value!r}" + _meaning(key, value)]
    history = parent.__argument_history__[leaf] if isinstance(parent, fdl.Buildable) else []
    setters = [h for h in history if h.kind.name == "NEW_VALUE"]
    for position, setter in enumerate(reversed(setters)):
        label = "set at" if position == 0 else "which overrode"
        lines.append(f"  {label} {_where(setter)}: {resolve.resolved(setter.new_value)!r}")
    if not setters:
        target = resolve.qualified_name(fdl.get_callable(parent))
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


def _check_local_options(prepared: Prepared) -> None:
    if prepared.jobs != 1 or prepared.after:
        raise UserError("--jobs and --after chain Slurm jobs: add executor=slurm")


def slurm_steps(prepared: Prepared) -> list:
    """(job name, task, None) per job of the chain: --jobs N splits trainer.max_steps into step targets."""
    recipes = slurm.chain_recipes(prepared.config, prepared.jobs)
    if len(recipes) == 1:
        return [(prepared.name, task(prepared), None)]
    return [(f"{prepared.name}-{k}", run.Partial(entry.train, recipe=r), None) for k, r in enumerate(recipes, 1)]


def slurm_dryrun(prepared: Prepared) -> str:
    executor = slurm.build(prepared.executor_config)
    after = [f"<{prepared.after}>"] if prepared.after else []
    parts = [f"# recipe: {prepared.name}", resolve.to_yaml(prepared.config).rstrip()]
    if prepared.machine_changes:
        parts.append("# fitted to this machine:\n" + "\n".join(f"#   {c}" for c in prepared.machine_changes))
    parts.append("# executor (slurm):\n" + resolve.to_yaml(prepared.executor_config).rstrip())
    for job_name, script in slurm.render(prepared.name, executor, slurm_steps(prepared), after):
        parts.append(f"# ---- sbatch script of {job_name} (submitted with: sbatch --requeue --parsable SCRIPT)\n{script.rstrip()}")
    return "\n".join(parts)


def slurm_launch(prepared: Prepared) -> int:
    after = slurm.resolve_after(prepared.after) if prepared.after else []
    executor = slurm.build(prepared.executor_config)
    experiment_id, jobs = slurm.submit(prepared.name, executor, slurm_steps(prepared), after)
    print(f"experiment: {experiment_id}")
    for job_name, job_id in jobs:
        print(f"slurm job {job_id}: {job_name}")
    return 0


def _note(prepared: Prepared, note: str | None) -> None:
    if note:
        prepared.machine_changes.append(note)


def dryrun(prepared: Prepared) -> str:
    if prepared.executor == "slurm":
        return slurm_dryrun(prepared)
    _check_local_options(prepared)
    _note(prepared, epoch.preview_max_steps(prepared.config))
    executor = executors.for_recipe(prepared.config)
    parts = [f"# recipe: {prepared.name}", resolve.to_yaml(prepared.config).rstrip()]
    if prepared.machine_changes:
        parts.append("# fitted to this machine:\n" + "\n".join(f"#   {c}" for c in prepared.machine_changes))
    parts.append("# launch command:\n" + executors.describe(executor, prepared.name))
    return "\n".join(parts)


def launch(prepared: Prepared) -> int:
    if prepared.executor == "slurm":
        return slurm_launch(prepared)
    _check_local_options(prepared)
    # trainer.max_steps=-1 becomes one epoch over the data, counted here where the data is.
    _note(prepared, epoch.fill_max_steps(prepared.config))
    executors.check_can_run(prepared.config)
    data_files.require(prepared.config.data)
    executor = executors.for_recipe(prepared.config)
    executors.launch(task(prepared), executor, prepared.name)
    return 0


__all__ = ["Prepared", "prepare", "explain", "diff", "dryrun", "launch", "UserError"]
