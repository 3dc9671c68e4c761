"""Which checkpoint a run resumes from: decided before NeMo looks, checked, and said out loud.

NeMo's ModelCheckpoint puts a `<checkpoint>-unfinished` marker beside a checkpoint before it writes or
deletes one and removes it only once every rank's files are written (with async saves: in the finalize
callback, after the background writes and a barrier). AutoResume (nemo/lightning/resume.py) then resumes
from the newest `*-last` checkpoint without a marker. Where that falls short after a kill:
- a kill while `step=N-...-last` is written, just after its twin `step=N-...` was completed, sends
  AutoResume back to an older `-last`, or, when there is none, makes it raise;
- which checkpoint it took and which it skipped are warnings in NeMo's log, if anywhere;
- a checkpoint of another model, or one that cannot be read, surfaces as a traceback from deep inside
  the restore; a `resume.resume_from_path` that does not exist trains from scratch.

So before training (runtime.entry.train, and the launcher before it launches) the checkpoint folder is read
here: the newest checkpoint without a marker is the one to resume from, handed to AutoResume as
`resume_from_path`; checkpoints with a marker are named as skipped (ModelCheckpoint deletes them at setup).
A checkpoint without a marker that lacks files or holds another architecture is an error naming it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import RunFailed, UserError
from runtime import checkpoints

UNFINISHED_SUFFIX = "-unfinished"  # nemo.lightning.pytorch.callbacks.ModelCheckpoint.UNFINISHED_CHECKPOINT_SUFFIX
STEP = re.compile(r"^step=(\d+)")
RESUME_FROM_PATH_KEY = "resume.resume_from_path"
RESUME_FROM_DIRECTORY_KEY = "resume.resume_from_directory"
# Lightning restores a checkpoint (weights, optimizer, loops, data position) from this module: an error raised
# inside it is a checkpoint that cannot be read. (megatron-core's dist_checkpointing is on the save path too.)
RESTORING_MODULE = "lightning/pytorch/trainer/connectors/checkpoint_connector.py"


@dataclass
class Decision:
    """Where a launch starts: `checkpoint` (None: from scratch or the starting weights) and what was skipped."""

    folder: Path | None
    checkpoint: Path | None = None
    skipped: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        skipped = "".join(f"\nresume: skipped incomplete checkpoint {p} (killed while being written or deleted)"
                          for p in self.skipped)
        if self.checkpoint is not None:
            return f"resume: from {self.checkpoint} (global step {step_of(self.checkpoint)})" + skipped
        where = f"no complete checkpoint in {self.folder}" if self.folder else "resume_if_exists is off"
        return f"resume: {where}: starting at step 0" + skipped


def step_of(checkpoint: Path) -> int:
    """The global step a `step=N-...` checkpoint was saved after (ModelCheckpoint's filename `{step}-...`)."""
    return int(STEP.match(checkpoint.name).group(1))


def is_unfinished(checkpoint: Path) -> bool:
    return checkpoint.with_name(checkpoint.name + UNFINISHED_SUFFIX).exists()


def checkpoint_folder(log, resume) -> Path | None:
    """The folder AutoResume searches, from the NeMoLogger and AutoResume of a recipe (fiddle configs or built
    objects alike): `resume.resume_from_directory`, else `log.ckpt.dirpath`, else `<log dir>/checkpoints`
    as NeMoLogger.setup composes it. None when the run does not resume."""
    if resume is None or not getattr(resume, "resume_if_exists", False):
        return None
    if getattr(resume, "resume_from_directory", None):
        return Path(resume.resume_from_directory)
    ckpt = getattr(log, "ckpt", None)
    if ckpt is not None and getattr(ckpt, "dirpath", None):
        return Path(ckpt.dirpath)
    if getattr(log, "explicit_log_dir", None):
        return Path(log.explicit_log_dir) / "checkpoints"
    version = getattr(log, "version", None) or os.environ.get("NEMO_EXPM_VERSION")
    run_dir = Path(log.log_dir) / str(log.name)
    return (run_dir / str(version) if version else run_dir) / "checkpoints"


def saved_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders named `step=N-...`, newest step first, `-last` before its twin of the same step."""
    found = [p for p in folder.iterdir() if p.is_dir() and STEP.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: (step_of(p), p.name.endswith("-last")), reverse=True)


def decide(log, resume, expected: dict | None = None) -> Decision:
    """The newest complete checkpoint of the run's folder, after the checks of `require_readable`."""
    explicit = getattr(resume, "resume_from_path", None) if resume is not None else None
    if explicit:
        checkpoint = Path(explicit)
        require_readable(checkpoint, expected, RESUME_FROM_PATH_KEY)
        return Decision(checkpoint.parent, checkpoint)
    folder = checkpoint_folder(log, resume)
    if folder is None:
        return Decision(None)
    if getattr(resume, "resume_from_directory", None) and not folder.is_dir():
        raise UserError(f"{RESUME_FROM_DIRECTORY_KEY}: {folder} does not exist: point it at a run's checkpoints/ folder")
    # A marker can exist before its checkpoint's folder does (a kill right after ModelCheckpoint placed it).
    decision = Decision(folder, skipped=sorted(m.with_name(m.name.removesuffix(UNFINISHED_SUFFIX))
                                               for m in folder.glob(f"*{UNFINISHED_SUFFIX}")))
    complete = [c for c in saved_checkpoints(folder) if not is_unfinished(c)]
    if complete:
        require_readable(complete[0], expected)
        decision.checkpoint = complete[0]
    return decision


def require_readable(checkpoint: Path, expected: dict | None, key: str | None = None) -> None:
    """A checkpoint without NeMo's marker must be whole and of the recipe's architecture: training from
    anything else, or from scratch beside it, would lose the run silently."""
    where = f"{key}: {checkpoint}" if key else f"checkpoint {checkpoint}"
    if not checkpoint.is_dir():
        raise UserError(f"{where} does not exist: point {key or RESUME_FROM_PATH_KEY} at a saved checkpoint folder")
    missing = checkpoints.missing_parts(checkpoint)
    if missing:
        raise UserError(f"{where} cannot be resumed from: it has no unfinished marker but lacks {', '.join(missing)} "
                        "(damaged after it was written?); move it aside to resume from the one before")
    mismatches = checkpoints.architecture_mismatches(expected or {}, checkpoints.saved_architecture(checkpoint))
    if mismatches:
        raise UserError(f"{where} holds another model than the recipe's ({'; '.join(mismatches)}): "
                        "set log.name or log.log_dir to start this model's run elsewhere")


def expected_architecture(model) -> dict:
    """The architecture of a built recipe's model, as checkpoints.architecture_of reads it."""
    return checkpoints.architecture_of(type(model).__name__, model.config)


def apply(recipe) -> Decision:
    """In the training process: decides, prints the decision (rank 0), and points AutoResume at it."""
    keywords = getattr(recipe, "keywords", {})
    resume, model = keywords.get("resume"), keywords.get("model")
    decision = decide(keywords.get("log"), resume, expected_architecture(model) if model is not None else None)
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0":
        print(decision.describe(), flush=True)
    if decision.checkpoint is not None:
        resume.resume_from_path = str(decision.checkpoint)
    return decision


def raised_while_restoring(error: BaseException) -> bool:
    """True when `error` was raised inside Lightning's or megatron-core's checkpoint reading."""
    traceback = error.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename.replace(os.sep, "/")
        if filename.endswith(RESTORING_MODULE):
            return True
        traceback = traceback.tb_next
    return False


def _root_cause(error: BaseException) -> BaseException:
    """The first per-rank failure of torch.distributed.checkpoint's CheckpointException (its message only
    lists the ranks), else the innermost exception of the chain."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        failures = getattr(error, "failures", None)
        if failures:
            first = next(iter(failures.values()))  # torch keeps (exception, traceback summary) per rank
            return first[0] if isinstance(first, tuple) else getattr(first, "exc", first)
        following = error.__cause__ or error.__context__
        if following is None:
            return error
        error = following
    return error


def unreadable(checkpoint: Path, error: BaseException) -> RunFailed:
    """The one-line failure of a checkpoint that passed the checks above but could not be read."""
    error = _root_cause(error)
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return RunFailed(f"cannot resume from checkpoint {checkpoint}: {type(error).__name__}{': ' + reason[:300] if reason else ''} "
                     "(move it aside to resume from the one before)")
