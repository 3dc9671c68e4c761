"""Plan before launch: whether a recipe config fits its GPUs, how long it takes, and what to change when it
does not, computed from the config alone, before a GPU is touched.

For the launcher:
    plan = plan_config(config, gpu="h100-80gb", steps=None, fused_attention=None)
        # gpu: a GPUS name (None: h100-80gb; pass recipe_target_gpu(module) for the recipe's own); CPU recipes are
        # planned on this machine. steps: the run's length if known (e.g. after epoch.fill_max_steps); None reads
        # trainer.max_steps, or counts one epoch of the prepared data. fused_attention: None assumes Transformer
        # Engine on a GPU; False plans megatron's local attention (a GPU without TE keeps the s x s scores).
    print(plan.render())                             # `--plan`: the breakdown, FLOPs, time, and fixes when it does not fit
    plan.summary_line()                              # `--dryrun`: one line
    check_fits(config, gpu=...)                      # before a local or Slurm launch: raises PlanDoesNotFit (exit 2)
    recipe_target_gpu("recipes.llama31_8b")          # the GPU a recipe module states it is sized for
"""

from planning.hardware import GPUS
from planning.plan import Plan, plan_config, recipe_target_gpu
from common.errors import UserError


class PlanDoesNotFit(UserError):
    """Raised by check_fits (a UserError: the launcher prints it and exits 2); its text is the top of the breakdown
    and the changes that make the run fit."""

    def __init__(self, plan: Plan):
        self.plan = plan
        lines = [f"the plan says this run does not fit: {plan.summary_line()}"] + plan.breakdown()
        lines += [s.describe() for s in plan.suggestions] or [no_fix_found(plan)]
        lines.append("(launch anyway with --no-fit-check)")
        super().__init__("\n".join(lines))


def no_fix_found(plan: Plan) -> str:
    """What to say when a plan that does not fit has no suggestions."""
    if plan.on_cpu:
        return "no changes are searched for CPU runs: a smaller micro batch or sequence, or fewer processes (trainer.devices)"
    return ("no change of one or two of recompute, TP, PP, optimizer offload and micro batch fits: more GPUs "
            "(trainer.num_nodes), a larger GPU (--plan --gpu NAME), or LoRA")


def check_fits(config, *, gpu: str | None = None, model_name: str | None = None, steps: int | None = None,
               fused_attention: bool | None = None) -> Plan:
    """The plan of `config`; raises PlanDoesNotFit when it does not fit."""
    plan = plan_config(config, gpu=gpu, model_name=model_name, steps=steps, fused_attention=fused_attention)
    if not plan.fits:
        raise PlanDoesNotFit(plan)
    return plan


__all__ = ["GPUS", "Plan", "PlanDoesNotFit", "check_fits", "no_fix_found", "plan_config", "recipe_target_gpu"]
