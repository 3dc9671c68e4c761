"""DPO / SimPO: the loss reduction against the papers' formulas, tensor parallel against one process,
packed batches against padded ones, tiny CPU DPO runs (padded and packed) whose reward margin and accuracy
rise, one of which resumes with its original reference, two-stage pipeline-parallel runs of DPO, packed LoRA
DPO and SimPO, and a two-rank data-parallel DPO run that splits the reference pre-pass. About 9 minutes on 2 cores."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.preference.datamodule import PreferenceConfigError, PreferenceDataModule, collate_packs, collate_pairs
from launching import child_environment, interrupt_after, launch
from training.preference_losses import DPOLoss, SimPOLoss
from training.preference_steps import PreferenceLossReduction

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5


# ---- the papers' formulas, written independently of training/preference_steps.py ------------------------


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


def test_reference_shares_must_cover_every_row_once():
    """The pre-pass table summed over data-parallel ranks: whole when the shares split the pairs, refused when
    they overlap or leave a gap (a row then holds two ranks' sum, or 0, and DPO trains against it silently)."""
    from common.errors import RunFailed
    from training.preference_steps import ReferenceScores

    def shares(*rank_rows):
        total = torch.zeros(2 * 3 * 2 + len(rank_rows))  # 3 pairs: 6 rows, 6 counts, one count per rank
        for rank, rows in enumerate(rank_rows):
            scores = ReferenceScores(pairs=3, data_ranks=len(rank_rows))
            rows = torch.tensor(rows)
            scores.record(rows, -(rows.float() + 1), rank)
            total += scores.values
        return total

    table, per_rank = ReferenceScores.assembled(shares([0, 1, 4, 5], [2, 3]), pairs=3)
    assert table.tolist() == [-1, -2, -3, -4, -5, -6] and per_rank == [2, 1]
    with pytest.raises(RunFailed, match="left 2 of 6 log-prob rows unscored and scored 0 more than once"):
        ReferenceScores.assembled(shares([0, 1], [4, 5]), pairs=3)
    with pytest.raises(RunFailed, match="left 0 of 6 log-prob rows unscored and scored 2 more than once"):
        ReferenceScores.assembled(shares([0, 1, 2, 3], [2, 3, 4, 5]), pairs=3)


@pytest.mark.parametrize("key", ["micro_batch_size", "global_batch_size"])
def test_odd_batch_sizes_are_refused(key):
    sizes = {"micro_batch_size": 2, "global_batch_size": 4, key: 3}
    with pytest.raises(PreferenceConfigError, match=f"data.{key}=3"):
        PreferenceDataModule(paths=["unused"], **sizes)


# ---- packed batches ----------------------------------------------------------------------------------


def toy_pair(index, prompt, chosen, chosen_mask, rejected, rejected_mask):
    return {"index": index, "prompt_ids": prompt, "chosen_ids": chosen, "chosen_loss_mask": chosen_mask,
            "rejected_ids": rejected, "rejected_loss_mask": rejected_mask}


def test_packed_row_layout():
    first = toy_pair(0, [1, 2], [3, 4, 5], [1, 1, 0], [6, 7], [1, 1])
    second = toy_pair(1, [8], [9, 10], [1, 1], [11], [1])
    batch = collate_packs([{"pairs": [second, first]}], "train", pad_to_multiple_of=16)
    # second's chosen [8 9 | 10], its rejected [8 | 11], first's chosen [1 2 3 4 | 5], rejected [1 2 6 | 7]
    assert batch["tokens"][0].tolist() == [8, 9, 8, 1, 2, 3, 4, 1, 2, 6] + [0] * 6
    assert batch["labels"][0, :10].tolist() == [9, 10, 11, 2, 3, 4, 5, 2, 6, 7]
    assert batch["loss_mask"][0].tolist() == [1, 1, 1, 0, 1, 1, 0, 0, 1, 1] + [0] * 6
    assert batch["segment_ids"][0].tolist() == [0, 0, 1, 2, 2, 2, 2, 3, 3, 3] + [-1] * 6
    assert batch["position_ids"][0].tolist() == [0, 1, 0, 0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4, 5]
    assert batch["cu_seqlens"].tolist() == [[0, 2, 3, 7, 10, 16, -1]]  # the padding is a sequence of its own
    assert batch["cu_seqlens_argmin"].tolist() == [[6]] and batch["max_seqlen"].tolist() == [[6]]
    assert batch["pair_index"].tolist() == [1, 0]
    mask = batch["attention_mask"][0, 0]  # True = masked
    assert not mask[4, 3] and mask[3, 4]  # causal inside a sequence
    assert mask[3, 2] and mask[7, 6] and mask[10, 9]  # nothing across sequences, padding included
    # the same sequences, padded one per row
    padded = collate_pairs([second, first], "train", pad_to_multiple_of=1)
    for sequence in range(4):
        where = batch["segment_ids"][0] == sequence
        length = int(where.sum())
        assert batch["tokens"][0, where].tolist() == padded["tokens"][sequence, :length].tolist()
        assert batch["loss_mask"][0, where].tolist() == padded["loss_mask"][sequence, :length].tolist()


def test_packing_the_shipped_pairs_keeps_every_pair_once():
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer

    from models.catalog import MODELS
    from recipes.tiny_llama_preference import PAIRS

    data = PreferenceDataModule(paths=[PAIRS], tokenizer=AutoTokenizer(MODELS["tiny_llama"].tokenizer), seq_length=256,
                                micro_batch_size=1, global_batch_size=3, validation_pairs=16, pack_pairs=True)
    data.setup()
    for split, pairs in (("train", 134), ("validation", 16)):
        batches = list(data.reference_batches(split, pairs_per_batch=8))
        indices = sorted(i for batch in batches for i in batch["pair_index"].tolist())
        assert indices == list(range(pairs)) == list(range(data.pairs(split)))
        assert all(batch["tokens"].shape[0] == 1 and batch["tokens"].shape[1] <= 256 for batch in batches)
        assert all(int(batch["segment_ids"].max()) + 1 == 2 * batch["pair_index"].numel() for batch in batches)
    assert len(data.datasets["train"].items) < 134 / 2  # more than two pairs per row on average


def test_packed_micro_batch_must_be_one_row():
    with pytest.raises(PreferenceConfigError, match="data.pack_pairs=True needs data.micro_batch_size=1"):
        PreferenceDataModule(paths=["unused"], micro_batch_size=2, global_batch_size=4, pack_pairs=True)
    PreferenceDataModule(paths=["unused"], micro_batch_size=1, global_batch_size=3, pack_pairs=True)  # odd is fine


def test_validation_rule():
    from launcher.rules.preference import check_preference
    from launcher.validation import View
    from recipes import registry

    config = registry.build("tiny_llama_dpo")
    assert list(check_preference(View(config))) == []
    config.data.micro_batch_size = 3
    config.trainer.strategy.context_parallel_size = 2
    found = "\n".join(check_preference(View(config)))
    assert "data.micro_batch_size=3" in found and "context_parallel_size must be 1" in found
    config = registry.build("tiny_llama_dpo")
    config.data.pack_pairs, config.data.create_attention_mask = True, False
    found = "\n".join(check_preference(View(config)))
    assert "data.pack_pairs=True needs data.micro_batch_size=1" in found and ", not 8;" in found
    assert "data.create_attention_mask=False with data.pack_pairs=True needs Transformer Engine" in found
    config.data.micro_batch_size, config.data.global_batch_size, config.data.create_attention_mask = 1, 3, True
    assert list(check_preference(View(config))) == []
    assert list(check_preference(View(registry.build("tiny_llama_pretrain")))) == []


# ---- the tiny model: logits, tensor parallel ----------------------------------------------------------


def torchrun(processes: int, out: Path):
    env = child_environment(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
               "--standalone", str(REPO / "tests/preference/model_check.py"), str(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def model_numbers(tmp_path_factory):
    return torchrun(2, tmp_path_factory.mktemp("tp") / "tp2.json")


@pytest.mark.slow
def test_tiny_model_end_to_end_matches_paper(model_numbers):
    single = model_numbers["tp1"]
    # megatron's per-token cross entropy path == log_softmax of the logits
    assert single["logps"] == pytest.approx(single["logps_from_logits"], abs=1e-4, rel=1e-5)
    logps, lengths, ref = single["logps_from_logits"], single["lengths"], single["reference_logps"]
    dpo = metrics(*dpo_paper(logps[0::2], logps[1::2], ref[0::2], ref[1::2], 0.1, 0.1))
    simpo = metrics(*simpo_paper(logps[0::2], logps[1::2], lengths[0::2], lengths[1::2], 10.0, 3.0))
    assert_close(single["dpo"], dpo, tol=1e-4)
    assert_close(single["simpo"], simpo, tol=1e-4)


@pytest.mark.slow
def test_tensor_parallel_2_matches_single_process(model_numbers):
    single, tp2 = model_numbers["tp1"], model_numbers
    assert tp2["logps"] == pytest.approx(single["logps"], abs=1e-4, rel=1e-5)
    for name in ("dpo", "simpo"):
        assert tp2[name]["loss"] == pytest.approx(single[name]["loss"], abs=TOL, rel=TOL)
        assert_close(tp2[name], single[name], tol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["tp1", "tp2"])
def test_packed_pairs_score_as_padded_ones(model_numbers, parallel):
    """Three pairs per row, each sequence attending only to itself: the same log-probs, loss and rewards."""
    numbers = model_numbers["tp1"] if parallel == "tp1" else model_numbers
    assert numbers["packed_rows"][0] == 2
    assert numbers["packed_logps"] == pytest.approx(numbers["logps"], abs=1e-4, rel=1e-6)
    for name in ("dpo", "simpo"):
        assert numbers[f"{name}_packed"]["loss"] == pytest.approx(numbers[name]["loss"], abs=TOL, rel=TOL)
        assert_close(numbers[f"{name}_packed"], numbers[name], tol=1e-4)  # rewards near -96: float32 rounding


# ---- CPU training runs ---------------------------------------------------------------------------------

LINE = re.compile(r"global_step: (\d+) \| reduced_train_loss: ([-\d.e]+) \| reward_chosen: ([-\d.e]+) \| "
                  r"reward_rejected: ([-\d.e]+) \| reward_margin: ([-\d.e]+) \| reward_accuracy: ([-\d.e]+)")
LOSS, CHOSEN, REJECTED, MARGIN, ACCURACY = range(5)


def preference_run(recipe: str, log_dir: Path, *overrides: str, threads: int = 2) -> tuple[dict[int, list[float]], str]:
    """(per-step [loss, chosen, rejected, margin, accuracy], the whole log) of `launch.py recipe=...` logging to `log_dir`."""
    done = launch(f"recipe={recipe}", "trainer.limit_val_batches=0", f"log.log_dir={log_dir}", *overrides, cwd=log_dir,
                  timeout=400, OMP_NUM_THREADS=str(threads))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return {int(m[0]): [float(v) for v in m[1:]] for m in LINE.findall(output)}, output


def mean(rows, column):
    return sum(r[column] for r in rows) / len(rows)


def assert_dpo_learns(rows: dict, steps: int, output: str) -> None:
    assert sorted(rows) == list(range(steps)), output[-3000:]
    first, last = [rows[s] for s in range(4)], [rows[s] for s in range(steps - 6, steps)]
    # step 0: the policy is the reference, so loss = log 2 and every reward is 0
    assert rows[0][LOSS] == pytest.approx(math.log(2), abs=1e-3) and rows[0][MARGIN] == pytest.approx(0, abs=1e-4)
    print(f"margin {mean(first, MARGIN):.3f} -> {mean(last, MARGIN):.3f}, accuracy {mean(first, ACCURACY):.3f} -> "
          f"{mean(last, ACCURACY):.3f}, loss {mean(first, LOSS):.3f} -> {mean(last, LOSS):.3f}")
    assert mean(last, MARGIN) > mean(first, MARGIN) + 0.5
    assert mean(last, ACCURACY) > mean(first, ACCURACY) + 0.2
    assert mean(last, LOSS) < mean(first, LOSS) - 0.2


# whole pairs packed into rows of 256 tokens, one row per micro batch, 3 rows (about 8 pairs) per step
PACKED = ("data.pack_pairs=true", "data.micro_batch_size=1", "data.global_batch_size=3", "data.seq_length=256",
          "model.config.seq_length=256")


@pytest.mark.slow
def test_tiny_dpo_on_packed_pairs_raises_margin(tmp_path):
    steps = 24
    rows, output = preference_run("tiny_llama_dpo", tmp_path, f"trainer.max_steps={steps}", *PACKED)
    assert "134 training pairs packed into 48 rows of up to 256 tokens" in output
    assert_dpo_learns(rows, steps, output)


@pytest.mark.slow
def test_tiny_dpo_raises_margin_and_resumes_with_its_original_reference(tmp_path):
    steps = 24
    settings = (f"trainer.max_steps={steps}", f"log.ckpt.every_n_train_steps={steps // 2}")
    rows, output = preference_run("tiny_llama_dpo", tmp_path, *settings)
    assert_dpo_learns(rows, steps, output)

    # An interruption after the halfway checkpoint: it is the newest one left, as NeMo's resume finds it.
    checkpoints = tmp_path / "tiny_llama_dpo" / "checkpoints"
    interrupt_after(checkpoints, step=steps // 2)
    resumed, output = preference_run("tiny_llama_dpo", tmp_path, *settings)
    assert "reference log-probs of 134 train pairs: restored from the checkpoint" in output
    assert sorted(resumed) == list(range(steps // 2, steps)), output[-3000:]
    # Rescoring the reference from the resumed weights would restart at loss log 2; the saved one continues.
    for step, values in resumed.items():
        assert values == pytest.approx(rows[step], abs=2e-3), step


# LoRA DPO padded on two stages is left out: `dpo` runs the same pre-pass padded, `dpo_lora_packed` with the adapters off.
@pytest.mark.parametrize("recipe,batches", [("tiny_llama_dpo", ()), ("tiny_llama_simpo", ()), ("tiny_llama_dpo_lora", PACKED)],
                         ids=["dpo", "simpo", "dpo_lora_packed"])
@pytest.mark.slow
def test_pipeline_parallel_2_over_two_processes(recipe, batches, tmp_path):
    """Two pipeline stages (gloo): the reference pre-pass goes through megatron's pipeline schedule (for LoRA
    with the adapters off), the last stage computes the loss and its metrics reach rank 0's log."""
    steps = 4
    rows, output = preference_run(recipe, tmp_path, f"trainer.max_steps={steps}", "trainer.devices=2",
                                  "trainer.strategy.pipeline_model_parallel_size=2", *batches, threads=1)
    assert sorted(rows) == list(range(steps)), output[-3000:]
    if recipe.startswith("tiny_llama_dpo"):
        # the pre-pass scored exactly what step 0's training forward computes: policy == reference
        assert rows[0][LOSS] == pytest.approx(math.log(2), abs=1e-4) and rows[0][MARGIN] == pytest.approx(0, abs=1e-5)
    assert rows[steps - 1][MARGIN] > rows[0][MARGIN] and rows[steps - 1][LOSS] < rows[0][LOSS]


@pytest.mark.slow
def test_data_parallel_2_splits_the_reference_pre_pass(tmp_path):
    """Two data-parallel ranks (gloo): each scores its turns of the pre-pass batches (8 pairs each: 17 train
    batches, 2 validation ones), the summed table has every row exactly once, and step 0 is the reference."""
    steps = 2
    rows, output = preference_run("tiny_llama_dpo", tmp_path, f"trainer.max_steps={steps}",
                                  "trainer.devices=2", threads=1)
    for pairs, shares in (("134 train", "70 + 64"), ("16 validation", "8 + 8")):  # rank 0 takes the short last batch
        line = rf"\[preference\] reference log-probs of {pairs} pairs: scored in [\d.]+s by 2 data-parallel ranks " \
               rf"\({re.escape(shares)} pairs\), every pair once"
        assert re.search(line, output), output[-3000:]
    assert sorted(rows) == list(range(steps)), output[-3000:]
    # a row missing from the table (0) or another rank's would make step 0's policy differ from its reference
    assert rows[0][LOSS] == pytest.approx(math.log(2), abs=1e-4) and rows[0][MARGIN] == pytest.approx(0, abs=1e-5)
    assert rows[0][CHOSEN] == pytest.approx(0, abs=1e-5) and rows[0][REJECTED] == pytest.approx(0, abs=1e-5)
