"""The tiny mixture of experts trains on CPU through launch.py: one process, and expert parallel 2 over two
gloo processes with the same losses, checkpoints and exact resume. The two-process runs are also the suite's
data-parallel proof: expert parallel 2 on 2 processes is data parallel 2 for every dense weight (each rank
takes half of each global batch, their gradients all-reduced), and a run of it resumes exactly.

Megatron seeds each expert-parallel rank's experts differently (its expert RNG tracker), so runs of different
expert-parallel sizes initialise different experts. To compare like with like, every run here starts from one
set of weights, `resume.restore_config=weights(path=...)`: a tiny random HF Mixtral of tiny_moe's shapes,
imported by conversion.hf_to_nemo (the session fixture the conversion tests share). Three launches: one
process, two processes (expert parallel 2), and the two-process run again after an interruption.
"""

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from launching import assert_succeeded, interrupt_after, launch, training_steps

pytestmark = pytest.mark.slow  # every test here trains

STEPS = 6
RUN = ("recipe=tiny_moe_pretrain", f"trainer.max_steps={STEPS}", "log.ckpt.every_n_train_steps=3")
EXPERT_PARALLEL_2 = ("trainer.devices=2", "trainer.strategy.expert_model_parallel_size=2")
# As the tensor-parallel comparison of tests/preference: float32 on CPU, summation order aside.
TOLERANCE = dict(abs=1e-5, rel=1e-5)
# 2 layers x (attention 12,416 + router 4 x 64 + 4 experts x 24,576 (fc1 64->2x128 gated, fc2 128->64)) plus
# embedding and output layer 2 x 4,096 x 64 and the final norm.
PARAMETERS = 746_304
PARAMETERS_ON_EXPERT_PARALLEL_RANK = PARAMETERS - 2 * 2 * 24_576  # each rank holds 2 of the 4 experts


def output_of(result) -> str:
    return result.stdout + result.stderr


def checkpoints_of(run_dir: Path) -> Path:
    return run_dir / "results" / "tiny_moe_pretrain" / "checkpoints"


def logged_losses(run_dir: Path, skip: set[Path] = frozenset()) -> dict[int, float]:
    """Train losses by step at full float32 precision, from the TensorBoard files rank 0 wrote
    (the console prints 3 decimals), leaving out the files in `skip` (an earlier launch's)."""
    losses = {}
    for events in sorted(set(run_dir.glob("results/**/events.out.tfevents.*")) - set(skip)):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        losses.update({event.step: event.value for event in accumulator.Scalars("reduced_train_loss")})
    return losses


def parameters_logged(output: str) -> int:
    line = next(line for line in output.splitlines() if "number of parameters on (tensor, pipeline)" in line)
    return int(line.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def starting_weights(tiny_imports) -> str:
    _, imported = tiny_imports("MixtralForCausalLM")
    return f"resume.restore_config=weights(path={imported})"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, starting_weights):
    run_dir = tmp_path_factory.mktemp("one_process")
    result = launch(*RUN, starting_weights, cwd=run_dir)
    assert_succeeded(result)
    return logged_losses(run_dir), output_of(result)


@pytest.fixture(scope="module")
def expert_parallel(tmp_path_factory, starting_weights):
    run_dir = tmp_path_factory.mktemp("expert_parallel")
    result = launch(*RUN, starting_weights, *EXPERT_PARALLEL_2, cwd=run_dir)
    assert_succeeded(result)
    return run_dir, logged_losses(run_dir), output_of(result)


def test_one_process_learns_with_its_experts_in_place(one_process):
    losses, output = one_process
    assert "Restoring model weights from RestoreConfig" in output
    assert sorted(losses) == list(range(STEPS))
    assert losses[STEPS - 1] < losses[0] - 0.2, losses
    assert parameters_logged(output) == PARAMETERS
    for layer in (0, 1):
        for expert in range(4):
            assert f"decoder.layers.{layer}.mlp.experts.local_experts.{expert}.linear_fc1.weight" in output


def test_expert_parallel_2_over_two_processes_equals_one_process(one_process, expert_parallel):
    single, _ = one_process
    _, parallel, parallel_output = expert_parallel
    assert "--nproc-per-node 2" in parallel_output or "nproc_per_node           : 2" in parallel_output
    assert parameters_logged(parallel_output) == PARAMETERS_ON_EXPERT_PARALLEL_RANK
    assert sorted(parallel) == list(range(STEPS))
    # Two data-parallel ranks of micro batch 4 fill the global batch of 8 in one micro-step each (step 0's line
    # has no consumed samples yet).
    consumed = [samples for _, _, samples in training_steps(parallel_output)]
    assert consumed[1:] == [8 * (step + 1) for step in range(1, STEPS)], consumed
    for step in range(STEPS):
        assert parallel[step] == pytest.approx(single[step], **TOLERANCE), step


def test_expert_parallel_run_resumes_exactly(one_process, expert_parallel, starting_weights):
    single, _ = one_process
    run_dir, parallel, _ = expert_parallel
    before = set(run_dir.glob("results/**/events.out.tfevents.*"))
    # An interruption after the step-3 checkpoint (saved by the two processes, experts split between them).
    interrupt_after(checkpoints_of(run_dir), step=3)
    resumed = launch(*RUN, starting_weights, *EXPERT_PARALLEL_2, cwd=run_dir)
    assert_succeeded(resumed)
    assert "Restoring states from the checkpoint path" in output_of(resumed)
    assert [consumed for _, _, consumed in training_steps(output_of(resumed))] == [8 * (step + 1) for step in range(3, STEPS)]
    losses = logged_losses(run_dir, skip=before)
    assert sorted(losses) == list(range(3, STEPS))
    for step in range(3, STEPS):
        assert losses[step] == pytest.approx(parallel[step], **TOLERANCE), step
        assert losses[step] == pytest.approx(single[step], **TOLERANCE), step
