"""Exact parameter counts of the megatron GPT model each tensor/pipeline/expert rank builds, LoRA adapters included.

The formulas follow megatron-core's local layer spec (what these recipes build without Transformer Engine;
Transformer Engine's spec fuses the layer norm into linear_qkv/linear_fc1 with the same counts) and NeMo's
ParallelLinearAdapter. tests/planning/test_parameters.py checks them against the modules megatron builds
for every catalog model and layout, and the whole-model counts against Hugging Face's.
"""

from dataclasses import dataclass

from planning.layout import ModelShape

LORA_TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")


def _linear_shapes(model: ModelShape) -> dict[str, tuple[int, int, bool]]:
    """(input size, output size, column-parallel) of each linear of one transformer layer that tensor parallel
    splits: attention's, and a dense model's MLP (an MoE layer's experts are split by expert_linear_shapes)."""
    qkv_out = model.query_width + 2 * model.kv_width
    shapes = {
        "linear_qkv": (model.hidden, qkv_out, True),
        "linear_proj": (model.query_width, model.hidden, False),
    }
    if not model.moe:
        shapes["linear_fc1"] = (model.hidden, model.ffn_hidden * (2 if model.gated_mlp else 1), True)
        shapes["linear_fc2"] = (model.ffn_hidden, model.hidden, False)
    return shapes


def expert_linear_shapes(model: ModelShape) -> dict[str, tuple[int, int, bool]]:
    """The same for one expert of an MoE layer (split over expert tensor parallel)."""
    return {
        "linear_fc1": (model.hidden, model.moe_ffn_hidden * (2 if model.gated_mlp else 1), True),
        "linear_fc2": (model.moe_ffn_hidden, model.hidden, False),
    }


def _split_linears(model: ModelShape, shapes: dict, tp: int) -> int:
    """Column-parallel linears split their outputs (and biases), row-parallel ones their inputs (their bias
    stays whole)."""
    count = 0
    for name, (inputs, outputs, column) in shapes.items():
        count += inputs * outputs // tp
        has_bias = model.linear_bias or (name == "linear_qkv" and model.qkv_bias)
        if has_bias:
            count += outputs // tp if column else outputs
    return count


def layer_parameters(model: ModelShape, tp: int) -> int:
    """One transformer layer on one tensor-parallel rank, its experts apart (expert_layer_parameters): the
    linears tensor parallel splits, the replicated norms (and Qwen3's per-head query/key norms), and an MoE
    layer's router (one row per expert, replicated)."""
    norm = model.hidden * (2 if model.layernorm_has_bias else 1)
    qk_norms = 2 * model.kv_channels if model.qk_layernorm else 0
    router = model.experts * model.hidden
    return _split_linears(model, _linear_shapes(model), tp) + 2 * norm + qk_norms + router


def expert_layer_parameters(model: ModelShape, ep: int = 1, etp: int = 1) -> int:
    """The experts of one MoE layer on one rank: experts / EP of them, each split over ETP (0 for a dense model)."""
    if not model.moe:
        return 0
    return model.experts // ep * _split_linears(model, expert_linear_shapes(model), etp)


def _adapters(shapes: dict, tp: int, rank: int, targets) -> int:
    count = 0
    for name, (inputs, outputs, column) in shapes.items():
        if name not in targets:
            continue
        linear_in = (rank // tp) * inputs if column else rank * (inputs // tp)
        count += linear_in + (outputs // tp) * rank
    return count


def lora_layer_parameters(model: ModelShape, tp: int, rank: int, targets=LORA_TARGETS, ep: int = 1) -> int:
    """NeMo's ParallelLinearAdapter on one rank: for a column-parallel base, linear_in is column-parallel over
    the rank dimension (rank/tp x in) and linear_out column-parallel (out/tp x rank); for a row-parallel base,
    linear_in is row-parallel (rank x in/tp) and linear_out column-parallel (out/tp x rank). On an MoE layer
    linear_fc1/linear_fc2 name every local expert's; NeMo splits those adapters over TP too, whatever the expert
    tensor parallel size (the MoE recipes adapt attention only: recipes/blocks.py)."""
    if rank % tp:
        raise ValueError(f"LoRA rank {rank} must be divisible by tensor parallel size {tp} (NeMo splits it over TP)")
    count = _adapters(_linear_shapes(model), tp, rank, targets)
    if model.moe:
        count += model.experts // ep * _adapters(expert_linear_shapes(model), tp, rank, targets)
    return count


@dataclass(frozen=True)
class StageParameters:
    """Parameters held by one (tensor, pipeline) rank."""

    layers: int
    layer_weights: int  # everything of the layers but the experts
    embedding: int
    output_layer: int
    final_norm: int
    adapters: int
    expert_weights: int = 0  # the experts of the stage's MoE layers: sharded over expert data parallel, not DP

    @property
    def base(self) -> int:
        return self.layer_weights + self.expert_weights + self.embedding + self.output_layer + self.final_norm

    @property
    def total(self) -> int:
        return self.base + self.adapters


def layers_on_stage(num_layers: int, pp: int) -> int:
    """megatron splits the layers evenly over pipeline stages (validation requires it to divide)."""
    return num_layers // pp


def stage_parameters(model: ModelShape, tp: int = 1, pp: int = 1, pp_rank: int = 0,
                     lora_rank: int | None = None, lora_targets=LORA_TARGETS, ep: int = 1, etp: int | None = None) -> StageParameters:
    """The first stage holds the word embeddings, the last the final norm and the output layer (with tied
    embeddings and PP > 1 the last stage keeps its own copy of the embedding as output weight)."""
    layers = layers_on_stage(model.layers, pp)
    vocab_rows = model.padded_vocab(tp) // tp
    first, last = pp_rank == 0, pp_rank == pp - 1
    output_layer = vocab_rows * model.hidden if last and (not model.tied_embeddings or pp > 1) else 0
    norm = model.hidden * (2 if model.layernorm_has_bias else 1)
    etp = tp if etp is None else etp  # megatron-core's default expert tensor parallel size
    adapters = layers * lora_layer_parameters(model, tp, lora_rank, lora_targets, ep) if lora_rank else 0
    return StageParameters(
        layers=layers,
        layer_weights=layers * layer_parameters(model, tp),
        expert_weights=layers * expert_layer_parameters(model, ep, etp),
        embedding=vocab_rows * model.hidden if first else 0,
        output_layer=output_layer,
        final_norm=norm if last else 0,
        adapters=adapters,
    )


def whole_model_parameters(model: ModelShape, padded: bool = False) -> int:
    """Every parameter once (tied embeddings counted once), as Hugging Face counts them: unpadded vocabulary."""
    vocab = model.padded_vocab(1) if padded else model.vocab
    embedding = vocab * model.hidden * (1 if model.tied_embeddings else 2)
    norm = model.hidden * (2 if model.layernorm_has_bias else 1)
    return model.layers * (layer_parameters(model, 1) + expert_layer_parameters(model)) + embedding + norm
