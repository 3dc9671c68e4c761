"""Each training algorithm's defaults, written once. A model x algorithm recipe calls one of these
with its catalog name and then states only what differs for that model.
"""

import nemo_run as run
from nemo.collections import llm

from recipes import blocks

# A recipe that needs a corpus the user prepares leaves this in place; validation names the key.
UNSET_PATH = "<set data.paths to prepared corpus prefixes>"


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
    max_steps: int = 10_000,
    lr: float = 3e-4,
) -> run.Partial:
    """Next-token pretraining on prepared megatron .bin/.idx corpora, resumable from its own checkpoints."""
    recipe = run.Partial(
        llm.pretrain,
        model=blocks.model(model_name),
        data=pretraining_data(model_name, paths or [UNSET_PATH], seq_length, global_batch_size),
        trainer=blocks.trainer(max_steps=max_steps),
        log=blocks.logger(f"{model_name}_pretrain"),
        optim=blocks.optimizer(lr=lr, warmup_steps=min(2000, max_steps // 10)),
        resume=blocks.resume(),
    )
    recipe.model.config.seq_length = seq_length
    return recipe
