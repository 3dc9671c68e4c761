"""What SFT and LoRA recipes train on: record forms detected (and refused, file:line) before launch, the plain
template and last-turn-only masks, and the recipe's data module serving exactly tokenize_conversation's tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data import chat_templates, sft
from data.core.errors import DataError
from data.core.tokenizer import load_hf_tokenizer
from data.sft_records import TrainingFormat, detect_form

REPO = Path(__file__).resolve().parents[2]
TINY_TOKENIZER = REPO / "models" / "tokenizers" / "tiny"
CHAT_SFT = REPO / "data" / "sft_examples" / "chat_sft"
PROMPT_RESPONSE_SFT = REPO / "data" / "sft_examples" / "tiny_sft"
PROMPT_RESPONSE = {"input": "What is 2 + 2?", "output": "4."}
CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                     {"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."}]}


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return load_hf_tokenizer(TINY_TOKENIZER)


def dataset_root(folder: Path, training: list, validation: list | None = None) -> Path:
    for name, records in (("training", training), ("validation", validation)):
        if records is not None:
            (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_shipped_folders_are_one_form_each():
    assert detect_form(CHAT_SFT) == "chat"
    assert detect_form(PROMPT_RESPONSE_SFT) == "prompt_response"


def test_mixed_forms_refused_naming_file_line_and_fields(tmp_path):
    root = dataset_root(tmp_path, [PROMPT_RESPONSE, PROMPT_RESPONSE], [CHAT])
    with pytest.raises(DataError) as error:
        detect_form(root)
    message = str(error.value)
    assert f"{root / 'validation.jsonl'}:1: a chat record, but {root / 'training.jsonl'}:1 is prompt_response" in message
    assert '{"input": PROMPT, "output": ANSWER}' in message and "python -m data.sft convert" in message


def test_record_of_neither_form_refused_with_the_expected_fields(tmp_path):
    root = dataset_root(tmp_path, [PROMPT_RESPONSE, {"prompt": "q", "completion": "a"}])
    with pytest.raises(DataError, match=r"training.jsonl:2: a record of neither SFT form \(fields \['completion', "
                                        r"'prompt'\]\); expected prompt_response .*or chat \{\"messages\""):
        detect_form(root)
    bad_turn = {"messages": [{"role": "user", "content": "Hi"}]}
    with pytest.raises(DataError, match="training.jsonl:1: field 'messages': the last message must be from the assistant"):
        detect_form(dataset_root(tmp_path, [bad_turn]))


def test_record_form_override_refuses_the_other_form(tmp_path):
    assert detect_form(CHAT_SFT, "chat") == "chat"
    with pytest.raises(DataError, match="training.jsonl:1: a prompt_response record, but data.record_form is chat"):
        detect_form(PROMPT_RESPONSE_SFT, "chat")
    with pytest.raises(DataError, match="expected one of"):
        detect_form(CHAT_SFT, "sharegpt")


def test_plain_template_matches_its_jinja_export_and_ends_with_eos(tiny_tokenizer):
    template = chat_templates.prepare_template("plain", tiny_tokenizer)
    jinja = chat_templates.template_to_jinja(template)
    for record in (CHAT, PROMPT_RESPONSE):
        messages = TrainingFormat("plain", "Be brief.").conversation(record, "test")
        ours = chat_templates.tokenize_conversation(messages, tiny_tokenizer, template)
        theirs = tiny_tokenizer.apply_chat_template(
            messages, chat_template=jinja, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert (ours.input_ids, ours.loss_mask) == (theirs["input_ids"], theirs["assistant_masks"])
    trained = [text for text, on in sft.decode_groups(ours, tiny_tokenizer) if on]
    assert tiny_tokenizer.decode(ours.input_ids) == "Be brief.\nWhat is 2 + 2?\n4.\n<|endoftext|>"
    assert trained == ["4.\n<|endoftext|>"]


@pytest.mark.parametrize("template_name, answers", [("plain", ["4.\n<|endoftext|>"]), ("chatml", ["4.<|im_end|>"])])
def test_last_turn_only_trains_the_final_answer(tiny_tokenizer, template_name, answers):
    template = chat_templates.prepare_template(template_name, tiny_tokenizer)
    every = TrainingFormat(template_name).sequence(CHAT, tiny_tokenizer, template, "test")
    last = TrainingFormat(template_name, last_turn_only=True).sequence(CHAT, tiny_tokenizer, template, "test")
    assert last.input_ids == every.input_ids
    assert len([on for _, on in sft.decode_groups(every, tiny_tokenizer) if on]) == 2
    assert [text for text, on in sft.decode_groups(last, tiny_tokenizer) if on] == answers


def test_prompt_response_record_is_one_turn_after_the_system_prompt():
    assert TrainingFormat("chatml", "Be brief.").conversation(PROMPT_RESPONSE, "test") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PROMPT_RESPONSE["input"]},
        {"role": "assistant", "content": PROMPT_RESPONSE["output"]},
    ]
    assert TrainingFormat("chatml").conversation(PROMPT_RESPONSE, "test")[0]["role"] == "user"


# ------------------------------------------------------------------- the recipe's data module (NeMo)


def served_equals_tokenize_conversation(tokenizer_dir: Path, root: Path, training_format: TrainingFormat) -> int:
    """Checks every training record NeMo's dataset serves against TrainingFormat.sequence; returns the count."""
    from nemo.collections.common.tokenizers import AutoTokenizer

    from data.sft_datamodule import TemplatedSFTDataModule

    tokenizer = AutoTokenizer(str(tokenizer_dir))
    datamodule = TemplatedSFTDataModule(
        root, seq_length=512, tokenizer=tokenizer, micro_batch_size=2, global_batch_size=2, num_workers=0,
        template=training_format.template, system_prompt=training_format.system_prompt,
        last_turn_only=training_format.last_turn_only,
    )
    dataset = datamodule._create_dataset(str(root / "training.jsonl"))
    hf_tokenizer = tokenizer.tokenizer
    template = chat_templates.prepare_template(training_format.template, hf_tokenizer)
    records = [json.loads(line) for line in (root / "training.jsonl").read_text().splitlines()]
    for index, record in enumerate(records):
        expected = training_format.sequence(record, hf_tokenizer, template, "test")
        item = dataset[index]
        assert item["input_ids"].tolist() == expected.input_ids
        assert item["loss_mask"].int().tolist() == expected.loss_mask
    batch = dataset.collate_fn([dataset[0], dataset[1]])
    first = training_format.sequence(records[0], hf_tokenizer, template, "test")
    length = len(first.input_ids) - 1
    assert batch["tokens"][0, :length].tolist() == first.input_ids[:-1]
    assert batch["loss_mask"][0, :length].tolist() == first.loss_mask[1:], "label-aligned: mask of the next token"
    return len(records)


