"""One launch from a recipe name and overrides: build, override, fit to the machine, validate; then print
it (dry run) or run it through a nemo_run executor. Explaining and comparing: launcher/inspection.py."""

from dataclasses import dataclass, field

import nemo_run as run

from common.errors import UserError
from launcher import chain, data_files, epoch, executor_args, overrides, plans, resolve, starting_weights, validation
from launcher.rules import preference
from recipes import registry
from recipes.blocks import ONE_EPOCH
from runtime import entry, executors, machine, resume, slurm


@dataclass
class Prepared:
    name: str
    config: run.Partial
    machine_changes: list[str] = field(default_factory=list)
    executor: str = "local"  # or "slurm" (runtime/slurm.py)
    executor_config: object = None  # run.Config(run.SlurmExecutor, ...) for executor=slurm
    jobs: int = 1  # executor=slurm: a chain of dependent jobs (--jobs)
    after: str | None = None  # executor=slurm: a Slurm job id or nemo_run experiment to start after (--after)
    gpu: str | None = None  # the GPU to plan on (--gpu; launcher/plans.py); None: the recipe's target
    fit_check: bool = True  # False (--no-fit-check): launch even when the plan says it cannot fit
    then: chain.Chain | None = None  # the steps after training (--then): launcher/chain.py


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


def task(prepared: Prepared, recipe: run.Partial | None = None) -> run.Partial:
    """What the executor runs: the recipe (default: the prepared one) behind runtime.entry's machine preparation
    and starting-weights check, which names the import command on failure."""
    config = prepared.config if recipe is None else recipe
    import_how = starting_weights.import_how(prepared)
    return run.Partial(entry.train, recipe=starting_weights.with_import_named(config, import_how), import_how=import_how)


def _check_local_options(prepared: Prepared) -> None:
    if prepared.jobs != 1 or prepared.after:
        raise UserError("--jobs and --after chain Slurm jobs: add executor=slurm")


def slurm_steps(prepared: Prepared) -> list:
    """(job name, task, executor or None) per job: --jobs N splits trainer.max_steps into step targets; the
    jobs of --then follow."""
    recipes = slurm.chain_recipes(prepared.config, prepared.jobs)
    if len(recipes) == 1:
        training = [(prepared.name, task(prepared), None)]
    else:
        training = [(f"{prepared.name}-{k}", task(prepared, r), None) for k, r in enumerate(recipes, 1)]
    return training + (chain.slurm_steps(prepared.then) if prepared.then else [])


def _config_parts(prepared: Prepared) -> list[str]:
    """The head of a dry run: the resolved config, what was fitted to this machine, the starting weights and
    the plan's summary line (a plan that does not fit is refused here, as at launch)."""
    plan_line = plans.require_fit(prepared)
    parts = [f"# recipe: {prepared.name}", resolve.to_yaml(prepared.config).rstrip()]
    if prepared.machine_changes:
        parts.append("# fitted to this machine:\n" + "\n".join(f"#   {c}" for c in prepared.machine_changes))
    weights = starting_weights.describe(prepared.config)
    return parts + ([weights] if weights else []) + [f"# {plan_line}"]


def slurm_dryrun(prepared: Prepared) -> str:
    parts = _config_parts(prepared)
    executor = slurm.build(prepared.executor_config)
    after = [f"<{prepared.after}>"] if prepared.after else []
    parts.append("# executor (slurm):\n" + resolve.to_yaml(prepared.executor_config).rstrip())
    for job_name, script in slurm.render(prepared.name, executor, slurm_steps(prepared), after):
        parts.append(f"# ---- sbatch script of {job_name} (submitted with: sbatch --requeue --parsable SCRIPT)\n{script.rstrip()}")
    return "\n".join(parts)


def slurm_launch(prepared: Prepared) -> int:
    # A path the submitter cannot see is checked by the job itself, first thing (runtime.entry.train).
    starting_weights.require(prepared, only_where_visible=True)
    print(plans.require_fit(prepared))
    slurm.require_tunnel(prepared.executor_config)
    after = slurm.resolve_after(prepared.after) if prepared.after else []
    executor = slurm.build(prepared.executor_config)
    slurm.connect(executor)
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
    _note(prepared, data_files.show_command(prepared.config.data))
    parts = _config_parts(prepared)
    executor = executors.for_recipe(prepared.config)
    parts.append("# launch command:\n" + executors.describe(executor, prepared.name))
    if prepared.then:
        parts.append(chain.describe(prepared.then))
    return "\n".join(parts)


def plan(prepared: Prepared) -> str:
    """--plan: what launch/dryrun check, in full; one epoch is counted where the data is here."""
    if prepared.executor == "local":
        epoch.preview_max_steps(prepared.config)
    return plans.render(prepared)


def launch(prepared: Prepared) -> int:
    if prepared.executor == "slurm":
        return slurm_launch(prepared)
    _check_local_options(prepared)
    # trainer.max_steps=-1 becomes one epoch over the data, counted here where the data is.
    _note(prepared, epoch.fill_max_steps(prepared.config))
    executors.check_can_run(prepared.config)
    data_files.require(prepared.config.data)
    starting_weights.require(prepared)
    # The launched process decides again and says which checkpoint it resumes from; here only a refusal.
    decision = resume.decide(prepared.config.log, prepared.config.resume, starting_weights.expected_architecture(prepared.config))
    preference.require_reference_to_resume(prepared.config, decision.checkpoint)
    print(plans.require_fit(prepared))
    executor = executors.for_recipe(prepared.config)
    executors.launch(task(prepared), executor, prepared.name)
    if prepared.then:
        chain.run_local(prepared.then)
    return 0


__all__ = ["Prepared", "prepare", "task", "dryrun", "plan", "launch"]
