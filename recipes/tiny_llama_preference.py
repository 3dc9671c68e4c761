"""The tiny Llama on preference pairs (DPO, SimPO) on CPU: quick starts and the tests' subjects."""

import nemo_run as run

from models.catalog import REPO_ROOT
from recipes import blocks, preference_algorithms
from recipes.registry import recipe

PAIRS = str(REPO_ROOT / "data" / "sft_examples" / "preference_pairs.jsonl")


def _tiny(recipe: run.Partial) -> run.Partial:
    blocks.on_cpu(recipe)
    recipe.data.micro_batch_size = 8  # 4 pairs
    recipe.data.validation_pairs = 16
    recipe.trainer.val_check_interval = 15
    recipe.trainer.limit_val_batches = 2  # validation steps of 8 pairs: the 16 held-out pairs
    recipe.trainer.num_sanity_val_steps = 0
    recipe.trainer.log_every_n_steps = 1
    recipe.log.ckpt.every_n_train_steps = 30
    return recipe


@recipe
def tiny_llama_dpo() -> run.Partial:
    """DPO of the tiny Llama (random start) on the 150 shipped pairs; about a minute on a 2-core CPU.

    Full-parameter, so the reference log-probs are precomputed from the starting weights before step 1.

        python launch.py recipe=tiny_llama_dpo
    """
    recipe = preference_algorithms.dpo("tiny_llama", seq_length=128, global_batch_size=16, paths=[PAIRS], max_steps=30, lr=2e-3)
    recipe.optim.lr_scheduler.warmup_steps = 3
    return _tiny(recipe)


@recipe
def tiny_llama_dpo_lora() -> run.Partial:
    """LoRA DPO of the tiny Llama on the shipped pairs; the reference is the same weights, adapters off.

        python launch.py recipe=tiny_llama_dpo_lora
    """
    recipe = preference_algorithms.dpo(
        "tiny_llama", lora=True, seq_length=128, global_batch_size=16, paths=[PAIRS], max_steps=30, lr=1e-2,
        lora_rank=8, lora_alpha=16,
    )
    recipe.optim.lr_scheduler.warmup_steps = 3
    return _tiny(recipe)


@recipe
def tiny_llama_simpo() -> run.Partial:
    """SimPO of the tiny Llama on the shipped pairs (beta 10, gamma 3.0); about a minute on a 2-core CPU.

        python launch.py recipe=tiny_llama_simpo
    """
    recipe = preference_algorithms.simpo("tiny_llama", seq_length=128, global_batch_size=16, paths=[PAIRS], max_steps=30, lr=2e-3)
    recipe.optim.lr_scheduler.warmup_steps = 3
    return _tiny(recipe)