@pytest.mark.parametrize("training_format", [TrainingFormat("plain"), TrainingFormat("chatml", last_turn_only=True)])
def test_data_module_trains_exactly_the_marked_tokens_of_chat_records(training_format):
    assert served_equals_tokenize_conversation(TINY_TOKENIZER, CHAT_SFT, training_format) == 228


def test_data_module_on_smollm2_with_its_chatml_for_both_forms(smollm2_hf, tmp_path):
    from models.catalog import MODELS

    template = MODELS["smollm2_135m"].chat_template
    served_equals_tokenize_conversation(smollm2_hf, CHAT_SFT, TrainingFormat(template))
    root = dataset_root(tmp_path, [PROMPT_RESPONSE, {"input": "Capital of Peru?", "output": "Lima."}])
    served_equals_tokenize_conversation(smollm2_hf, root, TrainingFormat(template, "You are concise."))


def test_the_dry_runs_show_command_prints_the_record_the_recipe_trains_on(nemo, capsys):
    """`--dryrun` names a `python -m data.sft show` command; it shows record 0 as the built data module serves it."""
    import shlex

    import fiddle as fdl

    import launch

    overrides = ["recipe=tiny_llama_sft", f"data.dataset_root={CHAT_SFT}", "data.template=chatml",
                 "data.last_turn_only=true", "--dryrun"]
    assert launch.main(overrides) == 0
    dryrun = capsys.readouterr().out
    assert "TemplatedSFTDataModule" in dryrun and "template: chatml" in dryrun
    command = dryrun.split("python -m data.sft ", 1)[1].splitlines()[0]
    assert sft.main([*shlex.split(command), "--plain"]) == 0
    shown = capsys.readouterr().out.split("\n", 1)[1].removesuffix("\n")  # after the header line; print's newline

    from launcher import session

    datamodule = fdl.build(session.prepare("tiny_llama_sft", overrides[1:-1]).config.data)
    item = datamodule._create_dataset(str(CHAT_SFT / "training.jsonl"))[0]
    served = chat_templates.TokenizedSequence(item["input_ids"].tolist(), item["loss_mask"].int().tolist())
    assert shown == sft.plain_masked_text(sft.decode_groups(served, datamodule.tokenizer.tokenizer))
    assert shown.count("[[") == 1, "last turn only"


