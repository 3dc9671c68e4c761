"""A plan: the memory of the most loaded GPU against its capacity, FLOPs, time and cost of a recipe config."""

import copy
import importlib
from dataclasses import dataclass, field

import fiddle as fdl

from models.catalog import MODELS
from planning import throughput
from planning.flops import StepFlops, formula_name, step_flops
from planning.hardware import GIB, Accelerator, accelerator
from planning.layout import Layout, ModelShape, layout, model_shape, read
from planning.memory import StageMemory, most_loaded_stage
from planning.vocabularies import VOCABULARY

DEFAULT_GPU = "h100-80gb"


def catalog_model(config) -> str:
    """The catalog row a config's model was made from: same config class and shape."""
    model_config = config.model.config
    dotted = f"{fdl.get_callable(model_config).__module__}.{fdl.get_callable(model_config).__qualname__}"
    for name, spec in MODELS.items():
        same_class = spec.config_class.rsplit(".", 1)[-1] == dotted.rsplit(".", 1)[-1]
        same_shape = all(read(model_config, key) == value for key, value in spec.config_overrides.items()
                         if key in ("num_layers", "hidden_size"))
        if same_class and same_shape:
            return name
    raise KeyError(f"no catalog model matches {dotted}")


def recipe_target_gpu(recipe_module: str) -> str | None:
    """The GPU a recipe module says its recipes are sized for (its TARGET_GPU), None for CPU recipes."""
    return getattr(importlib.import_module(recipe_module), "TARGET_GPU", None)


@dataclass(frozen=True)
class Timing:
    mfu: float
    mfu_source: str
    step_seconds: float
    tokens_per_second_per_gpu: float
    steps: int | None
    steps_note: str
    # DPO with reference="precomputed" scores every pair once with the starting weights before step 1: a forward
    # pass, a third of a training step's FLOPs, over the run's samples.
    reference_prepass: bool = False

    @property
    def hours(self) -> float | None:
        if self.steps is None:
            return None
        return self.steps * self.step_seconds * (1 + (1 / 3 if self.reference_prepass else 0)) / 3600


@dataclass(frozen=True)
class Plan:
    model_name: str
    model: ModelShape
    layout: Layout
    device: Accelerator
    stage: StageMemory
    flops: StepFlops
    timing: Timing | None
    suggestions: tuple = field(default=())

    @property
    def total_bytes(self) -> int:
        return self.stage.total * (self.layout.devices if self.on_cpu else 1)

    @property
    def on_cpu(self) -> bool:
        return self.device.name == "cpu"

    @property
    def spare_bytes(self) -> int:
        return self.device.memory_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        return self.spare_bytes >= 0

    @property
    def spare_fraction(self) -> float:
        return self.spare_bytes / self.device.memory_bytes

    def verdict(self) -> str:
        if self.fits:
            return f"fits with {self.spare_bytes / GIB:.1f} GiB to spare"
        return f"does not fit by {-self.spare_bytes / GIB:.1f} GiB"

    def summary_line(self) -> str:
        where = f"{self.device.name}" if not self.on_cpu else f"this machine, {self.layout.devices} process(es)"
        line = (f"plan: {self.total_bytes / GIB:.1f} of {self.device.memory_gib:.1f} GiB per "
                f"{'GPU' if not self.on_cpu else 'machine'} ({where}), {self.verdict()}")
        if self.timing:
            line += (f"; {self.timing.step_seconds:.2f} s/step, {self.timing.tokens_per_second_per_gpu:,.0f} tok/s/GPU")
            if self.timing.hours is not None:
                gpu_hours = self.timing.hours * self.layout.world
                line += f", {self.timing.steps:,} steps: {self.timing.hours:.1f} h, {gpu_hours:,.0f} GPU-hours"
        return line

    def breakdown(self) -> list[str]:
        stage = self.stage
        lay = self.layout
        rows = [f"most loaded {'process' if self.on_cpu else 'GPU'}: pipeline stage {stage.pp_rank} of {lay.pp} "
                f"(TP {lay.tp} x PP {lay.pp}{f' (virtual {lay.vp})' if lay.vp else ''} x CP {lay.cp} x DP {lay.dp}"
                f"{', sequence parallel' if lay.sequence_parallel else ''}; micro batch {lay.micro_batch} x seq "
                f"{lay.seq_length}, {lay.micro_batches_per_step} micro batches per step)"]
        for line in stage.lines:
            count = f"{line.count:>15,} " if line.count is not None else " " * 16
            rows.append(f"  {line.name:<30}{count}{line.bytes / GIB:>8.2f} GiB  {line.note}")
        if self.on_cpu and lay.devices > 1:
            rows.append(f"  x {lay.devices} processes on this machine")
        rows.append(f"  {'total':<30}{'':16}{self.total_bytes / GIB:>8.2f} GiB  of {self.device.memory_gib:.1f} GiB "
                    f"({self.device.description}): {self.verdict()}")
        return rows

    def render(self) -> str:
        lay = self.layout
        rows = [f"plan for {self.model_name} on {lay.world} x {self.device.description}"] + self.breakdown()
        rows.append(f"model FLOPs per step: {self.flops.model_flops:.3e} ({self.flops.tokens:,} tokens; NeMo's "
                    f"{formula_name(self.model)} formula{', LoRA: 2/3, no weight gradients for the frozen base' if lay.lora else ''})")
        if self.timing:
            t = self.timing
            rows.append(f"at MFU {t.mfu:.1%} ({t.mfu_source}): {t.step_seconds:.2f} s/step, "
                        f"{t.tokens_per_second_per_gpu:,.0f} tokens/s/GPU")
            if t.hours is not None:
                prepass = ", with DPO's reference pre-pass (one forward over the pairs)" if t.reference_prepass else ""
                rows.append(f"run: {t.steps:,} steps ({t.steps_note}){prepass}: {t.hours:.2f} h, "
                            f"{t.hours * lay.world:,.1f} GPU-hours")
            else:
                rows.append(f"run: {t.steps_note}")
        for suggestion in self.suggestions:
            rows.append(suggestion.describe())
        return "\n".join(rows)


