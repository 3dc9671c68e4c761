"""Shared by the planning tests: NeMo imported once, recipes built once, megatron models built on the meta device
for any tensor/pipeline rank through torch's fake process group."""

import contextlib
import functools
import importlib

import pytest


@contextlib.contextmanager
def as_rank(tp: int, pp: int, tp_rank: int = 0, pp_rank: int = 0, ep: int = 1, etp: int | None = None):
    """megatron's parallel state as rank (tp_rank, pp_rank) of a tp x pp job, with expert parallel ep and expert
    tensor parallel etp (None: tp), sees it, in this one process: torch's "fake" backend answers collectives without
    peers, so modules get exactly that rank's shapes (and expert rank 0's experts)."""
    import math

    import torch.distributed as dist
    from megatron.core import parallel_state
    from torch.testing._internal.distributed.fake_pg import FakeStore

    etp = etp or tp
    # The smallest world both of megatron's layouts divide: tp x dp and etp x ep x expert dp per pipeline stage.
    stage_size = math.lcm(tp, etp * ep)
    # megatron orders ranks tp-cp-ep-dp-pp: pipeline stage pp_rank starts at stage_size x pp_rank.
    dist.init_process_group("fake", rank=tp_rank + stage_size * pp_rank, world_size=stage_size * pp, store=FakeStore())
    try:
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                                 expert_model_parallel_size=ep, expert_tensor_parallel_size=etp,
                                                 create_gloo_process_groups=False)
        yield
    finally:
        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()


@functools.cache
def recipe(name: str):
    """A recipe's config, fitted to this machine as a launch would (no Transformer Engine: fusions off)."""
    from recipes.registry import discover
    from runtime import machine

    config = getattr(importlib.import_module(discover()[name].module), name)()
    machine.adapt(config)
    return config


@pytest.fixture(scope="session")
def fake_rank():
    return as_rank


@pytest.fixture(scope="session")
def recipe_config():
    return recipe


@pytest.fixture(scope="session")
def saved_tensors():
    """tests/planning/saved_tensors.py as a module (test folders are not packages here), importable by name
    so that the processes it spawns can import it too (spawn hands them this sys.path)."""
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("saved_tensors")


@pytest.fixture(scope="session")
def nemo_llm(nemo):
    from runtime import no_te

    no_te.enable()
    return nemo
