"""SIGTERM reaches every process of a Slurm job step (time limit, preemption, `executor.signal`), helpers
included. NeMo's PreemptionCallback (recipes/blocks.py) then saves a checkpoint from the training process;
that save must not depend on a helper the same signal has just killed."""

import ctypes
import os
import signal
from multiprocessing.managers import SyncManager

import torch.multiprocessing as mp


def keep_checkpoint_writer_alive_on_sigterm() -> None:
    """megatron-core's torch_dist writer collects the results of every save through a queue served by a
    `spawn`ed Manager process, started at the first save (dist_checkpointing/strategies/filesystem_async.py,
    `_results_queue`). A fresh interpreter dies on SIGTERM, and the preemption save then fails with
    BrokenPipeError (seen on a tiny CPU run). Start that server here, ignoring SIGTERM, and hand megatron its
    queue; it ends with the training process, however that ends (a SIGKILLed trainer would otherwise leave
    it running, ignoring SIGTERM, for good).

    The module global is private, but megatron-core (0.15) has no public way in: `_get_write_results_queue()`
    creates the queue lazily and neither `FileSystemWriterAsync` nor the save strategies take one. A
    megatron-core that renames it fails every launch here with an AttributeError, never silently, and the
    SIGTERM case of tests/faults/test_training_faults.py fails if the preemption save breaks."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        manager = SyncManager(ctx=mp.get_context("spawn"))
        manager.start(initializer=_ignore_sigterm_and_die_with_parent, initargs=(os.getpid(),))
        filesystem_async._results_queue = manager.Queue()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _ignore_sigterm_and_die_with_parent(parent_pid: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(0)
