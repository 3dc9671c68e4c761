"""Which tokenizer made a corpus: the record data.prepare_pretraining writes beside it, check_corpus_fits on
corpora made with the same and with another tokenizer (with and without a record), and the tokenizer that
prepare_pretraining encodes with giving transformers' ids while importing neither transformers nor torch."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.core.tokenizer import load_backend_tokenizer, loaded_unchanged, special_tokens
from data.corpus_tokenizer import check_corpus_fits, read_record
from data.prepare_pretraining import prepare

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "models" / "tokenizers" / "tiny")
PYDOC = REPO / "data" / "corpora" / "pydoc_topics.jsonl"
GOLDEN = Path(__file__).with_name("golden") / "pretraining_sample_text_document"  # made by Megatron-LM


@pytest.fixture(scope="module")
def larger_tokenizer(tmp_path_factory) -> str:
    """A byte-level BPE with 6000 entries trained on the pydoc corpus: ids beyond the tiny vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=6000, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [json.loads(line)["text"] for line in PYDOC.open()]
    tokenizer.train_from_iterator(texts, trainer)
    folder = tmp_path_factory.mktemp("larger_tokenizer")
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}))
    return str(folder)


def prepared(tmp_path: Path, tokenizer: str, name: str = "c") -> str:
    return prepare(str(PYDOC), tokenizer, str(tmp_path / name), append_eod=True, workers=1).prefix


def test_record_names_the_tokenizer_and_the_largest_id_written(tmp_path):
    prefix = prepared(tmp_path, TINY)
    record = read_record(prefix)
    written = np.fromfile(prefix + ".bin", dtype=np.uint16)
    assert record["tokenizer"] == TINY
    assert (record["vocab_size"], record["bos_id"], record["eos_id"], record["pad_id"]) == (4096, 0, 0, 3)
    assert record["max_token_id"] == int(written.max())
    assert record["fingerprint"].startswith("sha256:")


def test_corpus_fits_its_own_tokenizer_wherever_its_folder_lies(tmp_path):
    prefix = prepared(tmp_path, TINY)
    moved = shutil.copytree(TINY, tmp_path / "elsewhere" / "tiny")
    assert check_corpus_fits(prefix, TINY, 4096) == []
    assert check_corpus_fits(prefix, moved, 4096) == []


def test_corpus_of_another_tokenizer_names_both_and_the_fix(tmp_path, larger_tokenizer):
    prefix = prepared(tmp_path, larger_tokenizer)
    assert read_record(prefix)["max_token_id"] >= 4096

    problems = check_corpus_fits(prefix, TINY, 4096)

    assert len(problems) == 2
    for problem in problems:
        assert f"corpus {prefix}" in problem and larger_tokenizer in problem and TINY in problem
        assert f"re-run python -m data.prepare_pretraining --tokenizer {TINY}" in problem
    assert "holds token id" in problems[1]


def test_corpus_without_record_is_checked_by_its_largest_id(tmp_path, larger_tokenizer):
    golden = shutil.copy(f"{GOLDEN}.bin", tmp_path / "g.bin"), shutil.copy(f"{GOLDEN}.idx", tmp_path / "g.idx")
    assert check_corpus_fits(tmp_path / "g", TINY, 4096) == []

    prefix = prepared(tmp_path, larger_tokenizer)
    Path(prefix + ".tokenizer.json").unlink()  # as Megatron-LM's tool leaves it
    largest = int(np.fromfile(prefix + ".bin", dtype=np.uint16).max())
    (problem,) = check_corpus_fits(prefix, TINY, 4096)
    assert f"holds token id {largest}" in problem and "records no tokenizer" in problem
    assert f"--tokenizer {TINY}" in problem
    assert golden  # the Megatron-LM pair fits its tokenizer


def test_missing_corpus_is_left_to_the_missing_data_check(tmp_path):
    assert check_corpus_fits(tmp_path / "nothing", TINY, 4096) == []


def changed_copy(source: str, destination: Path, change: str) -> Path:
    """A copy of a tokenizer folder that transformers loads differently from its tokenizer.json."""
    folder = shutil.copytree(source, destination)
    if change == "token_transformers_adds":  # a declared token missing from tokenizer.json
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["additional_special_tokens"].append("<|tool|>")
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        (folder / "special_tokens_map.json").unlink()
    else:  # transformers resets add_prefix_space to the configured value, False when not configured
        tokenizer_json = json.loads((folder / "tokenizer.json").read_text())
        tokenizer_json["pre_tokenizer"]["add_prefix_space"] = True
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    return folder


@pytest.mark.parametrize("folder", ["tiny", "larger", "token_transformers_adds", "prefix_space_transformers_resets"])
def test_backend_tokenizer_gives_transformers_ids(tmp_path, larger_tokenizer, folder):
    from transformers import AutoTokenizer

    if folder == "tiny":
        folder_path = Path(TINY)
    elif folder == "larger":
        folder_path = Path(larger_tokenizer)
    else:
        folder_path = changed_copy(TINY if folder == "token_transformers_adds" else larger_tokenizer, tmp_path / folder, folder)
    tokenizer_json = json.loads((folder_path / "tokenizer.json").read_text())
    config = json.loads((folder_path / "tokenizer_config.json").read_text())
    assert loaded_unchanged(config, special_tokens(folder_path), tokenizer_json) == (folder in ("tiny", "larger"))
    texts = [json.loads(line)["text"] for line, _ in zip(PYDOC.open(), range(20))]
    texts += ["", "hello", "<|endoftext|> and <|im_start|>user", "<|tool|> call", "naïve café — 東京"]

    ours = [encoding.ids for encoding in load_backend_tokenizer(folder_path).encode_batch_fast(texts)]

    assert ours == AutoTokenizer.from_pretrained(str(folder_path))(texts).input_ids


def run_in_fresh_interpreter(script: str) -> None:
    """Run ``script`` in a new Python process, where sys.modules shows what preparing imported."""
    subprocess.run([sys.executable, "-c", "import sys\n" + script], cwd=REPO, check=True)


def test_prepare_imports_neither_transformers_nor_torch(tmp_path):
    corpus = tmp_path / "in.jsonl"
    corpus.write_text('{"text": "hello"}\n{"text": "world"}\n')
    run_in_fresh_interpreter(
        "from data.prepare_pretraining import prepare\n"
        f"prepare({str(corpus)!r}, {TINY!r}, {str(tmp_path / 'c')!r}, workers=2)\n"
        "heavy = sorted({'transformers', 'torch', 'megatron', 'nemo'} & {m.split('.')[0] for m in sys.modules})\n"
        "assert not heavy, heavy\n"
    )


def test_bad_line_is_reported_before_the_tokenizer_is_loaded(tmp_path):
    corpus = tmp_path / "in.jsonl"
    corpus.write_text('{"text": "hello"}\n' * 1000 + '{"text": 1}\n')
    run_in_fresh_interpreter(
        "from data.core.errors import DataError\nfrom data.prepare_pretraining import prepare\n"
        f"try:\n    prepare({str(corpus)!r}, {TINY!r}, {str(tmp_path / 'c')!r})\n"
        "except DataError as error:\n    assert ':1001: ' in str(error), error\n"
        "else:\n    raise AssertionError('no error')\n"
        "assert 'tokenizers' not in sys.modules\n"
    )
