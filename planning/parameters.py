"""Exact parameter counts of the megatron GPT model each tensor/pipeline rank builds, LoRA adapters included.

The formulas follow megatron-core's local layer spec (what these recipes build without Transformer Engine;
Transformer Engine's spec fuses the layer norm into linear_qkv/linear_fc1 with the same counts) and NeMo's
ParallelLinearAdapter. tests/planning/test_parameters.py checks them against the modules megatron builds
for every catalog model and layout, and the whole-model counts against Hugging Face's.
"""

from dataclasses import dataclass

from planning.layout import ModelShape

LORA_TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")


def _linear_shapes(model: ModelShape) -> dict[str, tuple[int, int, bool]]:
    """(input size, output size, column-parallel) of each linear of one transformer layer."""
    qkv_out = model.query_width + 2 * model.kv_width
    fc1_out = model.ffn_hidden * (2 if model.gated_mlp else 1)
    return {
        "linear_qkv": (model.hidden, qkv_out, True),
        "linear_proj": (model.query_width, model.hidden, False),
        "linear_fc1": (model.hidden, fc1_out, True),
        "linear_fc2": (model.ffn_hidden, model.hidden, False),
    }


def layer_parameters(model: ModelShape, tp: int) -> int:
    """One transformer layer on one tensor-parallel rank: column-parallel linears split their outputs (and
    biases), row-parallel ones their inputs (their bias stays whole); norms are replicated."""
    count = 0
    for name, (inputs, outputs, column) in _linear_shapes(model).items():
        count += inputs * outputs // tp
        has_bias = model.linear_bias or (name == "linear_qkv" and model.qkv_bias)
        if has_bias:
            count += outputs // tp if column else outputs
    norm = model.hidden * (2 if model.layernorm_has_bias else 1)
    return count + 2 * norm


def lora_layer_parameters(model: ModelShape, tp: int, rank: int, targets=LORA_TARGETS) -> int:
    """NeMo's ParallelLinearAdapter on one rank: for a column-parallel base, linear_in is column-parallel over
    the rank dimension (rank/tp x in) and linear_out column-parallel (out/tp x rank); for a row-parallel base,
    linear_in is row-parallel (rank x in/tp) and linear_out column-parallel (out/tp x rank)."""
    if rank % tp:
        raise ValueError(f"LoRA rank {rank} must be divisible by tensor parallel size {tp} (NeMo splits it over TP)")
    count = 0
    for name, (inputs, outputs, column) in _linear_shapes(model).items():
        if name not in targets:
            continue
        linear_in = (rank // tp) * inputs if column else rank * (inputs // tp)
        count += linear_in + (outputs // tp) * rank
    return count


@dataclass(frozen=True)
class StageParameters:
    """Parameters held by one (tensor, pipeline) rank."""

    layers: int
    layer_weights: int
    embedding: int
    output_layer: int
    final_norm: int
    adapters: int

    @property
    def base(self) -> int:
        return self.layer_weights + self.embedding + self.output_layer + self.final_norm

    @property
    def total(self) -> int:
        return self.base + self.adapters


def layers_on_stage(num_layers: int, pp: int) -> int:
    """megatron splits the layers evenly over pipeline stages (validation requires it to divide)."""
    return num_layers // pp


def stage_parameters(model: ModelShape, tp: int = 1, pp: int = 1, pp_rank: int = 0,
                     lora_rank: int | None = None, lora_targets=LORA_TARGETS) -> StageParameters:
    """The first stage holds the word embeddings, the last the final norm and the output layer (with tied
    embeddings and PP > 1 the last stage keeps its own copy of the embedding as output weight)."""
    layers = layers_on_stage(model.layers, pp)
    vocab_rows = model.padded_vocab(tp) // tp
    first, last = pp_rank == 0, pp_rank == pp - 1
    output_layer = vocab_rows * model.hidden if last and (not model.tied_embeddings or pp > 1) else 0
    norm = model.hidden * (2 if model.layernorm_has_bias else 1)
    adapters = layers * lora_layer_parameters(model, tp, lora_rank, lora_targets) if lora_rank else 0
    return StageParameters(
        layers=layers,
        layer_weights=layers * layer_parameters(model, tp),
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
    return model.layers * layer_parameters(model, 1) + embedding + norm
