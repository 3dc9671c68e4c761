"""Every data command's exit policy, run as a user runs it: bad input or a refusal exits 2 with one
`error:` line naming what is wrong; a failure after the work started exits 1; no traceback either way."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = str(REPO / "models" / "tokenizers" / "tiny")


def run(module: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, capture_output=True, text=True)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def bad_jsonl(tmp_path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "instruction": "a", "response": "b"}\n{oops\n')
    return path


def bad_input_commands(bad_jsonl: Path, out: Path) -> dict[str, tuple[list[str], str]]:
    return {
        "sft": (["data.sft", "convert", "--input", str(bad_jsonl), "--output", str(out / "o.jsonl")],
                f"{bad_jsonl}:2: malformed JSON"),
        "packing": (["data.packing", "--train", str(bad_jsonl), "--tokenizer", TOKENIZER, "--pack-size", "1",
                     "--output-dir", str(out)], "--pack-size must be at least 2"),
        "preference": (["data.preference", "--input", str(bad_jsonl.with_name("none.jsonl")), "--output",
                        str(out / "p.jsonl"), "--tokenizer", TOKENIZER], "none.jsonl: no such file"),
        "prepare_pretraining": (["data.prepare_pretraining", "--input", str(bad_jsonl), "--tokenizer", TOKENIZER,
                                 "--output-prefix", str(out / "c")], f"{bad_jsonl}:2: malformed JSON"),
    }


@pytest.mark.parametrize("command", ["sft", "packing", "preference", "prepare_pretraining"])
def test_bad_input_exits_2_with_one_error_line(tmp_path, bad_jsonl, command):
    argv, expected = bad_input_commands(bad_jsonl, tmp_path / "out")[command]
    result = run(*argv)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert expected in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_failure_after_work_started_exits_1(tmp_path):
    corpus = tmp_path / "in.jsonl"
    corpus.write_text('{"text": "hello"}\n')
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # Input and tokenizer are fine; the output folder cannot be made (a file is in the way).
    result = run("data.prepare_pretraining", "--input", str(corpus), "--tokenizer", TOKENIZER,
                 "--output-prefix", str(blocker / "corpus"))
    assert result.returncode == 1, result.stderr
    (line,) = error_lines(result)
    assert str(blocker) in line
    assert blocker.read_text() == "not a folder"
