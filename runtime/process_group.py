"""Running a NeMo step (an import, an export, a merge) inside a process that lives on afterwards.

NeMo's connectors start a one-rank process group through Lightning, which writes MASTER_PORT & co. into
os.environ while its TCP store keeps listening on that port. Left as is, the next process group in this
process finds megatron's parallel state already set, and every child process inheriting the environment
fails with EADDRINUSE. `left_as_found()` takes down what the step brought up and restores the variables.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

DISTRIBUTED_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK",
                         "LOCAL_WORLD_SIZE", "GROUP_RANK")


@contextlib.contextmanager
def left_as_found() -> Iterator[None]:
    """The process group, megatron's parallel state and the distributed variables are as before on exit."""
    import torch.distributed as dist

    was_up = dist.is_initialized()
    saved = {name: os.environ.get(name) for name in DISTRIBUTED_VARIABLES}
    try:
        yield
    finally:
        if not was_up and dist.is_initialized():
            from megatron.core import parallel_state

            parallel_state.destroy_model_parallel()
            dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
