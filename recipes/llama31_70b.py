"""Llama 3.1 70B: pretraining, full SFT and LoRA. Architecture from models/catalog.py; shared defaults from recipes/algorithms.py."""

import nemo_run as run

from recipes import algorithms
from recipes.registry import recipe

MODEL = "llama31_70b"


@recipe
def llama31_70b_pretrain() -> run.Partial:
    """Pretrain Llama 3.1 70B on prepared corpora (seq 8192, global batch 512).

    Sized for 8 nodes x 8 H100 80GB: TP 4 x PP 4 (virtual 5) x CP 2 x DP 2; 70B pretraining does not fit one node.

        python launch.py recipe=llama31_70b_pretrain data.paths=[/data/corpus_text_document]
    """
    recipe = algorithms.pretrain(MODEL)
    recipe.trainer.strategy.tensor_model_parallel_size = 4
    recipe.trainer.strategy.pipeline_model_parallel_size = 4
    recipe.trainer.strategy.virtual_pipeline_model_parallel_size = 5
    recipe.trainer.strategy.context_parallel_size = 2
    recipe.trainer.strategy.sequence_parallel = True
    recipe.trainer.num_nodes = 8
    return recipe


@recipe
def llama31_70b_sft() -> run.Partial:
    """Full-parameter SFT of Llama 3.1 70B (seq 4096, global batch 128, lr 5e-6).

    Sized for 4 nodes x 8 H100 80GB: TP 8 x PP 4; full 70B SFT does not fit one node.

        python launch.py recipe=llama31_70b_sft data.dataset_root=/data/sft
    """
    recipe = algorithms.sft(MODEL, lr=5e-6)
    recipe.trainer.strategy.tensor_model_parallel_size = 8
    recipe.trainer.strategy.pipeline_model_parallel_size = 4
    recipe.trainer.strategy.sequence_parallel = True
    recipe.trainer.num_nodes = 4
    return recipe


@recipe
def llama31_70b_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32) on Llama 3.1 70B (seq 4096, global batch 128, lr 1e-4).

    Sized for 1 node x 8 H100 80GB: TP 8.

        python launch.py recipe=llama31_70b_lora data.dataset_root=/data/sft
    """
    recipe = algorithms.lora(MODEL)
    recipe.trainer.strategy.tensor_model_parallel_size = 8
    recipe.trainer.strategy.sequence_parallel = True
    return recipe
