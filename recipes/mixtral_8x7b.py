"""Mixtral 8x7B v0.1 (mixture of experts): pretraining, full SFT, LoRA, DPO and SimPO. Architecture from
models/catalog.py; shared defaults from recipes/algorithms.py; the MoE knobs (expert parallel sizes, token
dispatcher, router top-k, load-balancing loss, capacity factor, grouped GEMM) from recipes/blocks.py (experts)."""

import nemo_run as run

from recipes import algorithms, preference_algorithms
from recipes.registry import recipe

# What the recipes below are sized for (their "Sized for" sentences; tests/planning checks both agree
# with the plan); the GPU count is each recipe's trainer.num_nodes x trainer.devices.
TARGET_GPU = "h100-80gb"
MODEL = "mixtral_8x7b"


def _full_parameter_layout(recipe: run.Partial, tensor_parallel: int = 1) -> run.Partial:
    """46.7B weights with their gradients and Adam state: PP 4 x EP 8 over 4 nodes, one expert of each layer per
    GPU; the expert data-parallel size is 32 / (EP 8 x PP 4) = 1, so each GPU keeps its experts' whole Adam state.
    Preference pairs (micro batch 2) add TP 2 with sequence parallel for their activations."""
    recipe.trainer.strategy.pipeline_model_parallel_size = 4
    recipe.trainer.strategy.expert_model_parallel_size = 8
    _tensor_parallel(recipe, tensor_parallel)
    recipe.trainer.num_nodes = 4
    return recipe


def _adapter_layout(recipe: run.Partial, tensor_parallel: int = 1) -> run.Partial:
    """LoRA: the frozen bf16 base (93 GB) split by experts, EP 8 on one node; attention replicated (data parallel 8),
    or split by TP 2 with sequence parallel for the activations of preference pairs."""
    recipe.trainer.strategy.expert_model_parallel_size = 8
    _tensor_parallel(recipe, tensor_parallel)
    return recipe


def _tensor_parallel(recipe: run.Partial, size: int) -> None:
    if size > 1:
        recipe.trainer.strategy.tensor_model_parallel_size = size
        recipe.trainer.strategy.sequence_parallel = True  # MoE with TP needs it (launcher/rules/moe.py)


@recipe
def mixtral_8x7b_pretrain() -> run.Partial:
    """Pretrain Mixtral 8x7B on prepared corpora (seq 4096, global batch 512).

    Sized for 4 nodes x 8 H100 80GB: pipeline parallel 4 x expert parallel 8 (data parallel 8 for attention).

        python launch.py recipe=mixtral_8x7b_pretrain data.paths=[/data/corpus_text_document]
    """
    return _full_parameter_layout(algorithms.pretrain(MODEL, seq_length=4096))


@recipe
def mixtral_8x7b_sft() -> run.Partial:
    """Full-parameter SFT of Mixtral 8x7B (seq 4096, global batch 128, lr 5e-6).

    Sized for 4 nodes x 8 H100 80GB: pipeline parallel 4 x expert parallel 8 (data parallel 8 for attention).

        python launch.py recipe=mixtral_8x7b_sft data.dataset_root=/data/sft
    """
    return _full_parameter_layout(algorithms.sft(MODEL, lr=5e-6))


@recipe
def mixtral_8x7b_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32, attention only) on Mixtral 8x7B (seq 4096, global batch 128, lr 1e-4).

    Sized for 1 node x 8 H100 80GB: expert parallel 8 (data parallel 8 for attention).

        python launch.py recipe=mixtral_8x7b_lora data.dataset_root=/data/sft
    """
    return _adapter_layout(algorithms.lora(MODEL))


@recipe
def mixtral_8x7b_dpo() -> run.Partial:
    """Full-parameter DPO of Mixtral 8x7B (beta 0.1, seq 4096, 64 pairs a step, lr 5e-7).

    The reference is the starting weights, scored once over all pairs before step 1 (no second model).
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 4 nodes x 8 H100 80GB: tensor parallel 2 (sequence parallel) x pipeline parallel 4 x expert parallel 8.

        python launch.py recipe=mixtral_8x7b_dpo data.paths=[/data/pairs.jsonl]
    """
    return _full_parameter_layout(preference_algorithms.dpo(MODEL), tensor_parallel=2)


@recipe
def mixtral_8x7b_dpo_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32, attention only) DPO of Mixtral 8x7B (beta 0.1, seq 4096, 64 pairs a step, lr 5e-6).

    The reference is the same weights with the adapters off: no copy, no pre-pass.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 1 node x 8 H100 80GB: tensor parallel 2 (sequence parallel) x expert parallel 8.

        python launch.py recipe=mixtral_8x7b_dpo_lora data.paths=[/data/pairs.jsonl]
    """
    return _adapter_layout(preference_algorithms.dpo(MODEL, lora=True), tensor_parallel=2)


@recipe
def mixtral_8x7b_simpo() -> run.Partial:
    """Full-parameter SimPO of Mixtral 8x7B (beta 2.0, gamma 1.6, seq 4096, 64 pairs a step, lr 3e-7).

    Reference-free. beta/gamma/lr: adopted from the SimPO paper's Mistral-7B-Base setting (beta 2.0, gamma/beta 0.8
    -> gamma 1.6, lr 3e-7; the paper did not cover Mixtral): Mixtral 8x7B shares Mistral 7B's tokenizer and
    attention, and like the paper's Base runs it is preference-tuned after SFT.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 4 nodes x 8 H100 80GB, as mixtral_8x7b_dpo: tensor parallel 2 (sequence parallel) x pipeline parallel 4
    x expert parallel 8.

        python launch.py recipe=mixtral_8x7b_simpo data.paths=[/data/pairs.jsonl]
    """
    beta, gamma = preference_algorithms.SIMPO_SETTINGS["mistral_base"]
    return _full_parameter_layout(preference_algorithms.simpo(MODEL, beta=beta, gamma=gamma, lr=3e-7), tensor_parallel=2)


@recipe
def mixtral_8x7b_simpo_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32, attention only) SimPO of Mixtral 8x7B (beta 2.0, gamma 1.6, 64 pairs a step, lr 3e-6).

    beta/gamma as mixtral_8x7b_simpo (SimPO paper, see there); lr 10x the full-parameter rate, as for LoRA DPO.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 1 node x 8 H100 80GB, as mixtral_8x7b_dpo_lora: tensor parallel 2 (sequence parallel) x expert parallel 8.

        python launch.py recipe=mixtral_8x7b_simpo_lora data.paths=[/data/pairs.jsonl]
    """
    beta, gamma = preference_algorithms.SIMPO_SETTINGS["mistral_base"]
    return _adapter_layout(preference_algorithms.simpo(MODEL, lora=True, beta=beta, gamma=gamma, lr=3e-6), tensor_parallel=2)
