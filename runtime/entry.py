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
    """Callbacks that act on the finished run (e.g. training.checkpoint_averaging) define `after_training(trainer)`."""
    trainer = getattr(recipe, "keywords", {}).get("trainer")
    for callback in trainer.callbacks if trainer is not None else []:
        if callable(getattr(callback, "after_training", None)):
            callback.after_training(trainer)
