"""Bytes of activations autograd keeps for backward, per micro batch: one transformer layer, the output layer
and loss, and a pipeline stage's total with the micro batches it holds in flight.

Each term names the tensor megatron-core's local layer spec saves (tests/planning/test_activations.py measures
them with saved-tensors hooks on CPU and finds the same bytes). `fused_attention` models Transformer Engine's
layer spec (a GPU with TE): its fused attention keeps q, k, v and the softmax statistics instead of the s x s
probabilities, LayerNormLinear keeps the norm's input and output (not a third normalized copy), and the fused
SwiGLU keeps linear_fc1's output only (TE's saved tensors; not measurable without a GPU, checked on one by
bench/gpu).
"""

import math
from dataclasses import dataclass

from planning.layout import Layout, ModelShape

FP32 = 4
INT64 = 8


@dataclass(frozen=True)
class LayerTerms:
    """Bytes one transformer layer keeps for one micro batch on one rank, by what keeps them."""

    norms: int  # two RMSNorms: input, normalized input, 1/rms each (torch's RMSNorm)
    linear_inputs: int  # inputs of linear_qkv and linear_fc1 (sharded under sequence parallel)
    rotary: int  # cos/sin for q and k
    attention: int  # local: q, k and v expanded to every head, and the s x s probabilities; fused: q, k, v, stats
    attention_output: int  # the input of linear_proj
    mlp: int  # linear_fc1's output (both halves), SiLU's output, the product that feeds linear_fc2; MoE: moe_layer_bytes

    @property
    def total(self) -> int:
        return self.norms + self.linear_inputs + self.rotary + self.attention + self.attention_output + self.mlp


def _sizes(model: ModelShape, layout: Layout):
    seq = layout.seq_length // layout.cp
    tokens = seq * layout.micro_batch
    sequence_shard = layout.tp if layout.sequence_parallel else 1
    return seq, tokens, sequence_shard, layout.bytes_per_value


def layer_terms(model: ModelShape, layout: Layout) -> LayerTerms:
    """One layer, stored in full (no recompute)."""
    seq, tokens, shard, e = _sizes(model, layout)
    tp = layout.tp
    hidden_saved = tokens * model.hidden * e // shard
    heads, groups, d = model.heads // tp, model.query_groups // tp, model.kv_channels
    q = tokens * heads * d * e
    selective = layout.recompute_granularity == "selective"
    qkv = tokens * (heads + 2 * groups) * d * e
    if selective and layout.fused_attention:  # core attention recomputed from q, k, v: no softmax statistics kept
        attention = qkv
    elif selective:
        # megatron recomputes core attention from its inputs: q and k (rotated) and the linear_qkv output
        # that v is a view of.
        attention = q + tokens * groups * d * e + qkv
    elif layout.fused_attention:
        attention = qkv + layout.micro_batch * heads * seq * FP32
    else:
        # megatron's local DotProductAttention repeats k and v to every head and keeps softmax(q k^T); in bf16 the
        # softmax runs in fp32 (attention_softmax_in_fp32, on by default) and keeps its fp32 output beside the bf16
        # probabilities the next matmul keeps.
        scores = layout.micro_batch * heads * seq * seq
        attention = 3 * q + scores * (e + (FP32 if e != FP32 else 0))
    ffn = model.ffn_hidden // tp
    rms = tokens * e // shard
    if layout.fused_attention:  # Transformer Engine's spec
        norms, mlp = 2 * (hidden_saved + rms), tokens * ffn * e * (2 + 1)
    else:  # torch's RMSNorm keeps input, 1/rms and the normalized input; SiLU, its output and the product stay
        norms, mlp = 2 * (2 * hidden_saved + rms), tokens * ffn * e * (2 + 3)
    if model.moe:
        mlp = moe_layer_bytes(model, layout)
    return LayerTerms(
        norms=norms,
        linear_inputs=2 * hidden_saved,
        rotary=4 * seq * d * e,
        attention=attention,
        attention_output=q,
        mlp=mlp,
    )


