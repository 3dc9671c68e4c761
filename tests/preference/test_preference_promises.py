"""Promises of recipes/PREFERENCE.md not covered by test_preference.py (kept apart: that file is being
restructured for time). None of these trains."""

import logging

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
