"""nemo_run executors for a recipe, sized from the recipe's own trainer.

One process runs in this interpreter (nemo_run's direct mode: the same build-then-call of the
task, without a second NeMo import); more run under torchrun, one process per device.
"""

import os
import sys
from pathlib import Path

import nemo_run as run
import torch

from common.errors import RunFailed, UserError


def for_recipe(recipe) -> run.LocalExecutor | None:
    """None means nemo_run's direct, in-process run."""
    if recipe.trainer.num_nodes * recipe.trainer.devices == 1:
        return None
    # nemo_run starts `torchrun` by name: the one next to this interpreter, even when the venv is not activated.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return run.LocalExecutor(ntasks_per_node=recipe.trainer.devices, launcher="torchrun", env_vars={"PATH": path})


EXECUTOR_KINDS = ("local", "slurm")


def _preset_settings(mapping: dict, prefix: str = "") -> list[str]:
    settings = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            settings += _preset_settings(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            settings.append(f"{prefix}{key}={','.join(map(str, value))}")
        else:
            settings.append(f"{prefix}{key}={value}")
    return settings


def load_preset(path: str) -> tuple[str, list[str]]:
    """A cluster file users keep: `executor: slurm` plus any executor keys (see runtime/SLURM.md)."""
    import yaml

    try:
        preset = yaml.safe_load(open(path))
    except OSError as error:
        raise UserError(f"executor={path}: cannot read the cluster file ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise UserError(f"executor={path}: not valid YAML ({error})") from None
    if not isinstance(preset, dict) or preset.get("executor") not in EXECUTOR_KINDS:
        raise UserError(f"executor={path}: the file must be a mapping with `executor: {' | '.join(EXECUTOR_KINDS)}`")
    kind = preset.pop("executor")
    return kind, _preset_settings(preset)


def split_args(args: list[str]) -> tuple[str, list[str], list[str]]:
    """(kind, executor overrides without the 'executor.' prefix, recipe overrides) from the command line."""
    kind, executor_args, rest = "local", [], []
    for text in args:
        if text.startswith("executor=") and text.endswith((".yaml", ".yml")):
            kind, preset = load_preset(text.partition("=")[2].strip())
            executor_args = preset + executor_args  # the command line's own settings still win
        elif text.startswith("executor="):
            kind = text.partition("=")[2].strip()
            if kind not in EXECUTOR_KINDS:
                raise UserError(f"executor={kind!r}: choose one of {', '.join(EXECUTOR_KINDS)}")
        elif text.startswith("executor."):
            executor_args.append(text[len("executor."):])
        else:
            rest.append(text)
    if executor_args and kind != "slurm":
        raise UserError(f"{'executor.' + executor_args[0]}: executor.<key>=value settings need executor=slurm")
    return kind, executor_args, rest


def check_can_run(recipe) -> None:
    if recipe.trainer.num_nodes != 1:
        raise UserError(
            f"trainer.num_nodes={recipe.trainer.num_nodes}: the local executor runs on this machine only (use executor=slurm)"
        )
    if recipe.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        raise UserError("trainer.accelerator='gpu' but this machine has no CUDA device: run a tiny_* recipe, or --dryrun")


def describe(executor: run.LocalExecutor | None, name: str) -> str:
    if executor is None:
        return f"in this process (nemo_run direct run of {name}: 1 process)"
    return (
        f"torchrun --nnodes {executor.nnodes()} --nproc-per-node {executor.nproc_per_node()} "
        f"-m nemo_run.core.runners.fdl_runner -n {name} <serialized task>"
    )


def launch(task: run.Partial, executor: run.LocalExecutor | None, name: str) -> None:
    """Runs the task to its end; raises RunFailed when torchrun's job did not succeed (nemo_run only logs it)."""
    if executor is None:
        run.run(task, direct=True, name=name)
        return
    from torchx.specs.api import AppState

    with run.Experiment(name, executor=executor) as experiment:
        experiment.add(task, name=name, tail_logs=True)
        experiment.run(detach=False)
    state = experiment.jobs[0].state  # set once the experiment's exit has waited for the job
    if state != AppState.SUCCEEDED:
        raise RunFailed(f"{name} ended {state.name} under {describe(executor, name)}; the processes' log is above")
