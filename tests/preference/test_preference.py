"""DPO / SimPO: the loss reduction against the papers' formulas, tensor parallel against one process,
a tiny CPU DPO run whose reward margin and accuracy rise and which resumes with its original reference,
and two-stage pipeline-parallel runs of DPO, LoRA DPO and SimPO. About 8 minutes on 2 cores."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.preference_module import PreferenceConfigError, PreferenceDataModule
from launching import child_environment, interrupt_after
from training.preference import DPOLoss, PreferenceLossReduction, SimPOLoss

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5


# ---- the papers' formulas, written independently of training/preference.py ------------------------


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def dpo_paper(pc, pr, rc, rr, beta, eps):
    """Rafailov et al. 2023 eq. 7, with the conservative-DPO label smoothing eps (Mitchell 2023)."""
    losses, chosen, rejected = [], [], []
    for a, b, c, d in zip(pc, pr, rc, rr):
        h = beta * math.log(math.exp(a - c)) - beta * math.log(math.exp(b - d))
        losses.append(-(1 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h))
        chosen.append(beta * (a - c))
        rejected.append(beta * (b - d))
    return losses, chosen, rejected


def simpo_paper(pc, pr, lc, lr, beta, gamma):
    """Meng et al. 2024 eq. 6: -log sigma(beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma)."""
    losses = [-log_sigmoid(beta / n * a - beta / m * b - gamma) for a, b, n, m in zip(pc, pr, lc, lr)]
    return losses, [beta * a / n for a, n in zip(pc, lc)], [beta * b / m for b, m in zip(pr, lr)]


def metrics(losses, chosen, rejected):
    n = len(losses)
    return {
        "loss": sum(losses) / n,
        "reward_chosen": sum(chosen) / n,
        "reward_rejected": sum(rejected) / n,
        "reward_margin": sum(c - r for c, r in zip(chosen, rejected)) / n,
        "reward_accuracy": sum(c > r for c, r in zip(chosen, rejected)) / n,
    }


def sequence_sums(per_token, mask):
    """Per row: sum over masked positions of -loss (the label log-prob), and the masked token count."""
    rows = per_token.tolist()
    masks = mask.tolist()
    return ([-sum(v for v, m in zip(r, k) if m) for r, k in zip(rows, masks)],
            [float(sum(k)) for k in masks])


def reduction_numbers(loss, batch, per_token):
    reduction = PreferenceLossReduction(loss)
    loss_sum, pairs, stats = reduction.forward(batch, per_token)
    reduced = reduction.reduce([stats])
    assert torch.allclose(reduced, loss_sum / pairs)
    return {"loss": float(loss_sum / pairs), **reduction.last_metrics}


def assert_close(got: dict, want: dict, tol=TOL):
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=tol, rel=tol), key


@pytest.fixture
def fixed_batch():
    generator = torch.Generator().manual_seed(0)
    pairs, length = 5, 24
    per_token = torch.rand(2 * pairs, length, generator=generator, dtype=torch.float32) * 6
    mask = torch.zeros(2 * pairs, length)
    for row in range(2 * pairs):  # a prompt, then answers of different lengths, then padding
        start = 4 + row % 3
        mask[row, start : start + 5 + (row * 7) % 11] = 1
    reference = -(torch.rand(2 * pairs, generator=generator) * 40 + 20)
    return {"loss_mask": mask, "reference_logps": reference}, per_token


@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (0.5, 0.2)])
def test_dpo_reduction_matches_paper(fixed_batch, beta, eps):
    batch, per_token = fixed_batch
    logps, _ = sequence_sums(per_token, batch["loss_mask"])
    ref = batch["reference_logps"].tolist()
    want = metrics(*dpo_paper(logps[0::2], logps[1::2], ref[0::2], ref[1::2], beta, eps))
    assert_close(reduction_numbers(DPOLoss(beta=beta, label_smoothing=eps), batch, per_token), want)


@pytest.mark.parametrize("beta,gamma", [(10.0, 3.0), (2.5, 1.4)])
def test_simpo_reduction_matches_paper(fixed_batch, beta, gamma):
    batch, per_token = fixed_batch
    batch = {"loss_mask": batch["loss_mask"]}  # SimPO has no reference
    logps, lengths = sequence_sums(per_token, batch["loss_mask"])
    want = metrics(*simpo_paper(logps[0::2], logps[1::2], lengths[0::2], lengths[1::2], beta, gamma))
    assert_close(reduction_numbers(SimPOLoss(beta=beta, gamma=gamma), batch, per_token), want)


def test_dpo_without_reference_is_refused(fixed_batch):
    batch, per_token = fixed_batch
    with pytest.raises(RuntimeError, match="reference"):
        PreferenceLossReduction(DPOLoss()).forward({"loss_mask": batch["loss_mask"]}, per_token)


@pytest.mark.parametrize("key", ["micro_batch_size", "global_batch_size"])
def test_odd_batch_sizes_are_refused(key):
    sizes = {"micro_batch_size": 2, "global_batch_size": 4, key: 3}
    with pytest.raises(PreferenceConfigError, match=f"data.{key}=3"):
        PreferenceDataModule(paths=["unused"], **sizes)


def test_validation_rule():
    from recipes import registry
    from recipes.preference_validation import check_preference
    from recipes.validation import View

    config = registry.build("tiny_llama_dpo")
    assert list(check_preference(View(config))) == []
    config.data.micro_batch_size = 3
    config.trainer.strategy.context_parallel_size = 2
    found = "\n".join(check_preference(View(config)))
    assert "data.micro_batch_size (3)" in found and "context_parallel_size must be 1" in found
    assert list(check_preference(View(registry.build("tiny_llama_pretrain")))) == []


# ---- the tiny model: logits, tensor parallel ----------------------------------------------------------


def torchrun(processes: int, out: Path):
    env = child_environment(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
               "--master-port", str(29650 + processes), str(REPO / "tests/preference/model_check.py"), str(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def model_numbers(tmp_path_factory):
    return torchrun(2, tmp_path_factory.mktemp("tp") / "tp2.json")


def test_tiny_model_end_to_end_matches_paper(model_numbers):
    single = model_numbers["tp1"]
    # megatron's per-token cross entropy path == log_softmax of the logits
    assert single["logps"] == pytest.approx(single["logps_from_logits"], abs=1e-4, rel=1e-5)
    logps, lengths, ref = single["logps_from_logits"], single["lengths"], single["reference_logps"]
    dpo = metrics(*dpo_paper(logps[0::2], logps[1::2], ref[0::2], ref[1::2], 0.1, 0.1))
    simpo = metrics(*simpo_paper(logps[0::2], logps[1::2], lengths[0::2], lengths[1::2], 10.0, 3.0))
    assert_close(single["dpo"], dpo, tol=1e-4)
    assert_close(single["simpo"], simpo, tol=1e-4)


def test_tensor_parallel_2_matches_single_process(model_numbers):
    single, tp2 = model_numbers["tp1"], model_numbers
    assert tp2["logps"] == pytest.approx(single["logps"], abs=1e-4, rel=1e-5)
    for name in ("dpo", "simpo"):
        assert tp2[name]["loss"] == pytest.approx(single[name]["loss"], abs=TOL, rel=TOL)
        assert_close(tp2[name], single[name], tol=1e-4)


# ---- CPU training runs ---------------------------------------------------------------------------------

LINE = re.compile(r"global_step: (\d+) \| reduced_train_loss: ([-\d.e]+) \| reward_chosen: ([-\d.e]+) \| "
                  r"reward_rejected: ([-\d.e]+) \| reward_margin: ([-\d.e]+) \| reward_accuracy: ([-\d.e]+)")
LOSS, CHOSEN, REJECTED, MARGIN, ACCURACY = range(5)


def preference_run(recipe: str, *overrides: str, threads: int = 2) -> tuple[dict[int, list[float]], str]:
    """(per-step [loss, chosen, rejected, margin, accuracy], the whole log) of `launch.py recipe=...`."""
    command = [sys.executable, "launch.py", f"recipe={recipe}", "trainer.limit_val_batches=0", *overrides]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400,
                          env=child_environment(OMP_NUM_THREADS=str(threads)))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return {int(m[0]): [float(v) for v in m[1:]] for m in LINE.findall(output)}, output


def mean(rows, column):
    return sum(r[column] for r in rows) / len(rows)


def test_tiny_dpo_raises_margin_and_resumes_with_its_original_reference(tmp_path):
    steps = 24
    settings = (f"trainer.max_steps={steps}", f"log.log_dir={tmp_path}", f"log.ckpt.every_n_train_steps={steps // 2}")
    rows, output = preference_run("tiny_llama_dpo", *settings)
    assert sorted(rows) == list(range(steps)), output[-3000:]
    first, last = [rows[s] for s in range(4)], [rows[s] for s in range(steps - 6, steps)]
    # step 0: the policy is the reference, so loss = log 2 and every reward is 0
    assert rows[0][LOSS] == pytest.approx(math.log(2), abs=1e-3) and rows[0][MARGIN] == pytest.approx(0, abs=1e-4)
    print(f"margin {mean(first, MARGIN):.3f} -> {mean(last, MARGIN):.3f}, accuracy {mean(first, ACCURACY):.3f} -> "
          f"{mean(last, ACCURACY):.3f}, loss {mean(first, LOSS):.3f} -> {mean(last, LOSS):.3f}")
    assert mean(last, MARGIN) > mean(first, MARGIN) + 0.5
    assert mean(last, ACCURACY) > mean(first, ACCURACY) + 0.2
    assert mean(last, LOSS) < mean(first, LOSS) - 0.2

    # An interruption after the halfway checkpoint: it is the newest one left, as NeMo's resume finds it.
    checkpoints = tmp_path / "tiny_llama_dpo" / "checkpoints"
    interrupt_after(checkpoints, step=steps // 2)
    resumed, output = preference_run("tiny_llama_dpo", *settings)
    assert "reference log-probs of 134 train pairs: restored from the checkpoint" in output
    assert sorted(resumed) == list(range(steps // 2, steps)), output[-3000:]
    # Rescoring the reference from the resumed weights would restart at loss log 2; the saved one continues.
    for step, values in resumed.items():
        assert values == pytest.approx(rows[step], abs=2e-3), step


@pytest.mark.parametrize("recipe", ["tiny_llama_dpo", "tiny_llama_dpo_lora", "tiny_llama_simpo"])
def test_pipeline_parallel_2_over_two_processes(recipe, tmp_path):
    """Two pipeline stages (gloo): the reference pre-pass goes through megatron's pipeline schedule (for LoRA
    with the adapters off), the last stage computes the loss and its metrics reach rank 0's log."""
    steps = 4
    rows, output = preference_run(recipe, f"trainer.max_steps={steps}", f"log.log_dir={tmp_path}", "trainer.devices=2",
                                  "trainer.strategy.pipeline_model_parallel_size=2", threads=1)
    assert sorted(rows) == list(range(steps)), output[-3000:]
    if recipe.startswith("tiny_llama_dpo"):
        # the pre-pass scored exactly what step 0's training forward computes: policy == reference
        assert rows[0][LOSS] == pytest.approx(math.log(2), abs=1e-4) and rows[0][MARGIN] == pytest.approx(0, abs=1e-5)
    assert rows[steps - 1][MARGIN] > rows[0][MARGIN] and rows[steps - 1][LOSS] < rows[0][LOSS]
