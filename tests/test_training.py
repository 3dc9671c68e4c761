"""Real NeMo 2 training on the CPU, through launch.py: the tiny recipes, resume, and 2-process runs."""

import math
import subprocess
import sys

import pytest

from launching import REPO, assert_succeeded, child_environment, launch, training_steps

CHAT_SFT = REPO / "data" / "sft_examples" / "chat_sft"

pytestmark = pytest.mark.slow  # every test here trains or launches training

# Recorded from a clean run of tiny_llama_pretrain (seeded; CPU float32) with RECORDED_THREADS intra-op threads
# per process, which the runs compared with it are given: float32 sums change with the thread count. A change to
# the model, data, optimizer or CPU path that alters training shows up here.
RECORDED_PRETRAIN_LOSSES = [8.318, 8.308, 8.26, 8.157, 8.045]
RECORDED_THREADS = "2"


def output_of(result) -> str:
    return result.stdout + result.stderr


def test_tiny_pretrain_learns_saves_and_resumes(tmp_path):
    first = launch("recipe=tiny_llama_pretrain", "trainer.max_steps=20", cwd=tmp_path, OMP_NUM_THREADS=RECORDED_THREADS)
    assert_succeeded(first)
    steps = training_steps(output_of(first))
    assert [s[0] for s in steps] == list(range(20))
    losses = [loss for _, loss, _ in steps]
    assert losses[:5] == pytest_approx(RECORDED_PRETRAIN_LOSSES)
    assert losses[-1] < losses[0] - 0.8, losses
    checkpoints = sorted(p.name for p in (tmp_path / "results/tiny_llama_pretrain/checkpoints").iterdir())
    assert any("step=19" in name and name.endswith("-last") for name in checkpoints), checkpoints

    second = launch("recipe=tiny_llama_pretrain", "trainer.max_steps=30", cwd=tmp_path)
    assert_succeeded(second)
    assert "Restoring states from the checkpoint path" in output_of(second)
    resumed = training_steps(output_of(second))
    assert [s[0] for s in resumed] == list(range(20, 30)), "the second run must continue at step 20"
    assert resumed[0][2] == steps[-1][2] + 8, "consumed samples continue (global batch 8)"
    assert resumed[-1][1] < steps[0][1]


def pytest_approx(values):
    import pytest

    return pytest.approx(values, abs=0.02)


def test_tensor_parallel_2_over_two_processes(tmp_path):
    result = launch(
        "recipe=tiny_llama_pretrain",
        "trainer.devices=2",
        "trainer.strategy.tensor_model_parallel_size=2",
        "trainer.max_steps=8",
        cwd=tmp_path,
        OMP_NUM_THREADS=RECORDED_THREADS,
    )
    assert_succeeded(result)
    assert "--nproc-per-node 2" in output_of(result) or "nproc_per_node           : 2" in output_of(result)
    steps = training_steps(output_of(result))
    assert len(steps) == 8 and steps[-1][1] < steps[0][1]
    # The same seed split over two ranks trains as one process does: the recorded single-process losses.
    assert [loss for _, loss, _ in steps[:5]] == pytest_approx(RECORDED_PRETRAIN_LOSSES)


