"""The plan (planning/) of a prepared launch: `--plan` prints it, a dry run shows its summary line, and a launch
the plan says cannot fit stops before anything starts (exit 2) unless `--no-fit-check`.

What is planned: a GPU recipe on `--gpu`, else the GPU its recipe module states it is sized for (TARGET_GPU);
a CPU recipe on this machine's memory. Attention: a local GPU launch gets Transformer Engine's fused attention
only when TE is installed here; Slurm nodes, and the target GPUs that a machine without as many CUDA devices
can only dry-run for, are assumed to have TE.
"""

from common import transformer_engine
from common.errors import UserError
from models.catalog import MODELS
from planning import GPUS, Plan, PlanDoesNotFit, no_fix_found, plan_config, recipe_target_gpu
from planning.plan import catalog_model
from recipes import registry


def check_gpu_name(gpu: str | None) -> None:
    """Refuses an unknown --gpu before NeMo is imported."""
    if gpu is not None and gpu not in GPUS:
        raise UserError(f"unknown --gpu '{gpu}'; valid: {', '.join(GPUS)}")


def target_gpu(prepared) -> str | None:
    """--gpu, else the recipe module's TARGET_GPU (None for CPU recipes: planned on this machine)."""
    return prepared.gpu or recipe_target_gpu(registry.find(prepared.name).module)


def _runs_on_gpus_here(prepared) -> bool:
    """A local GPU launch this machine has the GPUs for (one it has not can only be dry-run here)."""
    from runtime import executors

    trainer = prepared.config.trainer
    return prepared.executor == "local" and trainer.accelerator == "gpu" and executors.has_the_gpus(trainer)


def _attention(prepared) -> tuple[bool | None, str]:
    """What planning is told about the attention kernel, and what the output says about it. None lets planning
    decide: fused attention on a GPU (Transformer Engine assumed), megatron's local attention on a CPU."""
    if prepared.config.trainer.accelerator != "gpu":
        return None, ""
    if not _runs_on_gpus_here(prepared):
        return None, f"Transformer Engine assumed on {'the Slurm nodes' if prepared.executor == 'slurm' else 'the target GPUs'}"
    if transformer_engine.is_installed():
        return True, "Transformer Engine installed here"
    return False, "no Transformer Engine here: megatron's local attention"


class CannotPlan(UserError):
    """The config's model is not one planning knows (models/catalog.py)."""


def _model_name(prepared) -> str:
    """The recipe's model by its name (<model>_<algorithm>), so that a model override (e.g. model.config.num_layers)
    still plans; else the catalog row the config's model class matches (a copied recipe with another name)."""
    model = registry.find(prepared.name).model
    if model in MODELS:
        return model
    try:
        return catalog_model(prepared.config)
    except KeyError as error:
        raise CannotPlan(f"cannot plan {prepared.name}: {error.args[0]} (add it to models/catalog.py, or launch "
                         "with --no-fit-check)") from error


def plan(prepared) -> Plan:
    """The plan of the launch as prepared. The run's length is read from trainer.max_steps, into which the launcher
    has counted one epoch where the data is here (epoch.fill_max_steps); still -1 there: time per step only."""
    return plan_config(prepared.config, gpu=target_gpu(prepared), model_name=_model_name(prepared),
                       fused_attention=_attention(prepared)[0])


def _with_note(text: str, prepared, separator: str = " ") -> str:
    note = _attention(prepared)[1]
    return f"{text}{separator}({note})" if note else text


def require_fit(prepared) -> str:
    """The plan's summary line for the launch's output; raises PlanDoesNotFit (exit 2) when the plan says the run
    cannot fit, unless --no-fit-check (then the line says by how much it does not, or that no plan was made)."""
    try:
        planned = plan(prepared)
    except CannotPlan:
        if prepared.fit_check:
            raise
        return "plan: none (its model is not in models/catalog.py)"
    if prepared.fit_check and not planned.fits:
        raise PlanDoesNotFit(planned)
    return _with_note(planned.summary_line(), prepared)


def render(prepared) -> str:
    """--plan: the breakdown, FLOPs, time, and the changes that make it fit when it does not."""
    planned = plan(prepared)
    rows = [planned.render()]
    if not planned.fits and not planned.suggestions:
        rows.append(no_fix_found(planned))
    return _with_note("\n".join(rows), prepared, separator="\n")
