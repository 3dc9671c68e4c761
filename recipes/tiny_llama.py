"""The tiny Llama on CPU: the quick start, the tests, and a template for debugging recipes anywhere."""

import nemo_run as run

from models.catalog import REPO_ROOT
from recipes import algorithms, blocks
from recipes.registry import recipe

PYDOC_CORPUS = str(REPO_ROOT / "data" / "corpora" / "pydoc_topics_text_document")
SHIPPED_SFT = str(REPO_ROOT / "data" / "sft_examples" / "tiny_sft")
SEQ_LENGTH = 128


def _small_cpu_run(recipe: run.Partial, max_steps: int) -> run.Partial:
    """One CPU process, frequent validation and checkpoints, in about a minute on 2 cores."""
    blocks.on_cpu(recipe)
    recipe.data.micro_batch_size = 4
    recipe.data.num_workers = 0
    recipe.trainer.max_steps = max_steps
    recipe.trainer.val_check_interval = 10
    recipe.trainer.limit_val_batches = 2
    recipe.trainer.log_every_n_steps = 1
    recipe.log.ckpt.every_n_train_steps = 10
    recipe.optim.lr_scheduler.warmup_steps = 3
    return recipe


@recipe
def tiny_llama_pretrain() -> run.Partial:
    """Pretrain the 2-layer tiny Llama on the shipped pydoc corpus; about a minute on a 2-core CPU.

    Sized for one CPU process (trainer.devices=2 runs data parallel over gloo).

        python launch.py recipe=tiny_llama_pretrain
    """
    recipe = algorithms.pretrain(
        "tiny_llama", seq_length=SEQ_LENGTH, global_batch_size=8, paths=[PYDOC_CORPUS], lr=3e-3
    )
    recipe.data.split = "95,5,0"
    return _small_cpu_run(recipe, max_steps=30)


@recipe
def tiny_llama_sft() -> run.Partial:
    """Full SFT of the tiny Llama on the shipped prompt/response examples, on CPU.

        python launch.py recipe=tiny_llama_sft
    """
    recipe = algorithms.sft("tiny_llama", seq_length=SEQ_LENGTH, global_batch_size=8, dataset_root=SHIPPED_SFT, lr=3e-3)
    return _small_cpu_run(recipe, max_steps=20)


@recipe
def tiny_llama_lora() -> run.Partial:
    """LoRA (rank 8) on the tiny Llama with the shipped prompt/response examples, on CPU.

        python launch.py recipe=tiny_llama_lora
    """
    recipe = algorithms.lora(
        "tiny_llama", rank=8, alpha=16, seq_length=SEQ_LENGTH, global_batch_size=8, dataset_root=SHIPPED_SFT, lr=1e-2
    )
    return _small_cpu_run(recipe, max_steps=20)
