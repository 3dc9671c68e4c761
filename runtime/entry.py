"""What every launched process runs: prepare the machine, then call the recipe's training function."""

from runtime import checkpoints, cpu, no_te, resume, signals


def train(recipe, import_how: str = checkpoints.import_command("NAME")):
    """`recipe` arrives built (a functools.partial of llm.pretrain / llm.finetune). Its starting weights are
    checked first: on Slurm the submitter may not see them, and a missing import then fails here in seconds
    (`import_how` names the command), not after NeMo, the process groups and the data have started. Then
    the checkpoint it resumes from is chosen and named (runtime/resume.py); one that cannot be read ends
    the run with one line naming it, as does a save that fails (a full disk). A DPO checkpoint without its
    reference table is refused here too, before NeMo starts (the submitter of a Slurm job may not see it)."""
    checkpoints.require_restorable_recipe(recipe, import_how)
    decision = resume.apply(recipe)
    _refuse_bad_resume(recipe, decision.checkpoint)
    cpu.enable()
    no_te.enable()
    signals.keep_checkpoint_writer_alive_on_sigterm()
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        result = recipe()
    except (Exception, CheckpointException) as error:  # torch's CheckpointException is a BaseException
        if decision.checkpoint is not None and resume.raised_while_restoring(error):
            raise resume.unreadable(decision.checkpoint, error) from error
        if resume.raised_while_saving(error):
            raise resume.save_failed(decision.folder, error) from error
        raise
    _after_training(recipe)
    return result


def _refuse_bad_resume(recipe, checkpoint) -> None:
    """Callbacks that cannot continue from some checkpoints (e.g. training.preference_steps: DPO without its reference
    table) define `refuse_resume_from(checkpoint)`; it raises the launcher's refusal, the same one line."""
    trainer = getattr(recipe, "keywords", {}).get("trainer")
    if checkpoint is None or trainer is None:
        return
    for callback in trainer.callbacks:
        if callable(getattr(callback, "refuse_resume_from", None)):
            callback.refuse_resume_from(checkpoint)


def _after_training(recipe) -> None:
    """Callbacks that act on the finished run (e.g. training.checkpoint_averaging) define `after_training(trainer)`."""
    trainer = getattr(recipe, "keywords", {}).get("trainer")
    for callback in trainer.callbacks if trainer is not None else []:
        if callable(getattr(callback, "after_training", None)):
            callback.after_training(trainer)
