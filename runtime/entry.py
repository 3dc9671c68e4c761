"""What every launched process runs: prepare the machine, then call the recipe's training function."""

from runtime import cpu, no_te


def train(recipe):
    """`recipe` arrives built (a functools.partial of llm.pretrain / llm.finetune)."""
    cpu.enable()
    no_te.enable()
    result = recipe()
    _after_training(recipe)
    return result


def _after_training(recipe) -> None:
    """Recipe options that act on the finished run (conversion.average.AverageLastCheckpoints)."""
    trainer = getattr(recipe, "keywords", {}).get("trainer")
    if trainer is not None and any(type(c).__name__ == "AverageLastCheckpoints" for c in trainer.callbacks):
        from conversion import average

        average.average_after_training(trainer)
