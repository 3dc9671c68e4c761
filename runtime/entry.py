"""What every launched process runs: prepare the machine, then call the recipe's training function."""

from runtime import checkpoints, cpu, no_te


def train(recipe, import_how: str = checkpoints.import_command("NAME")):
    """`recipe` arrives built (a functools.partial of llm.pretrain / llm.finetune). Its starting weights are
    checked first: on Slurm the submitter may not see them, and a missing import then fails here in seconds
    (`import_how` names the command), not after NeMo, the process groups and the data have started."""
    checkpoints.require_restorable_recipe(recipe, import_how)
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