def test_a_failing_two_process_run_exits_1(tmp_path):
    """torchrun's job fails in its processes (pairs that are not JSON): launch.py says so and exits 1."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("not json\n")
    result = launch("recipe=tiny_llama_dpo", f"data.paths.0={pairs}", "trainer.devices=2", cwd=tmp_path)
    assert result.returncode == 1, output_of(result)[-3000:]
    assert "error: tiny_llama_dpo ended FAILED under torchrun --nnodes 1 --nproc-per-node 2" in result.stderr


def test_tiny_sft_learns(tmp_path):
    result = launch("recipe=tiny_llama_sft", "trainer.max_steps=12", cwd=tmp_path)
    assert_succeeded(result)
    losses = [loss for _, loss, _ in training_steps(output_of(result))]
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.3, losses


def test_tiny_lora_trains_only_adapters_and_learns(tmp_path):
    result = launch("recipe=tiny_llama_lora", "trainer.max_steps=12", cwd=tmp_path)
    assert_succeeded(result)
    output = output_of(result)
    assert "Adding lora to" in output
    losses = [loss for _, loss, _ in training_steps(output)]
    assert len(losses) == 12 and losses[-1] < losses[0], losses
    # The checkpoint NeMo's PEFT writes holds what was trained, with its Adam state: exactly the A and B matrices of
    # the four adapted projections in both layers, no base weight. The optimizer updates nothing else.
    last = next((tmp_path / "results" / "tiny_llama_lora" / "checkpoints").glob("*-last"))
    tensors = checkpoint_tensors(last)
    adapters = {f"module.decoder.layers.{layer}.adapter.linear_{side}.weight"
                for layer in ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")
                for side in ("in", "out")}
    assert {name for name in tensors if not name.startswith("optimizer.")} == adapters
    assert {name.split(".", 3)[3] for name in tensors if name.startswith("optimizer.")} == adapters
    assert {name.split(".")[2] for name in tensors if name.startswith("optimizer.")} == {"exp_avg", "exp_avg_sq"}
    for name in adapters:
        assert tensors[name].shape[0] == 2 and tensors[name].abs().max() > 0, name  # 2 layers; B left zero init


def checkpoint_tensors(checkpoint) -> dict:
    """Every tensor a dist checkpoint holds (model and optimizer state), by name, read without building a model."""
    from megatron.core import dist_checkpointing

    from conversion._cpu import cuda_queries_answered_by_cpu
    from conversion.average import single_process_megatron

    with single_process_megatron(), cuda_queries_answered_by_cpu():
        loaded = dist_checkpointing.load_plain_tensors(str(checkpoint / "weights"))
    return {name: value for name, value in loaded.items() if hasattr(value, "shape")}


def test_tiny_sft_learns_multi_turn_chat_from_the_launcher(tmp_path):
    result = launch("recipe=tiny_llama_sft", f"data.dataset_root={CHAT_SFT}", "trainer.max_steps=10", cwd=tmp_path)
    assert_succeeded(result)
    losses = [loss for _, loss, _ in training_steps(output_of(result))]
    assert len(losses) == 10 and losses[-1] < losses[0] - 0.3, losses


def test_tiny_sft_learns_packed_multi_turn_chat_on_the_cpu(tmp_path):
    """The shipped chat data packed by `python -m data.packing` (ChatML, rows of 256 tokens, about 2 conversations
    each) trains without Transformer Engine: the rows carry a block-diagonal causal mask instead of THD boundaries
    (the same losses as unpacked: tests/data/test_packing.py). Validation at step 5 reads packed rows too."""
    packed = tmp_path / "packed"
    made = subprocess.run(
        [sys.executable, "-m", "data.packing", "--train", str(CHAT_SFT / "training.jsonl"),
         "--validation", str(CHAT_SFT / "validation.jsonl"), "--tokenizer", str(REPO / "models/tokenizers/tiny"),
         "--template", "chatml", "--pack-size", "256", "--output-dir", str(packed)],
        cwd=REPO, env=child_environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0 and "training: packed 228 sequences into 102 bins" in made.stdout, made.stderr
    result = launch("recipe=tiny_llama_sft", f"data.dataset_root={CHAT_SFT}", "data.template=chatml",
                    f"data.packed_sequence_specs=packed(directory={packed},size=256)", "data.micro_batch_size=1",
                    "data.global_batch_size=4", "data.seq_length=256", "model.config.seq_length=256",
                    "trainer.max_steps=10", "trainer.val_check_interval=5", cwd=tmp_path)  # fmt: skip
    assert_succeeded(result)
    output = output_of(result)
    losses = [loss for _, loss, _ in training_steps(output)]
    assert len(losses) == 10 and all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < losses[0] - 0.5, losses
    assert "val_loss" in output
