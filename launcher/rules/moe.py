"""Validation rules for mixture-of-experts models: the expert layout megatron-core's parallel state accepts, and the
MoE settings its TransformerConfig, MoE layer, router and token dispatchers refuse at model build or in the first
step, reported here before anything starts."""

from launcher.rules import settings
from launcher.validation import View, rule

EXPERTS = "model.config.num_moe_experts"
EP = "trainer.strategy.expert_model_parallel_size"
ETP = "trainer.strategy.expert_tensor_parallel_size"
TOPK = "model.config.moe_router_topk"
DISPATCHER = "model.config.moe_token_dispatcher_type"
LOAD_BALANCING = "model.config.moe_router_load_balancing_type"
AUX_LOSS = "model.config.moe_aux_loss_coeff"
CAPACITY = "model.config.moe_expert_capacity_factor"
PAD_TO_CAPACITY = "model.config.moe_pad_expert_input_to_capacity"
DROP_POLICY = "model.config.moe_token_drop_policy"
GROUPED_GEMM = "model.config.moe_grouped_gemm"
PERMUTE_FUSION = "model.config.moe_permute_fusion"
PRE_SOFTMAX = "model.config.moe_router_pre_softmax"
SCORE_FUNCTION = "model.config.moe_router_score_function"
EXPERT_BIAS = "model.config.moe_router_enable_expert_bias"
DEEPEP = "model.config.moe_enable_deepep"
FFN = "model.config.ffn_hidden_size"
MOE_FFN = "model.config.moe_ffn_hidden_size"
LINEAR_BIAS = "model.config.add_bias_linear"

DISPATCHERS = ("allgather", "alltoall", "flex")
LOAD_BALANCING_TYPES = ("aux_loss", "seq_aux_loss", "global_aux_loss", "sinkhorn", "none")
# megatron-core drops tokens over capacity only under these load-balancing types.
CAPACITY_LOAD_BALANCING = ("aux_loss", "seq_aux_loss", "global_aux_loss", "none")
DROP_POLICIES = ("probs", "position")


def expert_tensor_parallel(get: View) -> int:
    """megatron-core's expert tensor parallel size: the strategy's, or TP when it is left unset."""
    return get(ETP) or get(settings.TP, 1)


@rule
def check_expert_parallel_needs_experts(get: View):
    if get(EXPERTS) is None and get(EP, 1) > 1:
        yield f"{EP}={get(EP)} needs a mixture-of-experts model ({EXPERTS} is not set)"


@rule
def check_expert_count(get: View):
    experts, ep = get(EXPERTS), get(EP, 1)
    if experts is None:
        return
    if experts <= 0:
        yield f"{EXPERTS} ({experts}) must be positive"
    elif ep < 1 or experts % ep:
        yield f"{EP} ({ep}) must divide {EXPERTS} ({experts}): each expert-parallel rank holds the same number of experts"


@rule
def check_expert_layout(get: View):
    """megatron-core's initialize_model_parallel: the world splits into ETP x EP x PP blocks (expert data parallel)."""
    if get(EXPERTS) is None:
        return
    etp, ep, pp = expert_tensor_parallel(get), get(EP, 1), get(settings.PP, 1)
    world = get(settings.NODES, 1) * get(settings.DEVICES, 1)
    if world % (etp * ep * pp):
        yield (f"world size {settings.NODES} x {settings.DEVICES} = {world} must be divisible by {ETP} x {EP} x "
               f"{settings.PP} = {etp}x{ep}x{pp} = {etp * ep * pp} (megatron-core's expert layout; {ETP} unset means {settings.TP})")


@rule
def check_expert_width(get: View):
    if get(EXPERTS) is None:
        return
    etp = expert_tensor_parallel(get)
    width, key = (get(MOE_FFN), MOE_FFN) if get(MOE_FFN) else (get(FFN), FFN)
    if width % etp:
        yield f"expert tensor parallel ({ETP} = {etp}) must divide {key} ({width}): it splits each expert's MLP"
    if get(LINEAR_BIAS) and etp != 1:
        yield f"{LINEAR_BIAS}=True with {EXPERTS} set needs {ETP}=1 (megatron-core has no expert biases under expert tensor parallel)"


@rule
def check_moe_sequence_parallel(get: View):
    tp = get(settings.TP, 1)
    if get(EXPERTS) is not None and tp > 1 and not get(settings.SP):
        yield (f"{EXPERTS}={get(EXPERTS)} with {settings.TP}={tp} needs {settings.SP}=True "
               f"(megatron-core's MoE layer refuses tensor parallel without it in training)")


