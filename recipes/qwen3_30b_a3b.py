"""Qwen3 30B-A3B (mixture of experts): pretraining, full SFT, LoRA, DPO and SimPO. Architecture from
models/catalog.py; shared defaults from recipes/algorithms.py; the MoE knobs (expert parallel sizes, token
dispatcher, router top-k, load-balancing loss, capacity factor, grouped GEMM) from recipes/blocks.py (experts)."""

import nemo_run as run

from recipes import algorithms, preference_algorithms
from recipes.registry import recipe

# What the recipes below are sized for (their "Sized for" sentences; tests/planning checks both agree
# with the plan); the GPU count is each recipe's trainer.num_nodes x trainer.devices.
TARGET_GPU = "h100-80gb"
MODEL = "qwen3_30b_a3b"


def _full_parameter_layout(recipe: run.Partial) -> run.Partial:
    """30.5B weights with their gradients and Adam state: TP 2 (sequence parallel) x PP 2 x EP 8 over 2 nodes, 16 of
    the 128 experts of each layer per GPU; expert data parallel 16 / (EP 8 x PP 2) = 1."""
    recipe.trainer.strategy.tensor_model_parallel_size = 2
    recipe.trainer.strategy.sequence_parallel = True  # MoE with TP needs it (launcher/rules/moe.py)
    recipe.trainer.strategy.pipeline_model_parallel_size = 2
    recipe.trainer.strategy.expert_model_parallel_size = 8
    recipe.trainer.num_nodes = 2
    return recipe


def _adapter_layout(recipe: run.Partial, tensor_parallel: int = 1) -> run.Partial:
    """LoRA: the frozen bf16 base (61 GB) split by experts, EP 8 on one node; attention replicated (data parallel 8),
    or split by TP 2 with sequence parallel for the activations of preference pairs."""
    recipe.trainer.strategy.expert_model_parallel_size = 8
    if tensor_parallel > 1:
        recipe.trainer.strategy.tensor_model_parallel_size = tensor_parallel
        recipe.trainer.strategy.sequence_parallel = True
    return recipe


@recipe
def qwen3_30b_a3b_pretrain() -> run.Partial:
    """Pretrain Qwen3 30B-A3B on prepared corpora (seq 8192, global batch 512).

    Sized for 2 nodes x 8 H100 80GB: tensor parallel 2 (sequence parallel) x pipeline parallel 2 x expert parallel 8.

        python launch.py recipe=qwen3_30b_a3b_pretrain data.paths=[/data/corpus_text_document]
    """
    return _full_parameter_layout(algorithms.pretrain(MODEL))


@recipe
def qwen3_30b_a3b_sft() -> run.Partial:
    """Full-parameter SFT of Qwen3 30B-A3B (seq 4096, global batch 128, lr 5e-6).

    Sized for 2 nodes x 8 H100 80GB: tensor parallel 2 (sequence parallel) x pipeline parallel 2 x expert parallel 8.

        python launch.py recipe=qwen3_30b_a3b_sft data.dataset_root=/data/sft
    """
    return _full_parameter_layout(algorithms.sft(MODEL, lr=5e-6))


@recipe
def qwen3_30b_a3b_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32, attention only) on Qwen3 30B-A3B (seq 4096, global batch 128, lr 1e-4).

    Sized for 1 node x 8 H100 80GB: expert parallel 8 (data parallel 8 for attention).

        python launch.py recipe=qwen3_30b_a3b_lora data.dataset_root=/data/sft
    """
    return _adapter_layout(algorithms.lora(MODEL))


@recipe
def qwen3_30b_a3b_dpo() -> run.Partial:
    """Full-parameter DPO of Qwen3 30B-A3B (beta 0.1, seq 4096, 64 pairs a step, lr 5e-7).

    The reference is the starting weights, scored once over all pairs before step 1 (no second model).
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 2 nodes x 8 H100 80GB, as qwen3_30b_a3b_sft: tensor parallel 2 (sequence parallel) x pipeline parallel 2
    x expert parallel 8.

        python launch.py recipe=qwen3_30b_a3b_dpo data.paths=[/data/pairs.jsonl]
    """
    return _full_parameter_layout(preference_algorithms.dpo(MODEL))


@recipe
def qwen3_30b_a3b_dpo_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32, attention only) DPO of Qwen3 30B-A3B (beta 0.1, seq 4096, 64 pairs a step, lr 5e-6).

    The reference is the same weights with the adapters off: no copy, no pre-pass.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 1 node x 8 H100 80GB: tensor parallel 2 (sequence parallel) x expert parallel 8.

        python launch.py recipe=qwen3_30b_a3b_dpo_lora data.paths=[/data/pairs.jsonl]
    """
    return _adapter_layout(preference_algorithms.dpo(MODEL, lora=True), tensor_parallel=2)


@recipe
def qwen3_30b_a3b_simpo() -> run.Partial:
    """Full-parameter SimPO of Qwen3 30B-A3B (beta 2.0, gamma 1.0, seq 4096, 64 pairs a step, lr 6e-7).

    Reference-free. beta/gamma/lr: adopted from the SimPO paper's Llama-3-8B-Base setting (beta 2.0, gamma/beta 0.5,
    lr 6e-7; the paper did not cover Qwen), as for qwen3_8b_simpo: a large byte-level BPE vocabulary (152k) like
    Llama 3's (128k).
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 2 nodes x 8 H100 80GB, as qwen3_30b_a3b_sft: tensor parallel 2 (sequence parallel) x pipeline parallel 2
    x expert parallel 8.

        python launch.py recipe=qwen3_30b_a3b_simpo data.paths=[/data/pairs.jsonl]
    """
    beta, gamma = preference_algorithms.SIMPO_SETTINGS["llama3_base"]
    return _full_parameter_layout(preference_algorithms.simpo(MODEL, beta=beta, gamma=gamma, lr=6e-7))


@recipe
def qwen3_30b_a3b_simpo_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32, attention only) SimPO of Qwen3 30B-A3B (beta 2.0, gamma 1.0, 64 pairs a step, lr 6e-6).

    beta/gamma as qwen3_30b_a3b_simpo (SimPO paper, see there); lr 10x the full-parameter rate, as for LoRA DPO.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 1 node x 8 H100 80GB, as qwen3_30b_a3b_dpo_lora: tensor parallel 2 (sequence parallel) x expert parallel 8.

        python launch.py recipe=qwen3_30b_a3b_simpo_lora data.paths=[/data/pairs.jsonl]
    """
    beta, gamma = preference_algorithms.SIMPO_SETTINGS["llama3_base"]
    return _adapter_layout(preference_algorithms.simpo(MODEL, lora=True, beta=beta, gamma=gamma, lr=6e-6), tensor_parallel=2)
