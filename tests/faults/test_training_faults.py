"""Issue 16: a training run killed anywhere (SIGKILL during a checkpoint save, during validation), stopped by
SIGTERM (Slurm's time limit, preemption), or given a checkpoint that cannot be read. Real launches of
tiny_llama_pretrain, real signals to the launch's whole process group, decided by what the run wrote."""

import signal

import pytest

from launching import assert_succeeded, launch, launch_until, training_steps
from runtime import resume

pytestmark = pytest.mark.slow

RUN = ("recipe=tiny_llama_pretrain", "trainer.max_steps=12", "log.ckpt.every_n_train_steps=4", "trainer.val_check_interval=3")
# Per-step losses of the same run uninterrupted (seeded, CPU float32): the killed and resumed run must match.
UNINTERRUPTED_LOSSES = [8.318, 8.308, 8.26, 8.157, 8.045, 7.96, 7.838, 7.715, 7.624, 7.523, 7.522, 7.525]
STEP_7 = "step=7-consumed_samples=64.0"


def resume_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("resume: ")]


def test_killed_during_a_save_and_validation_then_sigterm_resumes_from_the_newest_complete_checkpoint(tmp_path):
    checkpoints = tmp_path / "results" / "tiny_llama_pretrain" / "checkpoints"
    losses = {}

    # 1. SIGKILL while `step=7-...-last` is written, its twin `step=7-...` complete: NeMo's AutoResume alone
    #    would go back to the older -last of step 5.
    last_7_marker = checkpoints / f"{STEP_7}-last-unfinished"
    status, output = launch_until(*RUN, cwd=tmp_path, until=lambda _: last_7_marker.exists())
    assert status == -signal.SIGKILL
    assert resume_lines(output) == [f"resume: no complete checkpoint in {checkpoints.relative_to(tmp_path)}: starting at step 0"]
    losses.update((step, loss) for step, loss, _ in training_steps(output))

    # 2. It resumes from step 7, names the -last it skipped; SIGKILL during the validation after step 8.
    status, output = launch_until(*RUN, cwd=tmp_path, until=lambda out: "global_step: 8 " in out
                                  and "Validation: iteration 1/2" in out.split("global_step: 8 ")[1])
    assert status == -signal.SIGKILL
    assert resume_lines(output) == [
        f"resume: from results/tiny_llama_pretrain/checkpoints/{STEP_7} (global step 7)",
        f"resume: skipped incomplete checkpoint results/tiny_llama_pretrain/checkpoints/{STEP_7}-last "
        "(killed while being written or deleted)",
    ]
    steps = training_steps(output)
    assert steps[0][0] == 8 and steps[0][2] == 72, "global step and consumed samples continue after step 7"
    losses.update((step, loss) for step, loss, _ in steps)

    # 3. SIGTERM during step 10 (no save under way): NeMo's PreemptionCallback saves a -last and exits 0.
    status, output = launch_until(*RUN, cwd=tmp_path, sig=signal.SIGTERM, until=lambda out: "global_step: 9 " in out
                                  and not any(checkpoints.glob("*-unfinished")))
    assert status == 0, output[-3000:]
    assert resume_lines(output)[0] == f"resume: from results/tiny_llama_pretrain/checkpoints/{STEP_7} (global step 7)"
    assert "Preemption detected, saving checkpoint and exiting" in output
    losses.update((step, loss) for step, loss, _ in training_steps(output))
    preempted = max(checkpoints.glob("step=*-last"), key=resume.step_of)

    # 4. The next launch continues from the SIGTERM checkpoint to the end, with the uninterrupted run's losses.
    final = launch(*RUN, cwd=tmp_path)
    assert_succeeded(final)
    assert resume_lines(final.stdout)[0] == f"resume: from {preempted.relative_to(tmp_path)} (global step {resume.step_of(preempted)})"
    steps = training_steps(final.stdout + final.stderr)
    assert steps[-1][0] == 11 and steps[-1][2] == 96
    losses.update((step, loss) for step, loss, _ in steps)
    for step, loss in losses.items():
        assert loss == pytest.approx(UNINTERRUPTED_LOSSES[step], abs=2e-3), (step, losses)

    # 5. A checkpoint that cannot be read (a truncated weights file): one error naming it, exit 1, no training.
    newest = checkpoints / "step=11-consumed_samples=96.0-last"
    shard = next((newest / "weights").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])
    broken = launch(*RUN[:1], "trainer.max_steps=14", cwd=tmp_path)
    assert broken.returncode == 1
    errors = [line for line in broken.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: cannot resume from checkpoint results/tiny_llama_pretrain/checkpoints/{newest.name}: "
                      "EOFError (move it aside to resume from the one before)"], broken.stderr[-3000:]
    assert training_steps(broken.stdout + broken.stderr) == []
