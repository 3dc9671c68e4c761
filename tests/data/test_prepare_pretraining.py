"""data.prepare_pretraining: JSONL -> megatron .bin/.idx, checked with the real tokenizer and readers.

The golden pair under tests/data/golden/ was written by Megatron-LM's own tools/preprocess_data.py at tag
core_v0.15.3 (matching the pinned megatron-core): tests/data/golden/regenerate.sh writes it again from a
Megatron-LM checkout and checks it against the checksums it states, which a test here checks too.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from data import prepare_pretraining
from data.core.errors import DataError
from data.prepare_pretraining import main, prepare
from local_tokenizers import write_llama3_style_tokenizer

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = str(REPO / "models" / "tokenizers" / "tiny")
GOLDEN = Path(__file__).with_name("golden")
PYDOC = REPO / "data" / "corpora" / "pydoc_topics.jsonl"
EOD = 0  # <|endoftext|>, the tiny tokenizer's eos


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER)


@pytest.fixture(scope="module")
def indexed_dataset():
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    return IndexedDataset


@pytest.fixture
def small_chunks(monkeypatch):
    """Many tokenizer batches from a small corpus, so their ordering is exercised."""
    monkeypatch.setattr(prepare_pretraining, "BATCH_BYTES", 4000)


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def pydoc_texts(count: int) -> list[str]:
    with PYDOC.open() as file:
        return [json.loads(line)["text"] for line, _ in zip(file, range(count))]


def output_bytes(prefix: str) -> tuple[bytes, bytes]:
    return Path(prefix + ".bin").read_bytes(), Path(prefix + ".idx").read_bytes()


# --- correctness -------------------------------------------------------------------------------------


def test_reads_back_exactly_the_tokenizer_ids_plus_eod(tmp_path, hf_tokenizer, indexed_dataset):
    texts = pydoc_texts(20)
    texts.insert(3, "")  # an empty document: no tokens, no eod, but still a document
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts)])

    result = prepare([str(corpus)], TOKENIZER, str(tmp_path / "out" / "pydoc"), workers=1)

    assert result.prefix == str(tmp_path / "out" / "pydoc_text_document")
    assert (result.documents, result.empty_documents) == (21, 1)
    dataset = indexed_dataset(result.prefix)
    assert dataset.index.dtype == np.uint16  # 4096-token vocabulary
    assert list(dataset.document_indices) == [0, 1, 2, 3, 3] + list(range(4, 21))
    non_empty = [t for t in texts if t]
    assert len(dataset) == len(non_empty)
    for i, text in enumerate(non_empty):
        tokens = dataset[i].tolist()
        assert tokens == hf_tokenizer(text).input_ids + [EOD]
        assert hf_tokenizer.decode(tokens[:-1]) == text
    assert result.tokens == int(dataset.sequence_lengths.sum())


def test_without_append_eod_documents_are_bare_tokens(tmp_path, hf_tokenizer, indexed_dataset):
    texts = pydoc_texts(3)
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"body": t} for t in texts])

    result = prepare(str(corpus), TOKENIZER, str(tmp_path / "bare"), text_key="body", append_eod=False, workers=1)

    assert result.prefix.endswith("bare_body_document")
    dataset = indexed_dataset(result.prefix)
    assert [dataset[i].tolist() for i in range(3)] == [hf_tokenizer(t).input_ids for t in texts]


@pytest.mark.parametrize("vocabulary", [65_499, 65_500, 128_256])
def test_bin_dtype_is_int32_from_65500_tokens_and_holds_ids_beyond_uint16(tmp_path, indexed_dataset, vocabulary):
    """Llama-3-style tokenizers of each size (tests/local_tokenizers.py); the last has Llama 3's real ids."""
    from megatron.core.datasets.indexed_dataset import DType
    from transformers import AutoTokenizer

    folder = write_llama3_style_tokenizer(tmp_path / "tokenizer", first_special_id=vocabulary - 256)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == vocabulary
    text = "<|start_header_id|>user<|end_header_id|>Hi<|eot_id|>"
    corpus = prepare(str(write_jsonl(tmp_path / "in.jsonl", [{"text": text}])), str(folder), str(tmp_path / "c"), workers=1)

    dataset = indexed_dataset(corpus.prefix)
    expected = np.uint16 if vocabulary < 65_500 else np.int32
    assert dataset.index.dtype == expected == DType.optimal_dtype(vocabulary)  # megatron-core's own rule
    assert dataset[0].tolist() == tokenizer(text).input_ids + [tokenizer.eos_token_id]
    first = vocabulary - 256  # <|begin_of_text|>: 128000 in the real-sized one
    assert dataset[0].tolist()[:2] == [first, first + 6]


