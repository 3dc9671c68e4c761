"""SIGTERM reaches every process of a Slurm job step (time limit, preemption, `executor.signal`), helpers
included. NeMo's PreemptionCallback (recipes/blocks.py) then saves a checkpoint from the training process;
that save must not depend on a helper the same signal has just killed."""

import signal
from multiprocessing.managers import SyncManager

import torch.multiprocessing as mp


def keep_checkpoint_writer_alive_on_sigterm() -> None:
    """megatron-core's torch_dist writer collects the results of every save through a queue served by a
    `spawn`ed Manager process, started at the first save (dist_checkpointing/strategies/filesystem_async.py,
    `_results_queue`). A fresh interpreter dies on SIGTERM, and the preemption save then fails with
    BrokenPipeError (seen on a tiny CPU run). Start that server here, ignoring SIGTERM, and hand megatron its
    queue; it ends with the training process."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        manager = SyncManager(ctx=mp.get_context("spawn"))
        manager.start(initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_IGN))
        filesystem_async._results_queue = manager.Queue()
