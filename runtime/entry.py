"""What every launched process runs: prepare the machine, then call the recipe's training function."""

from runtime import cpu


def train(recipe):
    """`recipe` arrives built (a functools.partial of llm.pretrain / llm.finetune)."""
    cpu.enable()
    return recipe()