def test_byte_identical_to_megatron_lm_preprocess_data(tmp_path):
    prepare(str(GOLDEN / "pretraining_sample.jsonl"), TOKENIZER, str(tmp_path / "pretraining_sample"), workers=2)

    ours = output_bytes(str(tmp_path / "pretraining_sample_text_document"))
    assert ours == output_bytes(str(GOLDEN / "pretraining_sample_text_document"))


def test_golden_files_are_the_ones_the_regeneration_script_states():
    """tests/data/golden/regenerate.sh names Megatron-LM's tag and commit and the sha256 of every input and output."""
    import hashlib

    script = (GOLDEN / "regenerate.sh").read_text()
    from importlib.metadata import version

    assert f"MEGATRON_LM_TAG=core_v{version('megatron-core')}\n" in script  # the tag of the pinned megatron-core
    assert "--tokenizer-model models/tokenizers/tiny" in script
    stated = dict((path, digest) for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", script, re.M))
    assert {p for p in stated if p.startswith("tests/data/golden/")} == {
        f"tests/data/golden/{p.name}" for p in GOLDEN.iterdir() if p.name != "regenerate.sh"}
    for path, digest in stated.items():
        assert hashlib.sha256((REPO / path).read_bytes()).hexdigest() == digest, f"{path} differs from regenerate.sh"


def test_worker_count_and_rerun_do_not_change_bytes(tmp_path, small_chunks):
    texts = pydoc_texts(60)
    first = write_jsonl(tmp_path / "a" / "1.jsonl", [{"text": t} for t in texts[:25]])
    write_jsonl(tmp_path / "a" / "2.jsonl", [{"text": t} for t in texts[25:]])

    one = prepare(str(tmp_path / "a" / "*.jsonl"), TOKENIZER, str(tmp_path / "w1"), workers=1)
    two = prepare(str(tmp_path / "a" / "*.jsonl"), TOKENIZER, str(tmp_path / "w2"), workers=2)
    again = prepare(str(tmp_path / "a" / "*.jsonl"), TOKENIZER, str(tmp_path / "w2"), workers=2)
    listed = prepare([str(first), str(tmp_path / "a" / "2.jsonl")], TOKENIZER, str(tmp_path / "l"), workers=2)

    assert one.documents == 60
    assert output_bytes(one.prefix) == output_bytes(two.prefix) == output_bytes(again.prefix)
    assert output_bytes(listed.prefix) == output_bytes(one.prefix)


# --- bad input -----------------------------------------------------------------------------------------

BAD_LINES = {
    "malformed": ('{"text": "unterminated}', r"malformed JSON"),
    "missing": ({"body": "no text here"}, r"missing field 'text' \(fields present: 'body'\)"),
    "not-a-string": ({"text": ["a", "list"]}, r"field 'text' must be a string, got a JSON array"),
    "null": ({"text": None}, r"field 'text' must be a string, got a JSON null"),
    "not-an-object": ('["text"]', r"expected a JSON object, got a JSON array"),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_bad_line_fails_with_file_and_line(tmp_path, case):
    bad_record, expected = BAD_LINES[case]
    write_jsonl(tmp_path / "1.jsonl", [{"text": "fine"}])
    second = write_jsonl(tmp_path / "2.jsonl", [{"text": "fine"}, "", bad_record, {"text": "fine"}])

    with pytest.raises(DataError, match=re.escape(f"{second}:3: ") + expected):
        prepare(str(tmp_path / "*.jsonl"), TOKENIZER, str(tmp_path / "out"), workers=1)
    assert not list(tmp_path.glob("out*"))


def test_bad_line_from_the_command_line(tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine"}, {"txt": "typo"}])

    code = main(["--input", str(corpus), "--tokenizer", TOKENIZER, "--output-prefix", str(tmp_path / "o"),
                 "--workers", "1"])

    assert code == 2
    expected = f"error: {corpus}:2: missing field 'text' (fields present: 'txt'); fix the input or pass --skip-bad-lines"
    assert expected in capsys.readouterr().err


def test_skip_bad_lines_counts_and_locates_them(tmp_path, indexed_dataset, hf_tokenizer):
    records = [{"text": "one"}, "{oops", {"text": "two"}, {"text": 3}, {"title": "x"}, {"text": "three"}]
    corpus = write_jsonl(tmp_path / "in.jsonl", records)

    result = prepare(str(corpus), TOKENIZER, str(tmp_path / "o"), workers=2, skip_bad_lines=True)

    assert (result.documents, result.skipped_lines) == (3, 3)
    assert [f"{bad.path}:{bad.line}" for bad in result.first_skipped] == [f"{corpus}:{n}" for n in (2, 4, 5)]
    dataset = indexed_dataset(result.prefix)
    expected = [hf_tokenizer(t).input_ids + [EOD] for t in ("one", "two", "three")]
    assert [dataset[i].tolist() for i in range(3)] == expected


def test_skip_bad_lines_on_the_command_line_reports_them(tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}, "nope", {"text": "b"}])

    code = main(["--input", str(corpus), "--tokenizer", TOKENIZER, "--output-prefix", str(tmp_path / "o"),
                 "--workers", "1", "--skip-bad-lines", "--append-eod"])

    out, err = capsys.readouterr()
    assert code == 0
    assert f"skipped 1 bad lines, first ones:\n  {corpus}:2: malformed JSON" in err
    assert re.fullmatch(
        r"prepared 2 documents, 4 tokens, 0\.0 MB in \d+\.\d s \([\d,]+ tokens/s\) -> "
        + re.escape(str(tmp_path / "o_text_document") + ".{bin,idx}") + "\n",
        out,
    )


# --- empty input and unusable tokenizer ------------------------------------------------------------------


def test_no_files_match_the_glob(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"no files match '{tmp_path}/*.jsonl'")):
        prepare(str(tmp_path / "*.jsonl"), TOKENIZER, str(tmp_path / "o"))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path}/nope.jsonl: no such file")):
        prepare(str(tmp_path / "nope.jsonl"), TOKENIZER, str(tmp_path / "o"))


