"""Promises of recipes/PREFERENCE.md not covered by test_preference.py (kept apart: that file is being
restructured for time). The slow ones share one short DPO run (validated_dpo_run)."""

import json
import logging
import math
import shutil
from pathlib import Path

import pytest

from data.preference.datamodule import PreferenceDataModule, load_pairs, pair_tokens


@pytest.fixture(scope="module")
def shipped_pairs_and_tokenizer():
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer

    from models.catalog import MODELS
    from recipes.tiny_llama_preference import PAIRS

    tokenizer = AutoTokenizer(MODELS["tiny_llama"].tokenizer)
    return PAIRS, tokenizer, load_pairs([PAIRS], tokenizer.tokenizer, "chatml")


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_pairs_longer_than_seq_length_are_dropped_and_logged_never_truncated(shipped_pairs_and_tokenizer, caplog, packed):
    """Padded: a pair whose longer side exceeds data.seq_length is dropped; packed: whose two sides together do."""
    paths, tokenizer, records = shipped_pairs_and_tokenizer
    measure = 1 if packed else 0
    lengths = sorted(pair_tokens(r)[measure] for r in records)
    seq_length = lengths[len(lengths) // 2]  # about half the shipped pairs are longer
    longer = sum(length > seq_length for length in lengths)
    assert 0 < longer < len(records)
    sizes = dict(micro_batch_size=1, global_batch_size=2) if packed else dict(micro_batch_size=2, global_batch_size=4)
    data = PreferenceDataModule(paths=[paths], tokenizer=tokenizer, seq_length=seq_length, pack_pairs=packed, **sizes)
    with caplog.at_level(logging.WARNING, logger="data.preference.datamodule"):
        data.setup()
    kept = data.split_pairs["train"] + data.split_pairs["validation"]
    assert len(kept) == len(records) - longer
    assert all(pair_tokens(pair)[measure] <= seq_length for pair in kept)
    kept_ids = sorted((tuple(p["prompt_ids"]), tuple(p["chosen_ids"]), tuple(p["rejected_ids"])) for p in kept)
    fitting = sorted((tuple(r["prompt_ids"]), tuple(r["chosen_ids"]), tuple(r["rejected_ids"])) for r in records
                     if pair_tokens(r)[measure] <= seq_length)
    assert kept_ids == fitting  # the fitting pairs whole, not cut ones
    expected = f"preference data: dropped {longer} of {len(records)} pairs longer than data.seq_length={seq_length}"
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith(expected)], caplog.text


