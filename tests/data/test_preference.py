"""data.preference: pair validation, tokenization into prompt/chosen/rejected, output round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data import chat_templates
from data.core.errors import BadLinePolicy, DataError
from data.core.tokenizer import load_hf_tokenizer
from data.preference import pairs

REPO = Path(__file__).resolve().parents[2]
TINY_TOKENIZER = REPO / "models" / "tokenizers" / "tiny"
EXAMPLE_PAIRS = REPO / "data" / "sft_examples" / "preference_pairs.jsonl"
LLAMA3_SPECIAL_TOKENS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return load_hf_tokenizer(TINY_TOKENIZER)


@pytest.fixture(scope="module")
def llama3_tokenizer():
    tokenizer = load_hf_tokenizer(TINY_TOKENIZER)
    tokenizer.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIAL_TOKENS})
    return tokenizer


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def conversation_pair(prompt_messages: list[dict], chosen: str, rejected: str) -> dict:
    return {
        "chosen": prompt_messages + [turn("assistant", chosen)],
        "rejected": prompt_messages + [turn("assistant", rejected)],
    }


def tokenize(paths, tokenizer, template="chatml", skip=False):
    policy = BadLinePolicy(skip=skip)
    records = pairs.tokenize_pairs([str(p) for p in paths], tokenizer, chat_templates.load_template(template), policy)
    return records, policy


def decode_trained(ids, mask, tokenizer) -> str:
    return tokenizer.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)


@pytest.mark.parametrize("template_name, end_of_turn", [("chatml", "<|im_end|>"), ("llama3_instruct", "<|eot_id|>")])
def test_example_pairs_tokenize_to_prompt_and_masked_answers(tiny_tokenizer, llama3_tokenizer, template_name, end_of_turn):
    tokenizer = tiny_tokenizer if template_name == "chatml" else llama3_tokenizer
    records, _ = tokenize([EXAMPLE_PAIRS], tokenizer, template_name)
    raw = [json.loads(line) for line in open(EXAMPLE_PAIRS)]
    assert len(records) == len(raw) >= 100
    template = chat_templates.load_template(template_name)
    for record, pair in zip(records[:40], raw):
        for side in ("chosen", "rejected"):
            full = chat_templates.tokenize_conversation(pair[side], tokenizer, template)
            assert record["prompt_ids"] + record[f"{side}_ids"] == full.input_ids
            answer = pair[side][-1]["content"] + end_of_turn
            assert decode_trained(record[f"{side}_ids"], record[f"{side}_loss_mask"], tokenizer) == answer
        prompt_text = tokenizer.decode(record["prompt_ids"], skip_special_tokens=False)
        assert prompt_text.endswith(template.generation_prompt)
    assert records[0]["source"] == f"{EXAMPLE_PAIRS}:1"


def test_prompt_string_and_trl_layouts(tmp_path, tiny_tokenizer):
    path = write_lines(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."},
            {"prompt": [turn("user", "What is 2+2?")], "chosen": [turn("assistant", "4.")], "rejected": "5."},
            conversation_pair([turn("user", "What is 2+2?")], "4.", "5."),
        ],
    )
    records, _ = tokenize([path], tiny_tokenizer)
    strip_source = [{k: v for k, v in r.items() if k != "source"} for r in records]
    assert strip_source[0] == strip_source[1] == strip_source[2]


def test_multi_turn_prompt_keeps_earlier_answers_out_of_the_loss(tmp_path, tiny_tokenizer):
    prompt = [turn("system", "Be brief."), turn("user", "Hi"), turn("assistant", "Hello."), turn("user", "2+2?")]
    path = write_lines(tmp_path / "pairs.jsonl", [conversation_pair(prompt, "4", "I don't know.")])
    (record,), _ = tokenize([path], tiny_tokenizer)
    assert "Hello.<|im_end|>" in tiny_tokenizer.decode(record["prompt_ids"], skip_special_tokens=False)
    assert decode_trained(record["rejected_ids"], record["rejected_loss_mask"], tiny_tokenizer) == "I don't know.<|im_end|>"


BAD_PAIRS = [
    ('{"chosen": [', "malformed JSON"),
    ({"chosen": [turn("user", "q"), turn("assistant", "a")]}, "missing field 'rejected'"),
    ({"chosen": "a", "rejected": [turn("user", "q"), turn("assistant", "b")]}, "field 'chosen' must be a list"),
    ({"prompt": 5, "chosen": "a", "rejected": "b"}, "field 'prompt' must be a string or a list, got int"),
    (
        {"chosen": [turn("user", "q1"), turn("assistant", "a")], "rejected": [turn("user", "q2"), turn("assistant", "b")]},
        "must share the prompt .* differ at message 0",
    ),
    (
        {"chosen": [turn("user", "q"), turn("assistant", "a")], "rejected": [turn("user", "q"), turn("user", "b")]},
        "field 'rejected': the last message must be from the assistant",
    ),
    ({"chosen": [turn("assistant", "a")], "rejected": [turn("assistant", "b")]}, "there is no prompt"),
    ({"prompt": "q", "chosen": "same", "rejected": " same "}, "same final answer"),
    ({"prompt": "q", "chosen": [turn("assistant", "a"), turn("assistant", "b")], "rejected": "c"}, "exactly one"),
]


@pytest.mark.parametrize("bad_line, expected", BAD_PAIRS, ids=[e for _, e in BAD_PAIRS])
def test_bad_pair_names_file_line_and_field(tmp_path, tiny_tokenizer, bad_line, expected):
    good = {"prompt": "q", "chosen": "right", "rejected": "wrong"}
    path = write_lines(tmp_path / "pairs.jsonl", [good, bad_line])
    with pytest.raises(DataError, match=expected) as error:
        tokenize([path], tiny_tokenizer)
    assert str(error.value).startswith(f"{path}:2")
    records, policy = tokenize([path], tiny_tokenizer, skip=True)
    assert len(records) == 1 and len(policy.skipped) == 1


def test_cli_outputs_round_trip_and_are_reproducible(tmp_path, tiny_tokenizer, capsys):
    written = {}
    for suffix in (".jsonl", ".npy"):
        out = tmp_path / f"pairs{suffix}"
        argv = ["--input", str(EXAMPLE_PAIRS), "--output", str(out), "--tokenizer", str(TINY_TOKENIZER)]
        assert pairs.main(argv) == 0
        first = out.read_bytes()
        assert pairs.main(argv) == 0
        assert out.read_bytes() == first
        written[suffix] = pairs.read_pairs(out)
    assert written[".jsonl"] == [dict(r) for r in written[".npy"]]
    assert written[".jsonl"] == tokenize([EXAMPLE_PAIRS], tiny_tokenizer)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl", "pairs.npy"]  # no temp files
    assert "wrote 150 preference pairs" in capsys.readouterr().out


def test_cli_empty_input_and_skip_report(tmp_path, capsys):
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    argv = ["--output", str(tmp_path / "o.jsonl"), "--tokenizer", str(TINY_TOKENIZER)]
    assert pairs.main(["--input", str(empty), *argv]) == 2
    assert "no usable preference pairs" in capsys.readouterr().err
    mixed = write_lines(tmp_path / "mixed.jsonl", ["nope", {"prompt": "q", "chosen": "a", "rejected": "b"}])
    assert pairs.main(["--input", str(mixed), *argv, "--skip-bad-lines"]) == 0
    assert "skipped 1 bad line(s)" in capsys.readouterr().err
