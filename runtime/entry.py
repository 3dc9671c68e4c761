"""What every launched process runs: prepare the machine, then call the recipe's training function."""

from runtime import cpu, no_te


def train(recipe):
    """`recipe` arrives built (a functools.partial of llm.pretrain / llm.finetune)."""
    cpu.enable()
    no_te.enable()
    return recipe()
