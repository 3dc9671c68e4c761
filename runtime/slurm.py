"""Slurm as a config: a fiddle `run.Config(run.SlurmExecutor, ...)` sized from the recipe, changed by
`executor.key=value` overrides (applied by launcher/executor_overrides.py), rendered (`--dryrun`) or
submitted through nemo_run, alone or as a chain of dependent jobs.

What the job runs: nemo_run's `python -m nemo_run.core.runners.fdl_runner` on the serialized
`runtime.entry.train` task, one srun task per device (`ntasks_per_node = trainer.devices`), in the
repository (nemo_run's `code` dir is a symlink to it: `packager.symlink_from_remote_dir`), so
`results/<name>` is shared by every job of a chain and AutoResume continues from the last checkpoint.

Secrets (HF_TOKEN, WANDB_API_KEY, any variable whose name contains TOKEN/KEY/SECRET/PASSWORD) never
enter the executor config, so never the sbatch script or nemo_run's saved configs: sbatch passes the
submitter's environment to the job (`--export=ALL`, Slurm's default), and with a container image their
names (not values) are added to pyxis' `--container-env` so the host's values win inside the container.

See runtime/SLURM.md.
"""

import copy
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import fiddle as fdl
import lightning.pytorch as pl
import nemo_run as run

from common.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET_MARKERS = ("TOKEN", "KEY", "SECRET", "PASSWORD")
DEPENDENCY_TYPE = "afterany"  # a chain continues after a failed job: the next one resumes from the last checkpoint
# SIGTERM to the job's processes 2 minutes before the time limit (sbatch --signal): the PreemptionCallback of every
# recipe then saves a checkpoint at the end of the step. At the limit itself Slurm sends SIGTERM and SIGKILL only
# KillWait seconds later (30 by default), which a large model's step and save can outlast.
PREEMPTION_SIGNAL = "TERM@120"
LIST_KEYS = ("container_mounts", "container_env", "srun_args")
JOB_ID = re.compile(r"^\d+(_\d+)?$")


def is_secret(name: str) -> bool:
    return any(marker in name.upper() for marker in SECRET_MARKERS)


def secret_names(environ=None) -> list[str]:
    """Names of the submitter's secret variables (the values stay in the environment)."""
    return sorted(n for n in (os.environ if environ is None else environ) if is_secret(n))


# ---------------------------------------------------------------------------------------------- config


def executor_config(recipe) -> run.Config:
    """The default Slurm executor for a recipe: nodes and tasks from its trainer, submitted on this host."""
    trainer = recipe.trainer
    gpus = trainer.accelerator == "gpu"
    return run.Config(
        run.SlurmExecutor,
        account=None,
        partition=None,
        time="01:00:00",
        signal=PREEMPTION_SIGNAL,
        nodes=trainer.num_nodes,
        ntasks_per_node=trainer.devices,
        gpus_per_node=trainer.devices if gpus else None,
        job_name_prefix="recipes.",
        container_image=None,
        container_mounts=[],
        env_vars={},
        additional_parameters={},
        setup_lines=None,
        dependency_type=DEPENDENCY_TYPE,
        tunnel=run.Config(run.LocalTunnel, job_dir=""),
        packager=run.Config(run.GitArchivePackager, symlink_from_remote_dir=str(REPO_ROOT)),
    )


def tunnel_config(kind: str) -> run.Config:
    if kind == "local":
        return run.Config(run.LocalTunnel, job_dir="")
    if kind == "ssh":
        return run.Config(run.SSHTunnel, host="<set executor.tunnel.host>", user=os.environ.get("USER", ""), job_dir="<set executor.tunnel.job_dir>")
    raise UserError(f"executor.tunnel={kind!r}: use 'local' (submit on this host) or 'ssh' (then set executor.tunnel.host/user/job_dir)")


def require_tunnel(config: run.Config) -> None:
    """executor.tunnel=ssh needs its host and job_dir set (the defaults are placeholders a dry run shows)."""
    tunnel = config.tunnel
    if fdl.get_callable(tunnel) is not run.SSHTunnel:
        return
    for key in ("host", "job_dir"):
        value = str(getattr(tunnel, key, "") or "")
        if not value or value.startswith("<set "):
            raise UserError(f"executor.tunnel.{key} is not set: executor.tunnel=ssh submits through an SSH login host; "
                            f"set executor.tunnel.host=HOST executor.tunnel.job_dir=DIR (a folder on the cluster), "
                            "or submit on the cluster with executor.tunnel=local")


