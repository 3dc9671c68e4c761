"""SmolLM2-135M-Instruct on CPU: a real pretrained model fine-tuned for a few steps, then exported.

Needs the weights imported once, as for every model (no Hugging Face Hub):

    python -m conversion.smollm2                     # .cache/smollm2-135m-instruct (HF weights + tokenizer)
    python -m conversion.hf_to_nemo --hf .cache/smollm2-135m-instruct --model smollm2_135m

Training starts from the imported NeMo checkpoint, nemo://HuggingFaceTB/SmolLM2-135M-Instruct
($NEMO_MODELS_CACHE/...), and tokenizes with the tokenizer the import staged in its context/nemo_tokenizer
(not the HF folder, whose 540 MB of weights NeMo would copy into every checkpoint's context). A launch
without them stops before training with an error naming the import command (runtime/checkpoints.py).
"""

import nemo_run as run

from models.catalog import REPO_ROOT
from recipes import algorithms, blocks
from recipes.registry import recipe
from training.checkpoint_averaging import AverageLastCheckpoints

MODEL = "smollm2_135m"
SHIPPED_SFT = str(REPO_ROOT / "data" / "sft_examples" / "tiny_sft")
SEQ_LENGTH = 256


def _small_cpu_finetune(recipe: run.Partial, max_steps: int = 10) -> run.Partial:
    """One fp32 CPU process, micro batch 2 of 256 tokens, a checkpoint every 5 steps."""
    blocks.on_cpu(recipe)
    recipe.data.micro_batch_size = 2
    recipe.data.global_batch_size = 2
    recipe.data.num_workers = 0
    recipe.trainer.max_steps = max_steps
    recipe.trainer.val_check_interval = max_steps
    recipe.trainer.limit_val_batches = 1
    recipe.trainer.log_every_n_steps = 1
    recipe.log.ckpt.every_n_train_steps = 5
    recipe.optim.lr_scheduler.warmup_steps = 2
    return recipe


@recipe
def smollm2_135m_sft() -> run.Partial:
    """Full SFT of SmolLM2-135M-Instruct on the shipped prompt/response examples, 10 steps on CPU, averaged.

    After training, the last 2 checkpoints are averaged into results/smollm2_135m_sft/averaged.

        python launch.py recipe=smollm2_135m_sft
    """
    recipe = algorithms.sft(MODEL, seq_length=SEQ_LENGTH, global_batch_size=2, dataset_root=SHIPPED_SFT, lr=2e-5)
    # After training: results/smollm2_135m_sft/averaged = mean of the 2 checkpoints kept (steps 4 and 9).
    recipe.trainer.callbacks.append(run.Config(AverageLastCheckpoints, last=2))
    return _small_cpu_finetune(recipe)


@recipe
def smollm2_135m_lora() -> run.Partial:
    """LoRA (rank 8, alpha 16) on SmolLM2-135M-Instruct with the shipped prompt/response examples, on CPU.

        python launch.py recipe=smollm2_135m_lora
    """
    recipe = algorithms.lora(
        MODEL, rank=8, alpha=16, dropout=0.0, seq_length=SEQ_LENGTH, global_batch_size=2, dataset_root=SHIPPED_SFT, lr=1e-3
    )
    return _small_cpu_finetune(recipe)
