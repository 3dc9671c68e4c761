"""Every GPU recipe states what it is sized for as data (its module's TARGET_GPU, its trainer's nodes x devices), its
docstring says the same, and the plan of it on that target fits with at least 10% of the GPU's memory to spare.
CPU recipes fit this machine."""

import re

import pytest

from planning import GPUS, plan_config, recipe_target_gpu
from recipes.registry import discover

RECIPES = discover()
SIZED_FOR = re.compile(r"(\d+) nodes? x (\d+) ([A-Z]\d+ \d+GB)")
# A GPU recipe is one whose docstring names GPUs; each must then state its target as data.
GPU_RECIPES = sorted(name for name, info in RECIPES.items() if SIZED_FOR.search(" ".join(info.docstring.split())))
CPU_RECIPES = sorted(set(RECIPES) - set(GPU_RECIPES))


def _gpu_words(gpu: str) -> str:
    """'h100-80gb' -> 'H100 80GB', the words the docstrings use."""
    kind, memory = gpu.split("-")
    return f"{kind.upper()} {memory.upper()}"


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_docstring_agrees_with_the_stated_target(recipe_config, name):
    info = RECIPES[name]
    target = recipe_target_gpu(info.module)
    assert target in GPUS, f"{info.module} states no TARGET_GPU"
    config = recipe_config(name)
    nodes, devices, words = SIZED_FOR.search(" ".join(info.docstring.split())).groups()
    assert (int(nodes), int(devices), words) == (config.trainer.num_nodes, config.trainer.devices, _gpu_words(target))


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_gpu_recipe_fits_its_target_with_ten_percent_to_spare(recipe_config, name):
    config = recipe_config(name)
    plan = plan_config(config, gpu=recipe_target_gpu(RECIPES[name].module), suggest=False)
    assert plan.spare_fraction >= 0.10, plan.render()


@pytest.mark.parametrize("name", CPU_RECIPES)
def test_cpu_recipe_is_planned_against_this_machine(recipe_config, name):
    plan = plan_config(recipe_config(name))
    assert plan.on_cpu and plan.timing is None
    assert plan.fits, plan.render()