@rule
def check_router(get: View):
    experts = get(EXPERTS)
    if experts is None:
        return
    topk = get(TOPK)
    if not 1 <= topk <= experts:
        yield f"{TOPK} ({topk}) must be between 1 and {EXPERTS} ({experts})"
    balancing = get(LOAD_BALANCING)
    if balancing not in LOAD_BALANCING_TYPES:
        yield f"{LOAD_BALANCING} must be one of {', '.join(map(repr, LOAD_BALANCING_TYPES))}, not {balancing!r}"
    coefficient = get(AUX_LOSS)
    if isinstance(coefficient, (int, float)) and coefficient < 0:
        yield f"{AUX_LOSS} ({coefficient}) must be 0 or more"
    if balancing == "sinkhorn" and coefficient:
        yield f"{LOAD_BALANCING}='sinkhorn' needs {AUX_LOSS}=0 (Sinkhorn routing has no auxiliary loss), not {coefficient}"
    if topk == 1 and get(SCORE_FUNCTION) == "softmax" and not get(PRE_SOFTMAX) and balancing != "sinkhorn":
        yield f"{TOPK}=1 needs {PRE_SOFTMAX}=True (a softmax over the one chosen score has no gradient)"
    if get(EXPERT_BIAS) and get(SCORE_FUNCTION) != "sigmoid":
        yield f"{EXPERT_BIAS}=True needs {SCORE_FUNCTION}='sigmoid', not {get(SCORE_FUNCTION)!r}"


@rule
def check_token_dispatch(get: View):
    if get(EXPERTS) is None:
        return
    dispatcher = get(DISPATCHER)
    if dispatcher not in DISPATCHERS:
        yield f"{DISPATCHER} must be one of {', '.join(map(repr, DISPATCHERS))}, not {dispatcher!r}"
    if dispatcher == "flex":
        if not get(DEEPEP):
            yield f"{DISPATCHER}='flex' needs {DEEPEP}=True (DeepEP)"
        if get(settings.TP, 1) * get(EP, 1) == 1:
            yield f"{DISPATCHER}='flex' needs {settings.TP} x {EP} > 1"
        if get(PAD_TO_CAPACITY):
            yield f"{DISPATCHER}='flex' cannot pad to capacity: set {PAD_TO_CAPACITY}=False"
    elif get(DEEPEP):
        yield f"{DEEPEP}=True needs {DISPATCHER}='flex', not {dispatcher!r}"


@rule
def check_capacity(get: View):
    if get(EXPERTS) is None:
        return
    capacity, pad = get(CAPACITY), get(PAD_TO_CAPACITY)
    if capacity is None:
        if pad:
            yield f"{PAD_TO_CAPACITY}=True needs {CAPACITY} (a number > 0; None means dropless)"
        return
    if capacity <= 0:
        yield f"{CAPACITY} ({capacity}) must be > 0, or None for dropless routing"
    if get(LOAD_BALANCING) not in CAPACITY_LOAD_BALANCING:
        yield (f"{CAPACITY}={capacity} needs {LOAD_BALANCING} one of {', '.join(map(repr, CAPACITY_LOAD_BALANCING))}, "
               f"not {get(LOAD_BALANCING)!r}")
    if get(DROP_POLICY) not in DROP_POLICIES:
        yield f"{DROP_POLICY} must be one of {', '.join(map(repr, DROP_POLICIES))}, not {get(DROP_POLICY)!r}"


@rule
def check_moe_kernels(get: View):
    """Grouped GEMM and the fused permutation are Transformer Engine kernels, and TE needs CUDA. A local GPU launch
    without TE switches both off (runtime/machine.py, shown by --dryrun); Slurm nodes are assumed to have TE, as the
    planner assumes; fp8 is checked by settings.check_fp8."""
    if get(EXPERTS) is None or get("trainer.accelerator") != "cpu":
        return
    if get(GROUPED_GEMM):
        yield _needs_transformer_engine(GROUPED_GEMM)
    if get(PERMUTE_FUSION):
        yield _needs_transformer_engine(PERMUTE_FUSION)


def _needs_transformer_engine(key: str) -> str:
    return f"{key}=True needs Transformer Engine, which needs a GPU (trainer.accelerator is 'cpu'): set {key}=False"
