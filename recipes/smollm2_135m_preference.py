"""SmolLM2-135M-Instruct on preference pairs (DPO) on CPU: a real pretrained model, a few steps, then exported.

Starts from the imported NeMo checkpoint that recipes/smollm2_135m.py uses (made once, no Hub):

    python -m conversion.smollm2 && python -m conversion.hf_to_nemo --hf .cache/smollm2-135m-instruct --model smollm2_135m

and exports back with `python -m conversion.nemo_to_hf --nemo results/smollm2_135m_dpo/checkpoints/<...-last> --out DIR`.
"""

import nemo_run as run

from models.catalog import REPO_ROOT
from recipes import blocks, preference_algorithms
from recipes.registry import recipe

MODEL = "smollm2_135m"
PAIRS = str(REPO_ROOT / "data" / "sft_examples" / "preference_pairs.jsonl")


@recipe
def smollm2_135m_dpo() -> run.Partial:
    """Full-parameter DPO of SmolLM2-135M-Instruct on the 150 shipped pairs (ChatML, beta 0.1), 12 steps on CPU.

    4 pairs a step, seq 128 (every shipped pair fits), lr 1e-5: high for DPO, so that a dozen CPU steps visibly
    move the reward margin. The reference log-probs are precomputed from the imported weights before step 1
    (one forward pass over the pairs). One fp32 process; a checkpoint at the end.

        python launch.py recipe=smollm2_135m_dpo
        python launch.py recipe=smollm2_135m_dpo data.paths.0=my_pairs.jsonl trainer.max_steps=100
    """
    recipe = preference_algorithms.dpo(MODEL, seq_length=128, global_batch_size=8, paths=[PAIRS], max_steps=12, lr=1e-5)
    blocks.on_cpu(recipe)
    recipe.data.micro_batch_size = 8  # 4 pairs
    recipe.optim.lr_scheduler.warmup_steps = 2
    recipe.trainer.num_sanity_val_steps = 0
    recipe.trainer.check_val_every_n_epoch = None  # no validation (limit_val_batches 0); steps may span epochs
    recipe.trainer.val_check_interval = recipe.trainer.max_steps
    recipe.trainer.log_every_n_steps = 1
    recipe.log.ckpt.every_n_train_steps = 12
    return recipe