def test_empty_file(tmp_path):
    (tmp_path / "empty.jsonl").touch()
    with pytest.raises(DataError, match=re.escape(f"no documents: {tmp_path}/empty.jsonl is empty")):
        prepare(str(tmp_path / "empty.jsonl"), TOKENIZER, str(tmp_path / "o"))


@pytest.mark.parametrize("skip", [False, True])
def test_no_documents_after_blank_and_skipped_lines(tmp_path, skip):
    corpus = write_jsonl(tmp_path / "in.jsonl", ["", "   ", '{"title": "no text"}'] if skip else ["", "  "])
    with pytest.raises(DataError, match=re.escape(f"no documents in {corpus}")):
        prepare(str(corpus), TOKENIZER, str(tmp_path / "o"), skip_bad_lines=skip, workers=1)
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl"]


def test_unknown_tokenizer_folder(tmp_path):
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    with pytest.raises(DataError, match=re.escape(f"tokenizer folder {tmp_path}/nope does not exist")):
        prepare(str(corpus), str(tmp_path / "nope"), str(tmp_path / "o"))
    (tmp_path / "not_a_tokenizer").mkdir()
    not_loadable = re.escape(f"cannot load a Hugging Face tokenizer from {tmp_path}/not_a_tokenizer")
    with pytest.raises(DataError, match=not_loadable):
        prepare(str(corpus), str(tmp_path / "not_a_tokenizer"), str(tmp_path / "o"))


# --- atomic output ---------------------------------------------------------------------------------------


