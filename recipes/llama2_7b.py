"""Llama 2 7B: pretraining, full SFT, LoRA, DPO and SimPO. Architecture from models/catalog.py; shared defaults from recipes/algorithms.py."""

import nemo_run as run

from recipes import algorithms, preference_algorithms
from recipes.registry import recipe

# What the recipes below are sized for (their "Sized for" sentences; tests/planning checks both agree
# with the plan); the GPU count is each recipe's trainer.num_nodes x trainer.devices.
TARGET_GPU = "h100-80gb"
MODEL = "llama2_7b"


@recipe
def llama2_7b_pretrain() -> run.Partial:
    """Pretrain Llama 2 7B on prepared corpora (seq 4096, the model's context; global batch 1024, 4M tokens a step as
    in the Llama 2 paper).

    Sized for 1 node x 8 H100 80GB: tensor parallel 2 x data parallel 4.

        python launch.py recipe=llama2_7b_pretrain data.paths=[/data/corpus_text_document]
    """
    recipe = algorithms.pretrain(MODEL, seq_length=4096, global_batch_size=1024)
    recipe.trainer.strategy.tensor_model_parallel_size = 2
    recipe.trainer.strategy.sequence_parallel = True
    return recipe


@recipe
def llama2_7b_sft() -> run.Partial:
    """Full-parameter SFT of Llama 2 7B (seq 4096, global batch 128, lr 5e-6).

    Sized for 1 node x 8 H100 80GB: tensor parallel 2 x data parallel 4.

        python launch.py recipe=llama2_7b_sft data.dataset_root=/data/sft
    """
    recipe = algorithms.sft(MODEL, lr=5e-6)
    recipe.trainer.strategy.tensor_model_parallel_size = 2
    recipe.trainer.strategy.sequence_parallel = True
    return recipe


@recipe
def llama2_7b_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32) on Llama 2 7B (seq 4096, global batch 128, lr 1e-4).

    Sized for 1 node x 8 H100 80GB: data parallel 8.

        python launch.py recipe=llama2_7b_lora data.dataset_root=/data/sft
    """
    recipe = algorithms.lora(MODEL)
    return recipe


@recipe
def llama2_7b_dpo() -> run.Partial:
    """Full-parameter DPO of Llama 2 7B (beta 0.1, seq 4096, 64 pairs a step, lr 5e-7).

    The reference is the starting weights, scored once over all pairs before step 1 (no second model).
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 1 node x 8 H100 80GB, as llama2_7b_sft: tensor parallel 2 x data parallel 4.

        python launch.py recipe=llama2_7b_dpo data.paths=[/data/pairs.jsonl]
    """
    recipe = preference_algorithms.dpo(MODEL)
    recipe.trainer.strategy.tensor_model_parallel_size = 2
    recipe.trainer.strategy.sequence_parallel = True
    return recipe


@recipe
def llama2_7b_dpo_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32) DPO of Llama 2 7B (beta 0.1, seq 4096, 64 pairs a step, lr 5e-6).

    The reference is the same weights with the adapters off: no copy, no pre-pass.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 1 node x 8 H100 80GB, as llama2_7b_lora: data parallel 8.

        python launch.py recipe=llama2_7b_dpo_lora data.paths=[/data/pairs.jsonl]
    """
    recipe = preference_algorithms.dpo(MODEL, lora=True)
    return recipe


@recipe
def llama2_7b_simpo() -> run.Partial:
    """Full-parameter SimPO of Llama 2 7B (beta 2.0, gamma 1.6, seq 4096, 64 pairs a step, lr 3e-7).

    Reference-free. beta/gamma/lr: adopted from the SimPO paper's Mistral-7B-Base setting (beta 2.0, gamma/beta 0.8
    -> gamma 1.6, lr 3e-7; the paper did not cover Llama 2): of its two Base rows, Mistral's was tuned on a 32k
    SentencePiece vocabulary like Llama 2's (the same size and kind), closer in per-token log-prob scale than
    Llama 3's 128k byte-level BPE.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 1 node x 8 H100 80GB, as llama2_7b_sft: tensor parallel 2 x data parallel 4.

        python launch.py recipe=llama2_7b_simpo data.paths=[/data/pairs.jsonl]
    """
    beta, gamma = preference_algorithms.SIMPO_SETTINGS["mistral_base"]
    recipe = preference_algorithms.simpo(MODEL, beta=beta, gamma=gamma, lr=3e-7)
    recipe.trainer.strategy.tensor_model_parallel_size = 2
    recipe.trainer.strategy.sequence_parallel = True
    return recipe


@recipe
def llama2_7b_simpo_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32) SimPO of Llama 2 7B (beta 2.0, gamma 1.6, 64 pairs a step, lr 3e-6).

    beta/gamma as llama2_7b_simpo (SimPO paper, see there); lr 10x the full-parameter rate, as for LoRA DPO.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 1 node x 8 H100 80GB, as llama2_7b_lora: data parallel 8.

        python launch.py recipe=llama2_7b_simpo_lora data.paths=[/data/pairs.jsonl]
    """
    beta, gamma = preference_algorithms.SIMPO_SETTINGS["mistral_base"]
    recipe = preference_algorithms.simpo(MODEL, lora=True, beta=beta, gamma=gamma, lr=3e-6)
    return recipe