def dpo_overrides(log_dir: Path, *overrides: str) -> list[str]:
    """A short tiny_llama_dpo run validating every 2 steps (8 of the 16 held-out pairs), a checkpoint every 2
    steps; its learning rate so small that the policy stays the reference (what validation is checked against)."""
    return ["trainer.max_steps=4", f"log.log_dir={log_dir}", "log.ckpt.every_n_train_steps=2",
            "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "optim.config.lr=1e-7", *overrides]


def dpo_run(log_dir: Path, *overrides: str) -> tuple[int, str]:
    """`launch.py recipe=tiny_llama_dpo` with `dpo_overrides`: (exit status, output)."""
    from launching import launch

    done = launch("recipe=tiny_llama_dpo", *dpo_overrides(log_dir, *overrides), cwd=log_dir, timeout=400,
                  OMP_NUM_THREADS="2")
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def validated_dpo_run(tmp_path_factory) -> Path:
    log_dir = tmp_path_factory.mktemp("dpo")
    code, output = dpo_run(log_dir)
    assert code == 0, output[-4000:]
    return log_dir


@pytest.mark.slow
def test_dpo_logs_val_prefixed_preference_metrics(validated_dpo_run):
    """Validation after steps 2 and 4 (limit_val_batches=1: one global batch of 8 held-out pairs) logs val_loss and
    the val_ rewards. The policy is still the reference (lr 1e-7): DPO loss log 2, rewards 0, as at step 0."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(validated_dpo_run.rglob("events.out.tfevents.*"))))
    events.Reload()
    logged = set(events.Tags()["scalars"])
    assert {"reward_margin", "reward_accuracy"} <= logged
    assert {"val_loss", "val_reward_margin", "val_reward_accuracy", "val_reward_chosen", "val_reward_rejected"} <= logged, logged
    values = {tag: [e.value for e in events.Scalars(tag)] for tag in logged if tag.startswith("val_")}
    assert all(len(v) == 2 for v in values.values()), values  # once per validation
    assert all(0.0 <= a <= 1.0 for a in values["val_reward_accuracy"]), values
    for chosen, rejected, margin in zip(values["val_reward_chosen"], values["val_reward_rejected"], values["val_reward_margin"]):
        assert margin == pytest.approx(chosen - rejected, abs=1e-5)
    assert values["val_loss"] == pytest.approx([math.log(2)] * 2, abs=1e-3), values
    assert values["val_reward_chosen"] + values["val_reward_rejected"] == pytest.approx([0.0] * 4, abs=1e-3), values


@pytest.mark.slow
def test_dpo_refuses_to_resume_on_different_data(validated_dpo_run, shipped_pairs_and_tokenizer):
    """Resumed on other pairs, the checkpoint's reference table (keyed by pair index) no longer fits the data:
    exit 1, the fix named. Run on as many pairs as before (each pair's answers swapped), which a count would
    miss; fewer pairs are checked on the checkpoint's saved state, without a run."""
    import torch

    from runtime.resume import saved_checkpoints
    from training.preference_steps import COMMON_STATE, REFERENCE_DATA, REFERENCE_STATE, reference_data_mismatch

    paths, tokenizer, _ = shipped_pairs_and_tokenizer
    lines = [json.loads(line) for line in Path(paths).read_text().splitlines() if line.strip()]
    swapped = validated_dpo_run / "swapped_pairs.jsonl"
    swapped.write_text("".join(json.dumps({"chosen": r["rejected"], "rejected": r["chosen"]}) + "\n" for r in lines))
    code, output = dpo_run(validated_dpo_run, f"data.paths.0={swapped}", "trainer.max_steps=6")
    assert code == 1, output[-4000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-4000:]
    assert "the resumed checkpoint's reference log-probs were scored on other train pairs than the data now has " \
           "(134 either way, but other tokens or order: fingerprint " in errors[0]
    assert "resume with the same data (data.paths, data.validation_pairs, data.seq_length" in errors[0]

    saved = torch.load(saved_checkpoints(validated_dpo_run / "tiny_llama_dpo" / "checkpoints")[0] / COMMON_STATE,
                       map_location="cpu", weights_only=False)["callbacks"]["PreferenceTraining"]
    fewer = validated_dpo_run / "fewer_pairs.jsonl"
    fewer.write_text("".join(Path(paths).read_text().splitlines(keepends=True)[:100]))
    for data_file, problem in ((paths, None), (fewer, "cover 134 train pairs, the data now has 84: resume with the same data")):
        data = PreferenceDataModule(paths=[data_file], tokenizer=tokenizer, seq_length=128, micro_batch_size=8,
                                    global_batch_size=16, validation_pairs=16)  # the recipe's
        data.setup()
        found = reference_data_mismatch("train", saved[REFERENCE_STATE]["train"], saved[REFERENCE_DATA]["train"],
                                        data.pairs("train"), data.fingerprint("train"))
        assert (found is None) if problem is None else (problem in found), found


@pytest.mark.slow
def test_dpo_refuses_to_resume_from_a_checkpoint_without_the_reference_table(validated_dpo_run, tmp_path):
    """A copy of the run whose newest checkpoint lost its reference log-probs (what an SFT checkpoint lacks too):
    refused before launch (exit 2), one error line naming the checkpoint and what is missing, nothing trained."""
    import torch

    from runtime.resume import saved_checkpoints

    shutil.copytree(validated_dpo_run / "tiny_llama_dpo", tmp_path / "tiny_llama_dpo")
    newest = saved_checkpoints(tmp_path / "tiny_llama_dpo" / "checkpoints")[0]  # the one a resume takes
    common = newest / "weights" / "common.pt"
    state = torch.load(common, map_location="cpu", weights_only=False)
    del state["callbacks"]["PreferenceTraining"]["reference_logps"]
    torch.save(state, common)
    saved = sorted(p.name for p in newest.parent.iterdir())
    code, output = dpo_run(tmp_path, "trainer.max_steps=6")
    assert code == 2, output[-4000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot resume DPO from checkpoint {newest}: it holds no reference log-probs of the train pairs" in errors[0], output[-4000:]
    assert sorted(p.name for p in newest.parent.iterdir()) == saved

    # With executor=slurm the submitter may not see the checkpoint: the job's entry (runtime.entry.train, what
    # nemo_run's fdl_runner builds and calls) refuses it first thing, before NeMo starts, with the same line.
    import fiddle as fdl

    from common.errors import UserError
    from launcher import session

    job = fdl.build(session.task(session.prepare("tiny_llama_dpo", [*dpo_overrides(tmp_path, "trainer.max_steps=6"),
                                                                     "executor=slurm"])))
    with pytest.raises(UserError) as in_the_job:
        job()
    assert f"error: {in_the_job.value}" == errors[0]
    assert sorted(p.name for p in newest.parent.iterdir()) == saved