def test_failure_late_in_the_run_leaves_previous_output_untouched(tmp_path, small_chunks):
    records = [{"text": t} for t in pydoc_texts(80)]
    good_corpus = write_jsonl(tmp_path / "good.jsonl", records)
    good = prepare(str(good_corpus), TOKENIZER, str(tmp_path / "out" / "c"), workers=2)
    before = output_bytes(good.prefix)
    late_bad = write_jsonl(tmp_path / "bad.jsonl", records[:70] + ['{"text": 1}'] + records[70:])

    with pytest.raises(DataError, match=re.escape(f"{late_bad}:71: field 'text' must be a string")):
        prepare(str(late_bad), TOKENIZER, str(tmp_path / "out" / "c"), workers=2)

    assert output_bytes(good.prefix) == before
    assert sorted(os.listdir(tmp_path / "out")) == [
        "c_text_document.bin", "c_text_document.idx", "c_text_document.tokenizer.json"
    ]


def test_interrupted_run_leaves_no_files(tmp_path, monkeypatch):
    from data.indexed_dataset import IndexedDatasetWriter

    def interrupted_write_index(writer, idx_stream):
        idx_stream.write(b"MMIDIDX\x00\x00 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(IndexedDatasetWriter, "write_index", interrupted_write_index)
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello"}])

    with pytest.raises(KeyboardInterrupt):
        prepare(str(corpus), TOKENIZER, str(tmp_path / "out" / "c"), workers=1)
    assert os.listdir(tmp_path / "out") == []


# --- consumers ---------------------------------------------------------------------------------------------


def test_nemo_pretraining_data_module_builds_and_samples(tmp_path):
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer
    from nemo.collections.llm.gpt.data import PreTrainingDataModule

    texts = pydoc_texts(200)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    corpus = prepare(str(jsonl), TOKENIZER, str(tmp_path / "c"))
    module = PreTrainingDataModule(
        paths=[corpus.prefix],
        seq_length=64,
        tokenizer=AutoTokenizer(TOKENIZER),
        micro_batch_size=2,
        global_batch_size=2,
        num_workers=0,
        index_mapping_dir=str(tmp_path / "index_cache"),
    )
    module.build(
        trainer_max_steps=10, trainer_val_check_interval=5, trainer_limit_val_batches=2, trainer_limit_test_batches=2
    )

    assert len(module._train_ds) >= 20
    sample = module._train_ds[0]
    tokens, labels = sample["tokens"].tolist(), sample["labels"].tolist()
    assert len(tokens) == 64 and tokens[1:] == labels[:-1]
    documents = [_joined(doc) for doc in _token_lists(corpus.prefix)]
    # A sample is a window over documents joined by eod: every piece between eods comes from one document.
    for piece in _split_at(tokens + labels[-1:], EOD):
        assert any(_joined(piece) in doc for doc in documents)


def _token_lists(prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix)
    # Copies: the arrays are views of the dataset's memory map, which closes with the dataset.
    return [dataset[i].tolist() for i in range(len(dataset))]


def _joined(tokens) -> str:
    return "," + ",".join(map(str, tokens)) + ","


def _split_at(tokens, separator):
    piece = []
    for token in tokens:
        if token == separator:
            if piece:
                yield piece
            piece = []
        else:
            piece.append(token)
    if piece:
        yield piece


def test_shipped_tiny_corpus_is_what_the_tool_writes(tmp_path):
    """data/corpora/pydoc_topics_text_document.{bin,idx} (tiny_llama_pretrain's data) is not stale."""
    from data.prepare_pretraining import prepare

    repo = Path(__file__).resolve().parents[2]
    corpus = prepare([str(repo / "data/corpora/pydoc_topics.jsonl")], str(repo / "models/tokenizers/tiny"),
                     str(tmp_path / "pydoc_topics"), append_eod=True, workers=1)
    written_record = json.loads(Path(f"{corpus.prefix}.tokenizer.json").read_text())
    shipped_record = json.loads((repo / "data/corpora/pydoc_topics_text_document.tokenizer.json").read_text())
    assert written_record == {**shipped_record, "tokenizer": str(repo / "models/tokenizers/tiny")}
    for suffix in (".bin", ".idx"):
        shipped = repo / f"data/corpora/pydoc_topics_text_document{suffix}"
        assert Path(f"{corpus.prefix}{suffix}").read_bytes() == shipped.read_bytes(), (
            f"{shipped} is stale: python -m data.prepare_pretraining --input data/corpora/pydoc_topics.jsonl "
            "--tokenizer models/tokenizers/tiny --output-prefix data/corpora/pydoc_topics --append-eod"
        )
