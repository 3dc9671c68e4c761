"""A NeMo 2 checkpoint run as megatron-core's GPTModel on the CPU, for comparing its logits with transformers'.

Single process: a gloo group of one, megatron parallel_state with TP=PP=1, float32, megatron's local layer spec
(no Transformer Engine) with every CUDA-only fusion off, explicit causal attention mask.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from conversion._cpu import cuda_queries_answered_by_cpu
from conversion.average import load_model_weights, megatron_model_from_context, single_process_megatron


@contextlib.contextmanager
def megatron_for_inference():
    from megatron.core.tensor_parallel.random import initialize_rng_tracker

    with single_process_megatron():
        # Megatron's inference tracker: attention-dropout forks become no-ops instead of CUDA RNG swaps.
        initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
        try:
            yield
        finally:
            initialize_rng_tracker(force_reset=True)


def megatron_model_from_checkpoint(ckpt_dir: Path):
    """The mcore GPTModel from the checkpoint's own context, with its dist-checkpoint weights loaded."""
    model = megatron_model_from_context(ckpt_dir)
    model.load_state_dict(load_model_weights(model, ckpt_dir), strict=True)
    return model, model.config


def megatron_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    length = input_ids.shape[1]
    position_ids = torch.arange(length).unsqueeze(0)
    causal_mask = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)[None, None]  # True = masked
    with torch.no_grad(), cuda_queries_answered_by_cpu():
        return model(input_ids, position_ids, causal_mask)
