"""Memory of the most loaded GPU: weights, gradients, optimizer state, activations and a stated reserve."""

from dataclasses import dataclass

from planning.activations import StageActivations, stage_activations
from planning.hardware import GIB
from planning.layout import Layout, ModelShape
from planning.parameters import LORA_TARGETS, StageParameters, stage_parameters

# CUDA context and cuBLAS workspaces (~0.5-1 GiB), NCCL communicators and buffers (~1 GiB per group in use),
# and the caching allocator's fragmentation, which grows with what is allocated.
RESERVE_FIXED_BYTES = 3 * GIB
RESERVE_FRAGMENTATION = 0.05
# A CPU run's process: Python, NeMo, megatron and Lightning imported (measured here: ~2.5 GiB resident).
CPU_PROCESS_BYTES = 3 * GIB

ADAM_STATES = 2  # exp_avg, exp_avg_sq
FP32 = 4


@dataclass(frozen=True)
class Line:
    name: str
    bytes: int
    note: str
    count: int | None = None


@dataclass(frozen=True)
class StageMemory:
    pp_rank: int
    parameters: StageParameters
    activations: StageActivations
    lines: tuple[Line, ...]

    @property
    def allocated(self) -> int:
        return sum(line.bytes for line in self.lines if line.name != "reserve")

    @property
    def total(self) -> int:
        return sum(line.bytes for line in self.lines)


def _trainable_lines(trainable: int, layout: Layout, what: str, experts: int = 0) -> list[Line]:
    """Gradients and optimizer state of the trainable parameters, as the run's precision and optimizer keep them.
    `experts`: how many of them are expert weights, whose optimizer state the distributed optimizer shards over
    expert data parallel (world / (ETP x EP x PP)) instead of data parallel x context parallel."""
    weight_bytes = layout.bytes_per_value
    grad_bytes = FP32 if (layout.grad_reduce_in_fp32 or weight_bytes == FP32) else weight_bytes
    # bf16 training keeps fp32 main weights beside the moments; an fp32 run updates its weights directly.
    states = ADAM_STATES + (1 if weight_bytes != FP32 else 0)
    shards = layout.dp * layout.cp if layout.distributed_optimizer else 1
    expert_shards = layout.expert_dp if layout.distributed_optimizer else 1
    on_gpu = 1.0 - layout.optimizer_offload_fraction
    optimizer = int(((trainable - experts) / shards + experts / expert_shards) * states * FP32 * on_gpu)
    note = f"fp32 {'main weights + ' if states == 3 else ''}Adam moments"
    if shards > 1:
        note += f", sharded over data parallel x context parallel ({shards})"
    if experts:
        note += f", experts' over expert data parallel ({expert_shards})"
    if layout.optimizer_offload_fraction:
        note += f", {layout.optimizer_offload_fraction:.0%} offloaded to the CPU"
    return [
        Line(f"gradients ({what})", trainable * grad_bytes, "fp32 gradient buffer" if grad_bytes == FP32 else "gradient buffer", trainable),
        Line(f"optimizer state ({what})", optimizer, note, trainable),
    ]


def stage_memory(model: ModelShape, layout: Layout, pp_rank: int, on_cpu: bool = False) -> StageMemory:
    lora = dict(lora_rank=layout.lora_rank, lora_targets=layout.lora_targets or LORA_TARGETS) if layout.lora else {}
    params = stage_parameters(model, layout.tp, layout.pp, pp_rank, ep=layout.ep, etp=layout.etp, **lora)
    activations = stage_activations(model, layout, params.layers, last_stage=pp_rank == layout.pp - 1, pp_rank=pp_rank)
    e = layout.bytes_per_value
    lines = []
    if layout.lora:
        lines.append(Line("weights (frozen base)", params.base * e, f"{'bf16' if e == 2 else 'fp32'}, no gradients or optimizer state", params.base))
        lines.append(Line("weights (LoRA adapters)", params.adapters * e, f"rank {layout.lora_rank}", params.adapters))
        lines += _trainable_lines(params.adapters, layout, "adapters")
    else:
        experts = (f", of which experts {params.expert_weights:,} ({model.experts // layout.ep} of {model.experts} per layer"
                   f"{f', split over expert tensor parallel {layout.etp}' if layout.etp > 1 else ''})") if model.moe else ""
        lines.append(Line("weights", params.total * e, ("bf16" if e == 2 else "fp32") + experts, params.total))
        lines += _trainable_lines(params.total, layout, "all weights", params.expert_weights)
    attention = "fused attention (Transformer Engine)" if layout.fused_attention else "local attention (keeps s x s scores)"
    recompute = layout.recompute_granularity or "no"
    if layout.recompute_granularity == "full":
        recompute = f"full {layout.recompute_method} x{layout.recompute_num_layers or 1}"
    lines.append(Line(
        "activations", activations.total - activations.output,
        f"{params.layers} layers x {activations.layer / GIB:.3f} GiB/layer/micro batch, {recompute} recompute, "
        f"{attention}, micro batches in flight: {activations.in_flight:g}"
        + (f", {layout.cpu_offloading_layers} layers offloaded to the CPU" if activations.offloaded else ""),
    ))
    if activations.output:
        lines.append(Line("logits and loss", activations.output, "fp32 softmax kept for the cross-entropy backward"))
    allocated = sum(line.bytes for line in lines)
    if on_cpu:
        reserve = Line("reserve", CPU_PROCESS_BYTES, "the Python process with NeMo imported")
    else:
        reserve = Line("reserve", int(RESERVE_FIXED_BYTES + RESERVE_FRAGMENTATION * allocated),
                       "CUDA context, NCCL buffers 3 GiB + 5% fragmentation")
    return StageMemory(pp_rank, params, activations, tuple(lines + [reserve]))


def most_loaded_stage(model: ModelShape, layout: Layout, on_cpu: bool = False) -> StageMemory:
    """Every pipeline stage is planned; the first holds the most micro batches, the last the logits."""
    stages = [stage_memory(model, layout, rank, on_cpu) for rank in range(layout.pp)]
    return max(stages, key=lambda stage: stage.total)