def connect(executor: run.SlurmExecutor) -> None:
    """Opens the SSH tunnel before anything is packaged or submitted: a host that cannot be reached is refused
    with the keys to change, not a traceback."""
    tunnel = executor.tunnel
    if not isinstance(tunnel, run.SSHTunnel):
        return
    import paramiko

    try:
        tunnel.connect()
    except (OSError, paramiko.SSHException) as error:
        raise UserError(f"executor.tunnel.host={tunnel.host} (user {tunnel.user or '<none>'}): cannot connect over SSH: "
                        f"{error}; check the host, executor.tunnel.user and your SSH key or agent, or submit on the "
                        "cluster with executor.tunnel=local") from error


def check_no_secrets(config: run.Config) -> None:
    for name in config.env_vars or {}:
        if is_secret(name):
            raise UserError(
                f"executor.env_vars has {name}, which looks like a secret and would be written into the sbatch "
                "script; export it in the submitting shell instead (the job inherits the submitter's environment)"
            )


def build(config: run.Config) -> run.SlurmExecutor:
    """Builds the executor; defaults that depend on other settings are filled in here, after overrides."""
    check_no_secrets(config)
    config = copy.deepcopy(config)
    local = fdl.get_callable(config.tunnel) is run.LocalTunnel
    if config.container_image:
        code = getattr(config.packager, "symlink_from_remote_dir", None)
        mounts = list(config.container_mounts or [])
        if code and not any(m.split(":")[0] == code for m in mounts):
            mounts.append(f"{code}:{code}")  # the symlinked code dir must resolve inside the container
        config.container_mounts = mounts
        names = secret_names()
        if names:
            config.container_env = sorted(set(config.container_env or []) | set(names))
    elif config.setup_lines is None and local:
        # No container, same host: the job runs this interpreter's environment (the repo's venv).
        config.setup_lines = f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH"
    executor = fdl.build(config)
    if not executor.account:
        executor.account = None
    return executor


# ---------------------------------------------------------------------------------------------- chains


