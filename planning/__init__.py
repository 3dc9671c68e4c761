"""Plan before launch: whether a recipe config fits its GPUs, how long it takes, and what to change when it
does not, computed from the config alone, before a GPU is touched.

For the launcher:
    plan = plan_config(config, gpu="h100-80gb")      # a Plan; gpu=None: the default (H100 80GB); CPU recipes: this machine
    print(plan.render())                             # `--plan`: the breakdown, FLOPs, time, and fixes when it does not fit
    plan.summary_line()                              # `--dryrun`: one line
    check_fits(config, gpu=...)                      # before a local or Slurm launch: raises PlanDoesNotFit (exit 2)
    recipe_target_gpu("recipes.llama31_8b")          # the GPU a recipe module states it is sized for
"""

from planning.hardware import GPUS
from planning.plan import Plan, plan_config, recipe_target_gpu


class PlanDoesNotFit(Exception):
    """Raised by check_fits; its text is the top of the breakdown and the changes that make the run fit."""

    exit_code = 2

    def __init__(self, plan: Plan):
        self.plan = plan
        lines = [f"the plan says this run does not fit: {plan.summary_line()}"] + plan.breakdown()
        lines += [s.describe() for s in plan.suggestions]
        lines.append("(launch anyway with --no-fit-check)")
        super().__init__("\n".join(lines))


def check_fits(config, *, gpu: str | None = None, model_name: str | None = None) -> Plan:
    """The plan of `config`; raises PlanDoesNotFit when it does not fit."""
    plan = plan_config(config, gpu=gpu, model_name=model_name)
    if not plan.fits:
        raise PlanDoesNotFit(plan)
    return plan


__all__ = ["GPUS", "Plan", "PlanDoesNotFit", "check_fits", "plan_config", "recipe_target_gpu"]
