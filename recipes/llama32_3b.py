"""Llama 3.2 3B: pretraining, full SFT and LoRA. Architecture from models/catalog.py; shared defaults from recipes/algorithms.py."""

import nemo_run as run

from recipes import algorithms
from recipes.registry import recipe

MODEL = "llama32_3b"


@recipe
def llama32_3b_pretrain() -> run.Partial:
    """Pretrain Llama 3.2 3B on prepared corpora (seq 8192, global batch 512).

    Sized for 1 node x 8 H100 80GB: data parallel 8, selective recompute.

        python launch.py recipe=llama32_3b_pretrain data.paths=[/data/corpus_text_document]
    """
    recipe = algorithms.pretrain(MODEL)
    recipe.model.config.recompute_granularity = "selective"
    return recipe


@recipe
def llama32_3b_sft() -> run.Partial:
    """Full-parameter SFT of Llama 3.2 3B (seq 4096, global batch 128, lr 5e-6).

    Sized for 1 node x 8 H100 80GB: data parallel 8.

        python launch.py recipe=llama32_3b_sft data.dataset_root=/data/sft
    """
    recipe = algorithms.sft(MODEL, lr=5e-6)
    return recipe


@recipe
def llama32_3b_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32) on Llama 3.2 3B (seq 4096, global batch 128, lr 1e-4).

    Sized for 1 node x 8 H100 80GB: data parallel 8.

        python launch.py recipe=llama32_3b_lora data.dataset_root=/data/sft
    """
    recipe = algorithms.lora(MODEL)
    return recipe