def moe_layer_bytes(model: ModelShape, layout: Layout) -> int:
    """An MoE layer's MLP (modeled, not measured): the router's logits and fp32 routing probabilities for the rank's
    tokens; the tokens the all-to-all dispatcher brings to the rank's experts (on average its own tokens x top-k,
    gathered over expert tensor parallel), kept as the experts' input and as their output for the weighted
    combine; and per routed token the expert MLP's intermediates, as a dense layer keeps them."""
    _, tokens, shard, e = _sizes(model, layout)
    local_tokens = tokens // shard
    routed = local_tokens * model.router_topk * layout.etp
    ffn = model.moe_ffn_hidden // layout.etp
    router = local_tokens * model.experts * (e + FP32)
    intermediates = 2 + 1 if layout.fused_attention else 2 + 3
    return router + 2 * routed * model.hidden * e + routed * ffn * e * intermediates


def checkpointed_layer_bytes(model: ModelShape, layout: Layout) -> int:
    """Under full recompute a checkpointed layer keeps only its input."""
    _, tokens, shard, e = _sizes(model, layout)
    return tokens * model.hidden * e // shard


def output_bytes(model: ModelShape, layout: Layout) -> int:
    """The last stage: final norm, the output layer's input, and the loss. megatron's cross entropy keeps
    softmax(logits) in fp32 for backward; in bf16 the logits themselves are alive beside that fp32 copy."""
    _, tokens, shard, e = _sizes(model, layout)
    hidden_saved = tokens * model.hidden * e // shard
    vocab = model.padded_vocab(layout.tp) // layout.tp
    logits = tokens * vocab * (FP32 + (e if e != FP32 else 0))
    return 2 * hidden_saved + tokens * e // shard + hidden_saved + logits + tokens * (INT64 + 1)


def micro_batches_in_flight(layout: Layout, pp_rank: int = 0) -> float:
    """Layer-activations held at once, in units of 'every layer of this stage for one micro batch'.

    1F1B: stage r holds min(pp - r, micro batches) micro batches. Interleaved (virtual size v): rank r warms up
    (pp - r - 1) x 2 + (v - 1) x pp chunks plus the one in flight, each chunk 1/v of the stage's layers
    (megatron's get_forward_backward_func schedules)."""
    micro_batches = layout.micro_batches_per_step
    if layout.pp == 1:
        return 1
    if not layout.vp:
        return min(layout.pp - pp_rank, micro_batches)
    chunks = min((layout.pp - pp_rank - 1) * 2 + (layout.vp - 1) * layout.pp + 1, micro_batches * layout.vp)
    return chunks / layout.vp


@dataclass(frozen=True)
class StageActivations:
    layer: int  # one layer stored in full, one micro batch
    stored_per_micro_batch: int  # the stage's layers as the recompute settings keep them
    in_flight: float
    recompute_transient: int  # a checkpointed chunk recomputed during backward
    offloaded: int  # moved to host memory by CPU activation offloading
    output: int  # logits and loss (last stage only)

    @property
    def total(self) -> int:
        return int(self.stored_per_micro_batch * self.in_flight) + self.recompute_transient - self.offloaded + self.output


def stage_activations(model: ModelShape, layout: Layout, layers: int, last_stage: bool, pp_rank: int = 0) -> StageActivations:
    full = layer_terms(model, layout).total
    checkpointed = checkpointed_layer_bytes(model, layout)
    transient = 0
    if layout.recompute_granularity == "full":
        n = layout.recompute_num_layers or 1
        if layout.recompute_method == "block":
            recomputed = min(n, layers)
            stored = recomputed * checkpointed + (layers - recomputed) * full
            transient = full if recomputed else 0
        else:  # uniform: chunks of n layers, each keeping its input
            stored = math.ceil(layers / n) * checkpointed
            transient = min(n, layers) * full
    else:
        stored = layers * full
    in_flight = micro_batches_in_flight(layout, pp_rank)
    offloaded = int(min(layout.cpu_offloading_layers, layers) * full * in_flight) if layout.recompute_granularity != "full" else 0
    return StageActivations(
        layer=full,
        stored_per_micro_batch=stored,
        in_flight=in_flight,
        recompute_transient=transient,
        offloaded=offloaded,
        output=output_bytes(model, layout) if last_stage else 0,
    )
