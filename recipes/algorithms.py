"""Each training algorithm's defaults, written once. A model x algorithm recipe calls one of these
with its catalog name and then states only what differs for that model.
"""

import nemo_run as run
from nemo.collections import llm

from data.sft_datamodule import TemplatedSFTDataModule
from models.catalog import MODELS
from recipes import blocks
from recipes.blocks import ONE_EPOCH, UNSET_DATASET, UNSET_PATH


def pretraining_data(model_name: str, paths: list, seq_length: int, global_batch_size: int) -> run.Config:
    return run.Config(
        llm.PreTrainingDataModule,
        paths=paths,
        seq_length=seq_length,
        tokenizer=blocks.tokenizer(model_name),
        micro_batch_size=1,
        global_batch_size=global_batch_size,
        split="99,1,0",
        num_workers=2,
        seed=1234,
        # Megatron caches sample indices beside the corpus by default, which may be read-only.
        index_mapping_dir=f"{blocks.RESULTS_DIR}/index_mappings",
    )


def pretrain(
    model_name: str,
    *,
    seq_length: int = 8192,
    global_batch_size: int = 512,
    paths: list | None = None,
    max_steps: int = ONE_EPOCH,
    lr: float = 3e-4,
) -> run.Partial:
    """Next-token pretraining on prepared megatron .bin/.idx corpora, resumable from its own checkpoints."""
    recipe = run.Partial(
        llm.pretrain,
        model=blocks.model(model_name),
        data=pretraining_data(model_name, paths or [UNSET_PATH], seq_length, global_batch_size),
        trainer=blocks.trainer(max_steps=max_steps),
        log=blocks.logger(f"{model_name}_pretrain"),
        optim=blocks.optimizer(lr=lr, warmup_steps=500),
        resume=blocks.resume(),
    )
    recipe.model.config.seq_length = seq_length
    return blocks.experts(recipe, model_name)


def finetuning_data(model_name: str, dataset_root: str, seq_length: int, global_batch_size: int) -> run.Config:
    """Prompt/response or chat JSONL (training.jsonl, validation.jsonl) from `python -m data.sft convert`,
    rendered with the model's chat template (`data.template=...`); the loss covers the assistant answers."""
    return run.Config(
        TemplatedSFTDataModule,
        template=MODELS[model_name].chat_template,
        dataset_root=dataset_root,
        seq_length=seq_length,
        tokenizer=blocks.tokenizer(model_name),
        micro_batch_size=1,
        global_batch_size=global_batch_size,
        num_workers=2,
        seed=1234,
    )


def sft(
    model_name: str,
    *,
    seq_length: int = 4096,
    global_batch_size: int = 128,
    dataset_root: str = UNSET_DATASET,
    max_steps: int = ONE_EPOCH,
    lr: float = 5e-6,
) -> run.Partial:
    """Full-parameter supervised fine-tuning, starting from the model's imported NeMo checkpoint."""
    recipe = run.Partial(
        llm.finetune,
        model=blocks.model(model_name),
        data=finetuning_data(model_name, dataset_root, seq_length, global_batch_size),
        trainer=blocks.trainer(max_steps=max_steps),
        log=blocks.logger(f"{model_name}_sft"),
        optim=blocks.optimizer(lr=lr, warmup_steps=50, min_lr_ratio=0.0),
        resume=blocks.resume(),
        peft=None,
        tokenizer="data",  # one tokenizer, the data module's, for the model too
    )
    recipe.model.config.seq_length = seq_length
    recipe.resume.restore_config = blocks.restore_from(model_name)
    return blocks.experts(recipe, model_name)


def lora(
    model_name: str,
    *,
    rank: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    lr: float = 1e-4,
    **sft_arguments,
) -> run.Partial:
    """LoRA on the attention and MLP projections; the same data and schedule as full SFT."""
    recipe = sft(model_name, lr=lr, **sft_arguments)
    recipe.peft = run.Config(
        llm.peft.LoRA,
        dim=rank,
        alpha=alpha,
        dropout=dropout,
        target_modules=["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"],
    )
    recipe.log.name = f"{model_name}_lora"
    # Adapters are small: no need to shard the optimizer state, and TP rarely pays off.
    recipe.optim.config.use_distributed_optimizer = False
    return blocks.experts(recipe, model_name)
