"""Values that are objects, not scalars, chosen on the command line through nemo_run's factory registry
(`log.wandb=wandb(...)`, `data.packed_sequence_specs=packed(...)`; README.md shows them in use).

(nemo_run parses `Optional[str]` but not `str | None` in factory signatures.)
W&B reads its key from the environment (WANDB_API_KEY) only; nothing here or in any config holds it.
"""

from typing import Optional

import nemo_run as run
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from nemo import lightning as nl
from nemo.collections import llm

from data.sft_datamodule import TemplatedSFTDataModule


@run.cli.factory(target=nl.NeMoLogger, target_arg="wandb")
def wandb(project: str = "nemo-recipes", name: Optional[str] = None, entity: Optional[str] = None) -> run.Config:
    return run.Config(WandbLogger, project=project, name=name, entity=entity)


@run.cli.factory(target=nl.NeMoLogger, target_arg="tensorboard")
def tensorboard(name: str = "tensorboard") -> run.Config:
    """TensorBoard event files under the run's log directory (NeMoLogger points save_dir there)."""
    return run.Config(TensorBoardLogger, save_dir="tb_logs", name=name)


@run.cli.factory(target=llm.FineTuningDataModule, target_arg="packed_sequence_specs")
@run.cli.factory(target=TemplatedSFTDataModule, target_arg="packed_sequence_specs")  # looked up by exact class
def packed(directory: str, size: int, pad_cu_seqlens: bool = False) -> run.Config:
    """SFT data packed by `python -m data.packing --output-dir DIRECTORY --pack-size SIZE`."""
    from nemo.collections.llm.gpt.data.packed_sequence import PackedSequenceSpecs

    from data.packing import packed_paths

    paths = packed_paths(directory, size)
    return run.Config(
        PackedSequenceSpecs,
        packed_sequence_size=size,
        packed_train_data_path=str(paths["training"]),
        packed_val_data_path=str(paths["validation"]),
        packed_metadata_path=str(paths["metadata"]),
        pad_cu_seqlens=pad_cu_seqlens,
    )


@run.cli.factory(target=nl.AutoResume, target_arg="restore_config")
def weights(path: str) -> run.Config:
    """Start from the model weights of a NeMo 2 checkpoint (an import, or another run's step), with a fresh
    optimizer and schedule: `resume.restore_config=weights(path=DIR)`. A run's own checkpoints still win on
    resume."""
    return run.Config(nl.RestoreConfig, path=path, load_optim_state=False)
