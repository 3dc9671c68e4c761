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


def check_can_run(recipe) -> None:
    if recipe.trainer.num_nodes != 1:
        raise UserError(
            f"trainer.num_nodes={recipe.trainer.num_nodes}: the local executor runs on this machine only (use executor=slurm)"
        )
    if recipe.trainer.accelerator == "gpu" and not has_the_gpus(recipe.trainer):
        raise UserError(
            f"trainer.accelerator='gpu' with trainer.devices={recipe.trainer.devices}, but this machine has "
            f"{cuda_devices()} CUDA device(s): run a tiny_* recipe, or --dryrun, or set trainer.devices"
        )


def cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def has_the_gpus(trainer) -> bool:
    """Whether this machine has the CUDA devices a one-node GPU run of `trainer` asks for."""
    wanted = trainer.devices if isinstance(trainer.devices, int) else 1  # "auto" takes what there is
    return trainer.num_nodes == 1 and 0 < wanted <= cuda_devices()


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
