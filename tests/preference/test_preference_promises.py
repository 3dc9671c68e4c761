"""Promises of recipes/PREFERENCE.md not covered by test_preference.py (kept apart: that file is being
restructured for time). None of these trains."""

import logging
import re
import subprocess
import sys
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


def dpo_run(log_dir: Path, *overrides: str) -> tuple[int, str]:
    """A short tiny_llama_dpo run validating every 2 steps (16 held-out pairs), a checkpoint every 2 steps."""
    from launching import REPO, child_environment

    command = [sys.executable, "launch.py", "recipe=tiny_llama_dpo", "trainer.max_steps=4", f"log.log_dir={log_dir}",
               "log.ckpt.every_n_train_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
               *overrides]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400,
                          env=child_environment(OMP_NUM_THREADS="2"))
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def validated_dpo_run(tmp_path_factory) -> Path:
    log_dir = tmp_path_factory.mktemp("dpo")
    code, output = dpo_run(log_dir)
    assert code == 0, output[-4000:]
    return log_dir


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="found here, not yet fixed: validation runs (its reference pre-pass is "
                                       "logged) but no val_ metric reaches the logger")
def test_dpo_logs_val_prefixed_preference_metrics(validated_dpo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(validated_dpo_run.rglob("events.out.tfevents.*"))))
    events.Reload()
    logged = set(events.Tags()["scalars"])
    assert {"reward_margin", "reward_accuracy"} <= logged
    assert {"val_reward_margin", "val_reward_accuracy", "val_reward_chosen", "val_reward_rejected"} <= logged, logged


@pytest.mark.slow
def test_dpo_refuses_to_resume_on_different_data(validated_dpo_run):
    """Resumed on fewer pairs, the checkpoint's reference table no longer fits the data: exit 1, the fix named."""
    from recipes.tiny_llama_preference import PAIRS

    fewer = validated_dpo_run / "fewer_pairs.jsonl"
    fewer.write_text("".join(Path(PAIRS).read_text().splitlines(keepends=True)[:100]))
    code, output = dpo_run(validated_dpo_run, f"data.paths.0={fewer}", "trainer.max_steps=6")
    assert code == 1, output[-4000:]
    assert "the resumed checkpoint's reference log-probs cover 134 train pairs, the data now has 84" in output
    assert "resume with the same data.paths / data.validation_pairs" in output
