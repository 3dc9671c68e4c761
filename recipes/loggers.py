"""Experiment loggers, switched on from the command line through nemo_run's factory registry:

    python launch.py recipe=... log.wandb=wandb(project=my-project,name=run-1)
    python launch.py recipe=... log.tensorboard=None

(nemo_run parses `Optional[str]` but not `str | None` in factory signatures.)
W&B reads its key from the environment (WANDB_API_KEY) only; nothing here or in any config holds it.
"""

from typing import Optional

import nemo_run as run
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from nemo import lightning as nl


@run.cli.factory(target=nl.NeMoLogger, target_arg="wandb")
def wandb(project: str = "nemo-recipes", name: Optional[str] = None, entity: Optional[str] = None) -> run.Config:
    return run.Config(WandbLogger, project=project, name=name, entity=entity)


@run.cli.factory(target=nl.NeMoLogger, target_arg="tensorboard")
def tensorboard(name: str = "tensorboard") -> run.Config:
    """TensorBoard event files under the run's log directory (NeMoLogger points save_dir there)."""
    return run.Config(TensorBoardLogger, save_dir="tb_logs", name=name)
