"""Mistral 7B v0.1: pretraining, full SFT and LoRA. Architecture from models/catalog.py; shared defaults from recipes/algorithms.py."""

import nemo_run as run

from recipes import algorithms
from recipes.registry import recipe

MODEL = "mistral_7b"


@recipe
def mistral_7b_pretrain() -> run.Partial:
    """Pretrain Mistral 7B v0.1 on prepared corpora (seq 8192, global batch 512).

    Sized for 1 node x 8 H100 80GB: tensor parallel 2 x data parallel 4.

        python launch.py recipe=mistral_7b_pretrain data.paths=[/data/corpus_text_document]
    """
    recipe = algorithms.pretrain(MODEL)
    recipe.trainer.strategy.tensor_model_parallel_size = 2
    recipe.trainer.strategy.sequence_parallel = True
    return recipe


@recipe
def mistral_7b_sft() -> run.Partial:
    """Full-parameter SFT of Mistral 7B v0.1 (seq 4096, global batch 128, lr 5e-6).

    Sized for 1 node x 8 H100 80GB: tensor parallel 2 x data parallel 4.

        python launch.py recipe=mistral_7b_sft data.dataset_root=/data/sft
    """
    recipe = algorithms.sft(MODEL, lr=5e-6)
    recipe.trainer.strategy.tensor_model_parallel_size = 2
    recipe.trainer.strategy.sequence_parallel = True
    return recipe


@recipe
def mistral_7b_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32) on Mistral 7B v0.1 (seq 4096, global batch 128, lr 1e-4).

    Sized for 1 node x 8 H100 80GB: data parallel 8.

        python launch.py recipe=mistral_7b_lora data.dataset_root=/data/sft
    """
    recipe = algorithms.lora(MODEL)
    return recipe
