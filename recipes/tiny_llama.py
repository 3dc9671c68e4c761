"""The tiny Llama on CPU: the quick start, the tests, and a template for debugging recipes anywhere."""

import nemo_run as run

from models.catalog import REPO_ROOT
from recipes import algorithms, blocks
from recipes.registry import recipe

PYDOC_CORPUS = str(REPO_ROOT / "data" / "corpora" / "pydoc_topics_text_document")


@recipe
def tiny_llama_pretrain() -> run.Partial:
    """Pretrain the 2-layer tiny Llama on the shipped pydoc corpus; about a minute on a 2-core CPU.

    Sized for one CPU process (trainer.devices=2 runs data parallel over gloo).

        python launch.py recipe=tiny_llama_pretrain
    """
    recipe = algorithms.pretrain(
        "tiny_llama", seq_length=128, global_batch_size=8, paths=[PYDOC_CORPUS], max_steps=30, lr=3e-3
    )
    blocks.on_cpu(recipe)
    recipe.data.micro_batch_size = 4
    recipe.data.num_workers = 0
    recipe.data.split = "95,5,0"
    recipe.trainer.val_check_interval = 10
    recipe.trainer.limit_val_batches = 2
    recipe.trainer.log_every_n_steps = 1
    recipe.log.ckpt.every_n_train_steps = 10
    return recipe
