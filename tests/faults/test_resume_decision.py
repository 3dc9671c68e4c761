"""runtime/resume.py on checkpoint folders laid out as NeMo's ModelCheckpoint leaves them after a kill
(real files; the layout of tests/faults/test_training_faults.py's real runs): which checkpoint a launch
resumes from, what it names as skipped, and what it refuses."""

from types import SimpleNamespace

import pytest

from common.errors import UserError
from runtime import resume

TINY = {"model": "LlamaModel", "num_layers": 2, "hidden_size": 64}


def saved(folder, name, num_layers=2, unfinished=False, parts=True):
    checkpoint = folder / name
    (checkpoint / "weights").mkdir(parents=True)
    (checkpoint / "context").mkdir()
    if parts:
        for part in ("weights/metadata.json", "weights/common.pt", "context/io.json"):
            (checkpoint / part).write_text("{}")
    (checkpoint / "context" / "model.yaml").write_text(
        f"_target_: nemo.collections.llm.gpt.model.llama.LlamaModel\nconfig:\n  num_layers: {num_layers}\n  hidden_size: 64\n")
    if unfinished:
        (folder / f"{name}-unfinished").touch()
    return checkpoint


def run_of(tmp_path, **resume_fields):
    log = SimpleNamespace(log_dir=str(tmp_path), name="run", version=None, explicit_log_dir=None, ckpt=None)
    return log, SimpleNamespace(**{"resume_if_exists": True, "resume_from_directory": None, "resume_from_path": None,
                                   **resume_fields})


def test_the_newest_complete_checkpoint_wins_over_an_unfinished_last_and_the_skipped_are_named(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    saved(folder, "step=3-consumed_samples=32.0")
    saved(folder, "step=5-consumed_samples=48.0-last")
    step_7 = saved(folder, "step=7-consumed_samples=64.0")
    (folder / "step=7-consumed_samples=64.0-last-unfinished").touch()  # killed before its folder existed
    saved(folder, "step=9-consumed_samples=80.0", unfinished=True)
    decision = resume.decide(*run_of(tmp_path), TINY)
    assert decision.checkpoint == step_7
    assert [p.name for p in decision.skipped] == ["step=7-consumed_samples=64.0-last", "step=9-consumed_samples=80.0"]
    assert decision.describe().splitlines()[0] == f"resume: from {step_7} (global step 7)"


def test_only_unfinished_checkpoints_start_from_step_0_and_say_so(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    saved(folder, "step=3-consumed_samples=32.0", unfinished=True)
    decision = resume.decide(*run_of(tmp_path), TINY)
    assert decision.checkpoint is None
    assert decision.describe().splitlines() == [
        f"resume: no complete checkpoint in {folder}: starting at step 0",
        f"resume: skipped incomplete checkpoint {folder / 'step=3-consumed_samples=32.0'} (killed while being written or deleted)",
    ]


def test_a_damaged_or_foreign_checkpoint_is_refused_naming_it(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    damaged = saved(folder, "step=3-consumed_samples=32.0", parts=False)
    with pytest.raises(UserError, match=f"checkpoint {damaged} cannot be resumed from: .* lacks weights/metadata.json"):
        resume.decide(*run_of(tmp_path), TINY)
    foreign = saved(folder, "step=5-consumed_samples=48.0", num_layers=4)
    with pytest.raises(UserError, match=f"checkpoint {foreign} holds another model .*num_layers: expected 2, found 4"):
        resume.decide(*run_of(tmp_path), TINY)


def test_an_explicit_resume_path_or_folder_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"resume.resume_from_path: .*/nowhere does not exist"):
        resume.decide(*run_of(tmp_path, resume_from_path=str(tmp_path / "nowhere")), TINY)
    log, settings = run_of(tmp_path)
    settings.resume_from_directory = str(tmp_path / "elsewhere")
    with pytest.raises(UserError, match=r"resume.resume_from_directory: .*/elsewhere does not exist"):
        resume.decide(log, settings, TINY)
