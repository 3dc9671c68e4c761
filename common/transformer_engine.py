"""What depends on Transformer Engine being installed: asked in one place by every layer."""

import importlib.util

# Without Transformer Engine, megatron-core refuses these fusions (their kernels need it, i.e. CUDA).
CUDA_ONLY_FUSIONS = {
    "apply_rope_fusion": False,
    "bias_activation_fusion": False,
    "bias_dropout_fusion": False,
    "masked_softmax_fusion": False,
    "persist_layer_norm": False,
    "gradient_accumulation_fusion": False,
    "cross_entropy_loss_fusion": False,
}
# Mixture-of-experts kernels that are Transformer Engine only: fused token permutation (megatron-core imports
# `fused_permute` from TE while building the config) and grouped GEMM over the experts.
CUDA_ONLY_MOE_FUSIONS = {
    "moe_permute_fusion": False,
    "moe_grouped_gemm": False,
}

# Mixture-of-experts kernels that only Transformer Engine provides: megatron-core imports the fused permutation
# while constructing the config, and its grouped GEMM without TE is the legacy GroupedMLP (the separate
# grouped_gemm package, not installed either).
CUDA_ONLY_MOE_KERNELS = {
    "moe_permute_fusion": False,
    "moe_grouped_gemm": False,
}


def is_installed() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None
