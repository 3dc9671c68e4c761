"""Bad input is refused before any model loads: exit 2, one `error:` line, in well under a second of work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def evaluation(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evaluation", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert "loading" not in result.stderr  # no model was loaded
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


@pytest.fixture
def hf_like(tmp_path) -> Path:
    """Looks like an HF folder to the checks (config.json + weights file); never loaded."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_missing_model_folder(tmp_path):
    assert_refused(evaluation("--model", str(tmp_path / "nope")), "does not exist")


def test_folder_that_is_no_model(tmp_path):
    assert_refused(evaluation("--model", str(tmp_path)), "neither a Hugging Face folder", "NeMo 2 checkpoint")


def test_hf_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert_refused(evaluation("--model", str(tmp_path)), "no weights")


def test_unknown_benchmark(hf_like):
    assert_refused(evaluation("--model", str(hf_like), "--benchmarks", "facts,trivia"), "unknown benchmark 'trivia'", "available:")


def test_benchmark_without_data(hf_like):
    assert_refused(evaluation("--model", str(hf_like), "--benchmarks", "mmlu"), "--data mmlu=FILE")


def test_data_not_jsonl(hf_like, tmp_path):
    data = tmp_path / "mmlu.jsonl"
    data.write_text('{"question": "q", "choices": ["a", "b", "c", "d"], "answer": 1}\nquestion,answer\n')
    assert_refused(evaluation("--model", str(hf_like), "--benchmarks", "mmlu", "--data", f"mmlu={data}"),
                   f"{data}:2: not JSON Lines")


def test_data_lacking_fields(hf_like, tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text('{"question": "1 + 1?"}\n')
    assert_refused(evaluation("--model", str(hf_like), "--benchmarks", "gsm8k", "--data", f"gsm8k={data}"),
                   f"{data}:1: missing field 'answer'")


def test_missing_data_file(hf_like, tmp_path):
    assert_refused(evaluation("--model", str(hf_like), "--benchmarks", "gsm8k", "--data", f"gsm8k={tmp_path}/none.jsonl"),
                   "does not exist")


def test_bad_options(hf_like):
    assert_refused(evaluation("--model", str(hf_like), "--limit", "0"), "--limit must be positive")
    assert_refused(evaluation("--model", str(hf_like), "--limit", "ten"), "invalid int value")
    assert_refused(evaluation(), "one of the arguments --model --compare --list is required")
    assert_refused(evaluation("--model", str(hf_like), "--benchmarks", ","), "no benchmark named")


def test_compare_needs_result_files(tmp_path):
    not_result = tmp_path / "a.json"
    not_result.write_text('{"model": "x"}')
    assert_refused(evaluation("--compare", str(not_result), str(not_result)), "not a result JSON", "missing checkpoint")


def test_generate_refuses_missing_model(tmp_path):
    assert_refused(evaluation("generate", "--model", str(tmp_path / "nope"), "--prompt", "hi"), "does not exist")


def test_list_names_every_benchmark():
    result = evaluation("--list")
    assert result.returncode == 0, result.stderr
    for name in ("arithmetic", "facts", "heldout_text", "gsm8k", "mmlu", "arc_challenge"):
        assert name in result.stdout


@pytest.mark.slow
def test_failure_after_work_started_exits_1(hf_like):
    """Passes every check (config.json, a weights file), then transformers cannot load it: exit 1."""
    result = evaluation("--model", str(hf_like), "--benchmarks", "facts", "--limit", "1")
    assert result.returncode == 1, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "cannot load" in error_lines[0], result.stderr
