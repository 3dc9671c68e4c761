"""The planned activation bytes per layer equal what autograd really keeps for backward: measured with saved-tensors
hooks during a real forward of megatron's GPT model (local layer spec and attention) on CPU, deduplicated by storage,
with and without recompute, at TP 1 and at TP 2 with sequence parallel over gloo. Tolerance 5%; they agree exactly."""

import pytest

from planning.activations import checkpointed_layer_bytes, layer_terms, output_bytes
from planning.layout import Layout, ModelShape

# The tiny_llama catalog row (models/catalog.py), with a sequence long enough for the s x s scores to matter.
TINY = ModelShape(layers=3, hidden=64, ffn_hidden=256, heads=4, query_groups=2, kv_channels=16, vocab=1000)
SEQ, MICRO_BATCH = 64, 2
RECOMPUTE = {
    "none": {},
    "selective": {"recompute_granularity": "selective"},
    "full": {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1},
}


def _planned(tp: int, sequence_parallel: bool, recompute: str) -> dict:
    settings = RECOMPUTE[recompute]
    layout = Layout(tp=tp, sequence_parallel=sequence_parallel, micro_batch=MICRO_BATCH, seq_length=SEQ,
                    bytes_per_value=4, fused_attention=False, **settings)
    layer = checkpointed_layer_bytes(TINY, layout) if recompute == "full" else layer_terms(TINY, layout).total
    return {"layer": layer, "output": output_bytes(TINY, layout)}


def _assert_close(measured: dict, planned: dict):
    for key in planned:
        assert planned[key] == pytest.approx(measured[key], rel=0.05), (key, planned[key], measured[key])


@pytest.fixture(scope="module")
def measured_tp2(nemo, saved_tensors):
    """Both ranks of TP 2 + sequence parallel, every recompute setting, in one pair of forked processes."""
    settings = [dict(model=TINY, seq_length=SEQ, micro_batch=MICRO_BATCH, sequence_parallel=True,
                     recompute=RECOMPUTE[name] or None) for name in RECOMPUTE]
    ranks = saved_tensors.measure_in_processes(2, settings)
    return {name: [rank[index] for rank in ranks] for index, name in enumerate(RECOMPUTE)}


@pytest.mark.parametrize("recompute", list(RECOMPUTE))
def test_layer_activations_at_tp2_sequence_parallel(measured_tp2, recompute):
    for rank in measured_tp2[recompute]:
        _assert_close(rank, _planned(tp=2, sequence_parallel=True, recompute=recompute))


@pytest.mark.parametrize("recompute", list(RECOMPUTE))
def test_layer_activations_at_tp1(nemo, saved_tensors, recompute):
    with saved_tensors.one_process_group():
        measured = saved_tensors.measure(TINY, SEQ, MICRO_BATCH, recompute=RECOMPUTE[recompute] or None)
    _assert_close(measured, _planned(tp=1, sequence_parallel=False, recompute=recompute))