def _steps(config, lay: Layout, steps: int | None) -> tuple[int | None, str]:
    if steps is not None:
        return steps, "given"
    if lay.max_steps and lay.max_steps > 0:
        return lay.max_steps, "trainer.max_steps"
    # One epoch (-1) is counted by the launcher from the prepared data and passed in as `steps`.
    return None, "one epoch of data not counted yet: time per step only"


def assumed_mfu(model_name: str, lora: bool, gpu: str) -> tuple[float, str]:
    """The MFU a plan assumes, under its own FLOPs count, and where it comes from."""
    published = throughput.closest(model_name, lora, gpu)
    published_model = _shape_of(published.model)
    published_layout = Layout(global_batch=published.global_batch, seq_length=published.seq_length,
                              lora_rank=16 if published.lora else None)
    per_token = step_flops(published_model, published_layout).model_flops / (published.global_batch * published.seq_length)
    mfu = published.tokens_per_second_per_gpu * per_token / accelerator(published.gpu).peak_bf16_flops
    source = published.source
    if (published.model, published.gpu) != (model_name, gpu):
        source = f"borrowed from {published.model} on {published.gpu}: {published.source}"
    return mfu, source


def _timing(model_name: str, model: ModelShape, lay: Layout, device: Accelerator, flops: StepFlops,
            config, steps: int | None) -> Timing | None:
    if device.peak_bf16_flops == 0:
        return None
    mfu, source = assumed_mfu(model_name, lay.lora, device.name)
    step_seconds = flops.model_flops / (lay.world * device.peak_bf16_flops * mfu)
    run_steps, note = _steps(config, lay, steps)
    callbacks = read(config, "trainer.callbacks", []) or []
    prepass = any(read(callback, "reference") == "precomputed" for callback in callbacks)
    return Timing(mfu, source, step_seconds, flops.tokens / step_seconds / lay.world, run_steps, note, prepass)


def _shape_of(model_name: str) -> ModelShape:
    from models.catalog import MODELS as catalog

    spec = catalog[model_name]
    config_class = _dotted(spec.config_class)
    return model_shape(fdl.Config(config_class, **spec.config_overrides), VOCABULARY[model_name])


def _dotted(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def plan_config(config, *, gpu: str | None = None, model_name: str | None = None, steps: int | None = None,
                fused_attention: bool | None = None, suggest: bool = True) -> Plan:
    """Plans a recipe config (a nemo_run.Partial) on `gpu` (a planning.hardware.GPUS name; default h100-80gb) or,
    for a CPU recipe, on this machine. `steps`: the run's length when the caller already knows it."""
    from planning.suggestions import suggestions

    model_name = model_name or catalog_model(config)
    lay = layout(config, fused_attention)
    on_cpu = lay.accelerator == "cpu"
    device = accelerator("cpu" if on_cpu else (gpu or DEFAULT_GPU))
    model = model_shape(config.model.config, VOCABULARY.get(model_name, 0))
    stage = most_loaded_stage(model, lay, on_cpu=on_cpu)
    flops = step_flops(model, lay)
    result = Plan(model_name, model, lay, device, stage, flops, _timing(model_name, model, lay, device, flops, config, steps))
    if suggest and not result.fits and not on_cpu:
        result = Plan(**{**result.__dict__, "suggestions": tuple(suggestions(config, result, gpu=device.name, model_name=model_name,
                                                                         fused_attention=fused_attention))})
    return result


def with_overrides(config, overrides: dict):
    """A copy of `config` with dotted-path values set (the same keys `launch.py key=value` takes)."""
    changed = copy.deepcopy(config)
    for path, value in overrides.items():
        *parents, name = path.split(".")
        node = changed
        for parent in parents:
            node = getattr(node, parent)
        setattr(node, name, value)
    return changed
