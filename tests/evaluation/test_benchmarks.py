"""The shipped benchmarks: data as the committed script writes it, configs lm-eval accepts, line checks."""

from __future__ import annotations

import json

import pytest
import yaml

from evaluation import make_arithmetic_sft, make_benchmarks
from evaluation.errors import Refusal
from evaluation.tasks import (
    DEFAULT_BENCHMARKS,
    SHIPPED_DIR,
    available_benchmarks,
    check_jsonl,
    select_benchmarks,
    write_task_configs,
)


def test_committed_data_is_what_the_script_writes(tmp_path):
    for path in make_benchmarks.write_benchmarks(tmp_path):
        assert path.read_text() == (SHIPPED_DIR / path.name).read_text(), f"rerun python -m evaluation.make_benchmarks ({path.name})"
    # The SFT data that teaches arithmetic's answer format: as written, and none of the benchmark's questions.
    for path in make_arithmetic_sft.write(tmp_path / "sft"):
        assert path.read_text() == (make_arithmetic_sft.OUT_DIR / path.name).read_text(), "rerun python -m evaluation.make_arithmetic_sft"
    taught = {record["input"] for record in make_arithmetic_sft.sft_records()}
    assert not taught & {f"Question: {p['question']}\nAnswer:" for p in make_benchmarks.arithmetic_problems()}


def test_shipped_sizes_and_answers():
    problems = [json.loads(line) for line in (SHIPPED_DIR / "arithmetic.jsonl").read_text().splitlines()]
    facts = [json.loads(line) for line in (SHIPPED_DIR / "facts.jsonl").read_text().splitlines()]
    assert len(problems) == 40 and len(facts) == 40
    assert len((SHIPPED_DIR / "heldout_text.jsonl").read_bytes()) > 3000
    for problem in problems:  # the worked steps end in the number after ####
        steps, answer = problem["answer"].split("\n#### ")
        assert steps.splitlines()[-1].endswith(f"= {answer}")
    for fact in facts:
        assert len(fact["choices"]) == 4 and 0 <= fact["answer"] < 4


def test_default_benchmarks_pass_their_checks():
    benchmarks = select_benchmarks(list(DEFAULT_BENCHMARKS))
    assert [b.config["output_type"] for b in benchmarks] == ["generate_until", "multiple_choice", "loglikelihood_rolling"]


def test_local_copy_replaces_missing_data(tmp_path):
    copy = tmp_path / "gsm8k_test.jsonl"
    copy.write_text(json.dumps({"question": "1 + 1?", "answer": "1 + 1 = 2\n#### 2"}) + "\n")
    (gsm8k,) = select_benchmarks(["gsm8k"], {"gsm8k": copy})
    assert gsm8k.data_files == {"test": copy}
    assert gsm8k.config["output_type"] == "generate_until"  # from arithmetic.yaml, through include
    assert gsm8k.config["num_fewshot"] == 5


def test_written_configs_point_at_absolute_data(tmp_path):
    write_task_configs(select_benchmarks(["facts"]), tmp_path)
    config = yaml.safe_load((tmp_path / "facts.yaml").read_text())
    assert config["dataset_kwargs"]["data_files"] == {"test": str(SHIPPED_DIR / "facts.jsonl")}


def test_lm_eval_task_manager_loads_them(tmp_path):
    """lm-eval's own TaskManager over the written configs builds the tasks from the local JSONL."""
    from lm_eval.tasks import TaskManager

    from evaluation.engine import go_offline

    go_offline()
    write_task_configs(select_benchmarks(list(DEFAULT_BENCHMARKS)), tmp_path)
    tasks = TaskManager(include_path=str(tmp_path), include_defaults=False).load(list(DEFAULT_BENCHMARKS))["tasks"]
    assert len(tasks["arithmetic"].test_docs()) == 40
    assert tasks["facts"].doc_to_choice(tasks["facts"].test_docs()[0]) == ["Paris", "Berlin", "Madrid", "Rome"]
    assert len(tasks["heldout_text"].test_docs()) == len(make_benchmarks.HELDOUT_PARAGRAPHS)


@pytest.mark.parametrize("lines, message", [
    (['{"question": "q", "answer": "1"}', "not json"], ":2: not JSON Lines"),
    (['["a list"]'], ":1: expected a JSON object, got list"),
    (['{"question": "q"}'], ":1: missing field 'answer'"),
    (['{"question": 3, "answer": "1"}'], ":1: field 'question' should be str, got int"),
    ([], "has no records"),
])
def test_bad_lines_are_named(tmp_path, lines, message):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(Refusal, match=message):
        check_jsonl(path, {"question": "str", "answer": "str"})


def test_extra_benchmarks_dir_adds_and_replaces(tmp_path):
    (tmp_path / "mine.yaml").write_text("include: " + str(SHIPPED_DIR / "facts.yaml") + "\ntask: mine\n"
                                        "dataset_kwargs: {data_files: {test: mine.jsonl}}\n")
    (tmp_path / "mine.jsonl").write_text('{"question": "2 + 2?", "choices": ["4", "5"], "answer": 0}\n')
    assert "mine" in available_benchmarks([tmp_path])
    (mine,) = select_benchmarks(["mine"], extra_dirs=[tmp_path])
    assert mine.data_files["test"] == tmp_path / "mine.jsonl"
