"""Checks a whole recipe config before anything expensive starts. Each rule reads the values the run
will use (class defaults included) and explains a failure by the dotted paths of the fields involved.
"""

import importlib.util
from dataclasses import dataclass

from recipes.errors import UserError
from recipes.preference_validation import check_preference

TP = "trainer.strategy.tensor_model_parallel_size"
PP = "trainer.strategy.pipeline_model_parallel_size"
VPP = "trainer.strategy.virtual_pipeline_model_parallel_size"
CP = "trainer.strategy.context_parallel_size"
SP = "trainer.strategy.sequence_parallel"
NODES = "trainer.num_nodes"
DEVICES = "trainer.devices"
GLOBAL_BATCH = "data.global_batch_size"
MICRO_BATCH = "data.micro_batch_size"
HEADS = "model.config.num_attention_heads"
QUERY_GROUPS = "model.config.num_query_groups"
LAYERS = "model.config.num_layers"
MODEL_SEQ = "model.config.seq_length"
DATA_SEQ = "data.seq_length"
FP8 = "trainer.plugins.fp8"


class ConfigInvalid(UserError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class View:
    """Reads dotted paths from a fiddle config; missing paths read as None."""

    config: object

    def __call__(self, path: str, default=None):
        node = self.config
        for name in path.split("."):
            node = getattr(node, name, None)
            if node is None:
                return default
        return node


def has_transformer_engine() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


def _parallel_sizes(get: View):
    return get(TP, 1), get(PP, 1), get(CP, 1)


def check_world_size(get: View):
    tp, pp, cp = _parallel_sizes(get)
    world = get(NODES, 1) * get(DEVICES, 1)
    if world % (tp * pp * cp):
        yield (
            f"world size {NODES} x {DEVICES} = {world} must be divisible by {TP} x {PP} x {CP} = {tp}x{pp}x{cp} = {tp * pp * cp}"
        )


def check_global_batch(get: View):
    tp, pp, cp = _parallel_sizes(get)
    world = get(NODES, 1) * get(DEVICES, 1)
    if world % (tp * pp * cp):
        return  # reported by check_world_size
    data_parallel = world // (tp * pp * cp)
    global_batch, micro_batch = get(GLOBAL_BATCH), get(MICRO_BATCH)
    if global_batch is None or micro_batch is None:
        return
    if global_batch % (micro_batch * data_parallel):
        yield (
            f"{GLOBAL_BATCH} ({global_batch}) must be divisible by {MICRO_BATCH} x data-parallel size "
            f"({micro_batch} x {data_parallel} = {micro_batch * data_parallel})"
        )


def check_heads(get: View):
    tp = get(TP, 1)
    heads = get(HEADS)
    if heads is not None and heads % tp:
        yield f"{TP} must divide {HEADS} ({heads} % {tp} != 0)"
    groups = get(QUERY_GROUPS)
    if groups is not None and groups % tp:
        yield f"{TP} must divide {QUERY_GROUPS} ({groups} % {tp} != 0)"


def check_context_parallel(get: View):
    cp = get(CP, 1)
    seq = get(DATA_SEQ) or get(MODEL_SEQ)
    if cp > 1 and seq is not None and seq % (2 * cp):
        yield f"with {CP}={cp}, the sequence length ({seq}) must be divisible by 2 x {CP} = {2 * cp}"


def check_sequence_lengths(get: View):
    model_seq, data_seq = get(MODEL_SEQ), get(DATA_SEQ)
    if model_seq is not None and data_seq is not None and model_seq != data_seq:
        yield f"{DATA_SEQ} ({data_seq}) must equal {MODEL_SEQ} ({model_seq})"


def check_virtual_pipeline(get: View):
    vpp, pp, layers = get(VPP), get(PP, 1), get(LAYERS)
    if vpp is None:
        return
    if pp <= 1:
        yield f"{VPP}={vpp} needs {PP} > 1 (it is {pp})"
    elif layers is not None and layers % (pp * vpp):
        yield f"{LAYERS} ({layers}) must split evenly into {PP} x {VPP} = {pp}x{vpp} = {pp * vpp} stages"


def check_sequence_parallel(get: View):
    if get(SP) and get(TP, 1) <= 1:
        yield f"{SP}=True needs {TP} > 1 (it is {get(TP, 1)})"


def check_fp8(get: View):
    if get(FP8) and not has_transformer_engine():
        yield f"{FP8}={get(FP8)!r} needs Transformer Engine (pip install -e .[gpu] on a CUDA machine)"
    if get(FP8) and get("trainer.accelerator") == "cpu":
        yield f"{FP8}={get(FP8)!r} needs a GPU (trainer.accelerator is 'cpu')"


def check_cpu_offloading(get: View):
    if not get("model.config.cpu_offloading"):
        return
    layers, offloaded = get(LAYERS), get("model.config.cpu_offloading_num_layers", 0)
    if not (get("model.config.cpu_offloading_activations") or get("model.config.cpu_offloading_weights")):
        yield "model.config.cpu_offloading=True offloads nothing: set model.config.cpu_offloading_activations or model.config.cpu_offloading_weights"
    if not 0 < offloaded < (layers or offloaded + 1):
        yield f"model.config.cpu_offloading_num_layers ({offloaded}) must be between 1 and {LAYERS} - 1 ({(layers or 0) - 1})"


def check_recompute(get: View):
    granularity, method = get("model.config.recompute_granularity"), get("model.config.recompute_method")
    if granularity not in (None, "selective", "full"):
        yield f"model.config.recompute_granularity must be 'selective', 'full' or None, not {granularity!r}"
    if method not in (None, "uniform", "block"):
        yield f"model.config.recompute_method must be 'uniform', 'block' or None, not {method!r}"
    if granularity == "full" and method is None:
        yield "model.config.recompute_granularity='full' needs model.config.recompute_method ('uniform' or 'block')"
    if method is not None and granularity != "full":
        yield f"model.config.recompute_method={method!r} applies only with model.config.recompute_granularity='full'"


def check_optimizer_offload(get: View):
    fraction = get("optim.config.optimizer_offload_fraction", 0.0)
    if not 0.0 <= fraction <= 1.0:
        yield f"optim.config.optimizer_offload_fraction ({fraction}) must be between 0 and 1"
    if get("optim.config.optimizer_cpu_offload") and not get("optim.config.use_distributed_optimizer"):
        yield "optim.config.optimizer_cpu_offload=True needs optim.config.use_distributed_optimizer=True"


def check_max_steps(get: View):
    steps = get("trainer.max_steps")
    if steps is not None and steps != -1 and steps <= 0:
        yield f"trainer.max_steps ({steps}) must be positive, or -1 for one epoch over the data"


def check_packed_sequences(get: View):
    size = get("data.packed_sequence_specs.packed_sequence_size")
    if size is None:
        return
    if get(MICRO_BATCH) != 1:
        yield f"packed sequences need {MICRO_BATCH}=1 (a packed row already holds many sequences), not {get(MICRO_BATCH)}"
    if get(DATA_SEQ) is not None and size != get(DATA_SEQ):
        yield f"data.packed_sequence_specs.packed_sequence_size ({size}) must equal {DATA_SEQ} ({get(DATA_SEQ)})"


RULES = [
    check_max_steps,
    check_world_size,
    check_global_batch,
    check_heads,
    check_context_parallel,
    check_sequence_lengths,
    check_virtual_pipeline,
    check_sequence_parallel,
    check_fp8,
    check_cpu_offloading,
    check_recompute,
    check_optimizer_offload,
    check_packed_sequences,
    check_preference,
]


def problems(config) -> list[str]:
    get = View(config)
    return [message for rule in RULES for message in rule(get)]


def validate(config) -> None:
    found = problems(config)
    if found:
        raise ConfigInvalid(found)
