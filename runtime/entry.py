"""What every launched process runs: prepare the machine, then call the recipe's training function."""

from runtime import checkpoints, cpu, no_te, resume, signals


def train(recipe, import_how: str = checkpoints.import_command("NAME")):
    """`recipe` arrives built (a functools.partial of llm.pretrain / llm.finetune). Its starting weights are
    checked first: on Slurm the submitter may not see them, and a missing import then fails here in seconds
    (`import_how` names the command), not after NeMo, the process groups and the data have started. Then
    the checkpoint it resumes from is chosen and named (runtime/resume.py); one that cannot be read ends
    the run with one line naming it."""
    checkpoints.require_restorable_recipe(recipe, import_how)
    decision = resume.apply(recipe)
    cpu.enable()
    no_te.enable()
    signals.keep_checkpoint_writer_alive_on_sigterm()
    try:
        result = recipe()
    except Exception as error:
        if decision.checkpoint is not None and resume.raised_while_restoring(error):
            raise resume.unreadable(decision.checkpoint, error) from error
        raise
    _after_training(recipe)
    return result


def _after_training(recipe) -> None:
    """Callbacks that act on the finished run (e.g. training.checkpoint_averaging) define `after_training(trainer)`."""
    trainer = getattr(recipe, "keywords", {}).get("trainer")
    for callback in trainer.callbacks if trainer is not None else []:
        if callable(getattr(callback, "after_training", None)):
            callback.after_training(trainer)
