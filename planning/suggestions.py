"""When a config does not fit: the cheapest changes that make it fit, each planned by the same code.

Every candidate is a set of overrides (what the user would type). Each is planned; those that fit are ranked by
their predicted step time, with an assumed cost for what the FLOPs count does not see (stated per candidate).
"""

from dataclasses import dataclass

from planning.hardware import GIB
from planning.layout import read

# Step-time factors beyond model FLOPs (assumptions, stated in the output): full recompute repeats the forward
# (+1/3 of the step's compute); selective recompute repeats only core attention; a larger TP or PP adds
# communication or pipeline bubbles; a larger EP sends tokens further in its all-to-all; offloading the optimizer
# makes its step run on the CPU.
COST = {"selective": 1.03, "full": 4 / 3, "tp": 1.10, "pp": 1.08, "offload": 1.15, "micro_batch": 1.05, "ep": 1.05}


@dataclass(frozen=True)
class Suggestion:
    overrides: dict
    why: str
    cost: float
    total_bytes: int
    spare_bytes: int
    step_seconds: float | None

    def command_line(self) -> str:
        return " ".join(f"{key}={_literal(value)}" for key, value in self.overrides.items())

    def describe(self) -> str:
        time = f", ~{self.step_seconds:.2f} s/step" if self.step_seconds else ""
        return (f"fits with: {self.command_line()}  ({self.why}; {self.total_bytes / GIB:.1f} GiB, "
                f"{self.spare_bytes / GIB:.1f} GiB to spare{time}, assumed x{self.cost:.2f} step time)")


def _literal(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _candidates(config) -> list[tuple[dict, str, float]]:
    get = lambda path, default=None: read(config, path, default)  # noqa: E731
    tp, pp = get("trainer.strategy.tensor_model_parallel_size", 1), get("trainer.strategy.pipeline_model_parallel_size", 1)
    world = get("trainer.num_nodes", 1) * get("trainer.devices", 1)
    heads, groups, layers = get("model.config.num_attention_heads"), get("model.config.num_query_groups"), get("model.config.num_layers")
    granularity = get("model.config.recompute_granularity")
    micro = get("data.micro_batch_size", 1)
    out = []
    if granularity is None:
        out.append(({"model.config.recompute_granularity": "selective"}, "selective recompute of core attention", COST["selective"]))
    if granularity != "full":
        out.append(({"model.config.recompute_granularity": "full", "model.config.recompute_method": "uniform",
                     "model.config.recompute_num_layers": 1}, "full activation recompute", COST["full"]))
    for factor in (2, 4, 8):
        new_tp = tp * factor
        if new_tp <= 8 and heads % new_tp == 0 and (groups or heads) % new_tp == 0 and world % (new_tp * pp) == 0:
            out.append(({"trainer.strategy.tensor_model_parallel_size": new_tp, "trainer.strategy.sequence_parallel": True},
                        f"tensor parallel {new_tp}", COST["tp"] ** factor.bit_length()))
    experts, ep = get("model.config.num_moe_experts"), get("trainer.strategy.expert_model_parallel_size", 1)
    etp = get("trainer.strategy.expert_tensor_parallel_size") or tp
    for factor in (2, 4):
        new_pp = pp * factor
        # a mixture of experts also needs megatron-core's expert layout (ETP x EP x PP) to divide the world
        expert_layout_fits = not experts or world % (etp * ep * new_pp) == 0
        if layers % new_pp == 0 and world % (tp * new_pp) == 0 and expert_layout_fits:
            out.append(({"trainer.strategy.pipeline_model_parallel_size": new_pp}, f"pipeline parallel {new_pp}",
                        COST["pp"] ** factor.bit_length()))
    for factor in (2, 4, 8) if experts else ():
        new_ep = ep * factor
        if experts % new_ep == 0 and world % (etp * new_ep * pp) == 0:
            out.append(({"trainer.strategy.expert_model_parallel_size": new_ep}, f"expert parallel {new_ep}",
                        COST["ep"] ** factor.bit_length()))
    if get("optim.config.use_distributed_optimizer") and not get("optim.config.optimizer_cpu_offload"):
        out.append(({"optim.config.optimizer_cpu_offload": True, "optim.config.optimizer_offload_fraction": 1.0},
                    "optimizer state offloaded to the CPU", COST["offload"]))
    step = 2 if get("data.micro_batch_size", 1) % 2 == 0 and micro > 2 else 1
    if micro > 1 and micro - step >= 1:
        smaller = max(step, micro // 2)
        out.append(({"data.micro_batch_size": smaller}, f"micro batch {smaller}", COST["micro_batch"]))
    return out


def suggestions(config, plan, gpu: str, model_name: str, fused_attention: bool | None = None,
                limit: int = 3) -> list[Suggestion]:
    """Single changes first; if none fits, pairs of them. Cheapest (by assumed step time) first."""
    from planning.plan import plan_config, with_overrides

    singles = _candidates(config)
    tried = [(overrides, why, cost) for overrides, why, cost in singles]
    plan_one = lambda candidate: plan_config(candidate, gpu=gpu, model_name=model_name,  # noqa: E731
                                             fused_attention=fused_attention, suggest=False)
    found = _fitting(config, tried, plan_one, with_overrides)
    if not found:
        pairs = []
        for i, (first, why_first, cost_first) in enumerate(singles):
            for second, why_second, cost_second in singles[i + 1:]:
                if set(first) & set(second):
                    continue
                pairs.append(({**first, **second}, f"{why_first} and {why_second}", cost_first * cost_second))
        found = _fitting(config, pairs, plan_one, with_overrides)
    return sorted(found, key=lambda s: (s.cost, -s.spare_bytes))[:limit]


def _fitting(config, candidates, plan_one, with_overrides) -> list[Suggestion]:
    fitting = []
    for overrides, why, cost in candidates:
        try:
            candidate = plan_one(with_overrides(config, overrides))
        except (ValueError, ZeroDivisionError, AttributeError):
            continue
        if candidate.fits:
            seconds = candidate.timing.step_seconds * cost if candidate.timing else None
            fitting.append(Suggestion(overrides, why, cost, candidate.total_bytes, candidate.spare_bytes, seconds))
    return fitting
