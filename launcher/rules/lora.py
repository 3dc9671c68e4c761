"""Validation rules for LoRA (`peft`): what NeMo's adapters need of the parallel layout."""

from fnmatch import fnmatch

from launcher.rules import settings
from launcher.validation import View, rule

LORA_RANK = "peft.dim"
LORA_TARGETS = "peft.target_modules"
# NeMo's adapter on a column-parallel layer starts with megatron's ColumnParallelLinear(in, rank), which splits
# the rank over the tensor-parallel ranks and asserts it divides; on a row-parallel layer (linear_proj,
# linear_fc2) it splits the input instead.
COLUMN_PARALLEL_LAYERS = ("linear_qkv", "linear_fc1")


def adapts_a_column_parallel_layer(targets) -> bool:
    """NeMo matches a target by module name or by wildcard on the full name (a.b.linear_qkv); no targets means
    every linear layer, the column-parallel output layer included."""
    if not targets:
        return True
    return any(fnmatch(layer, str(target).rsplit(".", 1)[-1]) for target in targets for layer in COLUMN_PARALLEL_LAYERS)


@rule
def check_lora_rank(get: View):
    rank, tp = get.optional(LORA_RANK), get(settings.TP, 1)
    if rank is None or tp == 1 or rank % tp == 0:
        return
    if adapts_a_column_parallel_layer(get.optional(LORA_TARGETS, [])):
        yield (f"{LORA_RANK} ({rank}) must be divisible by {settings.TP} ({tp}): NeMo splits the LoRA rank of column-parallel "
               f"layers ({', '.join(COLUMN_PARALLEL_LAYERS)}) over the tensor-parallel ranks")
