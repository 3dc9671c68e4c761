"""Validation rules on the settings every recipe has: parallel layout, batch sizes, sequence lengths,
fp8, offloading, recompute, schedule, packed sequences."""

from common import transformer_engine
from launcher.validation import View, rule

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


def _parallel_sizes(get: View):
    return get(TP, 1), get(PP, 1), get(CP, 1)


@rule
def check_max_steps(get: View):
    steps = get("trainer.max_steps")
    if steps is not None and steps != -1 and steps <= 0:
        yield f"trainer.max_steps ({steps}) must be positive, or -1 for one epoch over the data"


@rule
def check_world_size(get: View):
    tp, pp, cp = _parallel_sizes(get)
    world = get(NODES, 1) * get(DEVICES, 1)
    if world % (tp * pp * cp):
        yield (
            f"world size {NODES} x {DEVICES} = {world} must be divisible by {TP} x {PP} x {CP} = {tp}x{pp}x{cp} = {tp * pp * cp}"
        )


@rule
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


@rule
def check_heads(get: View):
    tp = get(TP, 1)
    heads = get(HEADS)
    if heads is not None and heads % tp:
        yield f"{TP} must divide {HEADS} ({heads} % {tp} != 0)"
    groups = get(QUERY_GROUPS)
    if groups is not None and groups % tp:
        yield f"{TP} must divide {QUERY_GROUPS} ({groups} % {tp} != 0)"


@rule
def check_context_parallel(get: View):
    cp = get(CP, 1)
    seq = get(DATA_SEQ) or get(MODEL_SEQ)
    if cp > 1 and seq is not None and seq % (2 * cp):
        yield f"with {CP}={cp}, the sequence length ({seq}) must be divisible by 2 x {CP} = {2 * cp}"


@rule
def check_sequence_lengths(get: View):
    model_seq, data_seq = get(MODEL_SEQ), get(DATA_SEQ)
    if model_seq is not None and data_seq is not None and model_seq != data_seq:
        yield f"{DATA_SEQ} ({data_seq}) must equal {MODEL_SEQ} ({model_seq})"


@rule
def check_virtual_pipeline(get: View):
    vpp, pp, layers = get(VPP), get(PP, 1), get(LAYERS)
    if vpp is None:
        return
    if pp <= 1:
        yield f"{VPP}={vpp} needs {PP} > 1 (it is {pp})"
    elif layers is not None and layers % (pp * vpp):
        yield f"{LAYERS} ({layers}) must split evenly into {PP} x {VPP} = {pp}x{vpp} = {pp * vpp} stages"


@rule
def check_sequence_parallel(get: View):
    if get(SP) and get(TP, 1) <= 1:
        yield f"{SP}=True needs {TP} > 1 (it is {get(TP, 1)})"


@rule
def check_fp8(get: View):
    if get(FP8) and not transformer_engine.is_installed():
        yield f"{FP8}={get(FP8)!r} needs Transformer Engine (pip install -e .[gpu] on a CUDA machine)"
    if get(FP8) and get("trainer.accelerator") == "cpu":
        yield f"{FP8}={get(FP8)!r} needs a GPU (trainer.accelerator is 'cpu')"


@rule
def check_cpu_offloading(get: View):
    if not get("model.config.cpu_offloading"):
        return
    layers, offloaded = get(LAYERS), get("model.config.cpu_offloading_num_layers", 0)
    if not (get("model.config.cpu_offloading_activations") or get("model.config.cpu_offloading_weights")):
        yield "model.config.cpu_offloading=True offloads nothing: set model.config.cpu_offloading_activations or model.config.cpu_offloading_weights"
    if not 0 < offloaded < (layers or offloaded + 1):
        yield f"model.config.cpu_offloading_num_layers ({offloaded}) must be between 1 and {LAYERS} - 1 ({(layers or 0) - 1})"


@rule
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


@rule
def check_optimizer_offload(get: View):
    fraction = get("optim.config.optimizer_offload_fraction", 0.0)
    if not 0.0 <= fraction <= 1.0:
        yield f"optim.config.optimizer_offload_fraction ({fraction}) must be between 0 and 1"
    if get("optim.config.optimizer_cpu_offload") and not get("optim.config.use_distributed_optimizer"):
        yield "optim.config.optimizer_cpu_offload=True needs optim.config.use_distributed_optimizer=True"


@rule
def check_packed_sequences(get: View):
    size = get.optional("data.packed_sequence_specs.packed_sequence_size")
    if size is None:
        return
    if get(MICRO_BATCH) != 1:
        yield f"packed sequences need {MICRO_BATCH}=1 (a packed row already holds many sequences), not {get(MICRO_BATCH)}"
    if get(DATA_SEQ) is not None and size != get(DATA_SEQ):
        yield f"data.packed_sequence_specs.packed_sequence_size ({size}) must equal {DATA_SEQ} ({get(DATA_SEQ)})"