def test_exported_chat_template_renders_the_tokens_trained_on(smollm2_nemo, tmp_path):
    """What the model sees in training is what it sees after export: SmolLM2's recipe template, exported with
    the checkpoint (`--chat-template` from `python -m data.sft jinja`), renders the same ids and answer mask."""
    from transformers import AutoTokenizer

    from conversion.nemo_to_hf import export_nemo
    from models.catalog import MODELS

    training_format = TrainingFormat(MODELS["smollm2_135m"].chat_template)
    jinja = tmp_path / "template.jinja"
    jinja.write_text(chat_templates.template_to_jinja(chat_templates.load_template(training_format.template)))
    exported = AutoTokenizer.from_pretrained(export_nemo(smollm2_nemo, tmp_path / "hf", chat_template_file=jinja))
    template = chat_templates.prepare_template(training_format.template, exported)
    records = [json.loads(line) for line in (CHAT_SFT / "validation.jsonl").read_text().splitlines()]
    for record in [*records, PROMPT_RESPONSE]:
        trained = training_format.sequence(record, exported, template, "test")
        rendered = exported.apply_chat_template(training_format.conversation(record, "test"), tokenize=True,
                                                return_dict=True, return_assistant_tokens_mask=True)
        assert (rendered["input_ids"], rendered["assistant_masks"]) == (trained.input_ids, trained.loss_mask)


def test_a_record_whose_answers_lie_past_seq_length_adds_no_loss(tmp_path):
    """NeMo's collate would train such a record on every token (its prompt); here it trains on none."""
    from nemo.collections.common.tokenizers import AutoTokenizer

    from data.sft_datamodule import TemplatedSFTDataModule

    long_question = " ".join(["seven"] * 40)
    records = [{"messages": [{"role": "user", "content": long_question}, {"role": "assistant", "content": "ANSWER[7]"}]},
               {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "ANSWER[4]"}]}]
    (tmp_path / "training.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    datamodule = TemplatedSFTDataModule(tmp_path, seq_length=16, tokenizer=AutoTokenizer(str(TINY_TOKENIZER)),
                                        micro_batch_size=2, global_batch_size=2, num_workers=0, template="chatml")
    dataset = datamodule._create_dataset(str(tmp_path / "training.jsonl"))
    batch = dataset.collate_fn([dataset[0], dataset[1]])
    assert batch["tokens"].shape[1] <= 16
    assert batch["loss_mask"][0].sum() == 0, "the answer lies past seq_length: nothing of this record is trained"
    assert batch["loss_mask"][1].sum() > 0