class StopAtStep(pl.Callback):
    """Ends this job's training once the global step reaches `step` (a checkpoint is saved on train end).

    A chain of N jobs keeps the recipe's `trainer.max_steps` (so data and schedule are those of one long
    run) and gives job k the target k * ceil(max_steps / N); AutoResume continues where the last job ended.
    """

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def chain_recipes(recipe: run.Partial, jobs: int) -> list[run.Partial]:
    """N copies of the recipe; copy k stops at step k * ceil(max_steps / N), the last at max_steps."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: needs 1 or more")
    if jobs == 1:
        return [recipe]
    total = recipe.trainer.max_steps
    if not isinstance(total, int) or total < jobs:
        raise UserError(f"--jobs {jobs} splits trainer.max_steps={total!r} into per-job step targets: it needs max_steps >= jobs")
    per_job = math.ceil(total / jobs)
    copies = []
    for k in range(1, jobs + 1):
        copy_k = copy.deepcopy(recipe)
        callbacks = list(copy_k.trainer.callbacks or [])
        callbacks.append(run.Config(StopAtStep, step=min(k * per_job, total)))
        copy_k.trainer.callbacks = callbacks
        copies.append(copy_k)
    return copies


def _handle(job_id: str) -> str:
    # nemo_run turns dependency handles into job ids with handle.split("://")[1].split("/")[1]
    return f"slurm_tunnel://nemo_run/{job_id}"


def job_id_of(handle: str) -> str:
    return handle.partition("://")[2].split("/")[1]


def resolve_after(after: str) -> list[str]:
    """Slurm job ids to wait for: a job id that scontrol knows, or a nemo_run experiment id/title."""
    if JOB_ID.match(after):
        result = subprocess.run(["scontrol", "show", "job", after, "-o"], capture_output=True, text=True)
        if result.returncode != 0 or f"JobId={after.split('_')[0]}" not in result.stdout:
            message = (result.stderr or result.stdout).strip()
            raise UserError(f"--after {after}: Slurm does not know this job ({message or 'no output'})")
        return [after]
    from nemo_run.config import get_nemorun_home

    experiments = Path(get_nemorun_home()) / "experiments"
    title, _, _ = after.rpartition("_")
    candidates = [experiments / title / after] if title else []
    candidates.append(experiments / after)  # a title: its newest experiment
    for path in candidates:
        if not path.is_dir():
            continue
        # experiments/<title>/<id> is an id; experiments/<title> a title (which may hold underscores too).
        by_id = path != experiments / after
        try:
            exp = run.Experiment.from_id(after) if by_id else run.Experiment.from_title(after)
        except Exception as error:  # noqa: BLE001 - a broken store is the user's problem, said plainly
            raise UserError(f"--after {after}: cannot load the nemo_run experiment: {error}") from None
        ids = [job_id_of(job.handle) for job in exp.jobs if getattr(job, "handle", None)]
        if not ids:
            raise UserError(f"--after {after}: the experiment has no submitted Slurm jobs")
        return ids
    raise UserError(
        f"--after {after}: neither a Slurm job id nor a nemo_run experiment under {experiments} (ids look like TITLE_1712345678901234567)"
    )


def _own_copy(executor: run.SlurmExecutor) -> run.SlurmExecutor:
    """A job's own executor (its dependencies and flags are its own); the tunnel stays shared: one connection per
    cluster, and an SSH tunnel holds a lock that cannot be copied."""
    tunnel, executor.tunnel = executor.tunnel, None
    try:
        copied = copy.deepcopy(executor)
    finally:
        executor.tunnel = tunnel
    copied.tunnel = tunnel
    return copied


def _experiment(title: str, executor, steps, after_ids, base_dir=None) -> run.Experiment:
    """An experiment (inside its context) with one job per step; steps are (name, task, executor|None)."""
    exp = run.Experiment(
        title, executor=executor, base_dir=base_dir, clean_mode=True, enable_goodbye_message=False, skip_status_at_exit=True
    )
    exp.__enter__()
    previous = None
    for index, (name, task, step_executor) in enumerate(steps):
        step_executor = _own_copy(step_executor or executor)
        if index == 0 and after_ids:
            # nemo_run rewrites `dependencies` of every job of a DAG; an extra sbatch flag survives it.
            params = dict(step_executor.additional_parameters or {})
            params["dependency"] = f"{step_executor.dependency_type}:{':'.join(after_ids)}"
            step_executor.additional_parameters = params
        previous = exp.add(task, executor=step_executor, name=name, dependencies=[previous] if previous else None)
    return exp


def render(title: str, executor, steps, after_ids=()) -> list[tuple[str, str]]:
    """(job name, sbatch script) per step, exactly as submit would write them; nothing is submitted.

    A dependent job's `--dependency` names the previous job's id, known only at submission: shown as
    <job id of NAME>."""
    with tempfile.TemporaryDirectory(prefix="slurm-dryrun-") as base:
        exp = _experiment(title, executor, steps, list(after_ids), base_dir=base)
        try:
            for job in exp.jobs[1:]:
                job.executor.dependencies = [_handle(f"<job id of {dep}>") for dep in job.dependencies]
            exp.dryrun(log=False, exist_ok=True, delete_exp_dir=False)
            scripts = []
            for job in exp.jobs:
                path = Path(exp._exp_dir) / f"{job.executor.job_name}_sbatch.sh"
                scripts.append((job.id, path.read_text()))
        finally:
            exp.__exit__(None, None, None)
    return scripts


def submit(title: str, executor, steps, after_ids=()) -> tuple[str, list[tuple[str, str]]]:
    """Submits the steps as dependent Slurm jobs and returns (experiment id, [(job name, slurm job id)])."""
    exp = _experiment(title, executor, steps, list(after_ids))
    try:
        exp.run(detach=True)
        ids = [(job.id, job_id_of(job.handle)) for job in exp.jobs]
        return exp._id, ids
    finally:
        exp.__exit__(None, None, None)


__all__ = [
    "executor_config",
    "build",
    "chain_recipes",
    "resolve_after",
    "render",
    "tunnel_config",
    "require_tunnel",
    "connect",
    "LIST_KEYS",
    "submit",
    "StopAtStep",
    "is_secret",
    "secret_names",
]
