"""SmolLM2-135M-Instruct on CPU: a real pretrained model fine-tuned for a few steps, then exported.

Needs two local folders, made once (no Hugging Face Hub):

    python -m conversion.smollm2                     # .cache/smollm2-135m-instruct (HF weights + tokenizer)
    python -m conversion.hf_to_nemo --hf .cache/smollm2-135m-instruct --out .cache/smollm2-135m-instruct-nemo

Training starts from the imported NeMo checkpoint; the tokenizer is the one the import staged in its
context/nemo_tokenizer (models/catalog.py). A launch without them stops before training, in the
launched process, with an error naming those two commands.
"""

from pathlib import Path

import nemo_run as run
from nemo import lightning as nl
from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer

from common.errors import UserError
from models.catalog import MODELS, REPO_ROOT
from recipes import algorithms, blocks
from recipes.registry import recipe
from training.checkpoint_averaging import AverageLastCheckpoints

MODEL = "smollm2_135m"
IMPORTED_CHECKPOINT = REPO_ROOT / ".cache" / "smollm2-135m-instruct-nemo"
TOKENIZER = MODELS[MODEL].tokenizer  # IMPORTED_CHECKPOINT/context/nemo_tokenizer
SHIPPED_SFT = str(REPO_ROOT / "data" / "sft_examples" / "tiny_sft")
SEQ_LENGTH = 256
MAKE_IT = (
    "python -m conversion.smollm2 && python -m conversion.hf_to_nemo "
    "--hf .cache/smollm2-135m-instruct --out .cache/smollm2-135m-instruct-nemo"
)


def _require(folder: Path, inside: str) -> None:
    if not (folder / inside).exists():
        raise UserError(f"{folder} is missing (no {inside}): create it with `{MAKE_IT}` (from the repo root)")


def imported_tokenizer(pretrained_model_name: str) -> AutoTokenizer:
    """NeMo's AutoTokenizer on a local folder, refusing clearly when it is missing. Like
    `imported_checkpoint`, checked when the launched process builds the recipe, before training."""
    _require(Path(pretrained_model_name), "tokenizer_config.json")
    return AutoTokenizer(pretrained_model_name=pretrained_model_name)


def imported_checkpoint(path: str, load_optim_state: bool = False) -> nl.RestoreConfig:
    """NeMo's RestoreConfig for a local imported checkpoint, refusing clearly when it is missing."""
    _require(Path(path), "context")
    return nl.RestoreConfig(path=str(path), load_optim_state=load_optim_state)


def _small_cpu_finetune(recipe: run.Partial, max_steps: int = 10) -> run.Partial:
    """One fp32 CPU process, micro batch 2 of 256 tokens, a checkpoint every 5 steps."""
    blocks.on_cpu(recipe)
    recipe.resume.restore_config = run.Config(imported_checkpoint, path=str(IMPORTED_CHECKPOINT))
    recipe.data.tokenizer = run.Config(imported_tokenizer, pretrained_model_name=TOKENIZER)
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
