"""Tokenizers shaped like real ones, built locally from the tiny BPE (no hub): Llama 3's special tokens at
their real ids, and vocabularies on either side of the 65,500 ids where .bin files switch to int32."""

import json
from pathlib import Path

TINY_TOKENIZER = Path(__file__).resolve().parents[1] / "models" / "tokenizers" / "tiny"

# Meta-Llama-3(.1)-8B-Instruct's tokenizer: 128,000 BPE entries, then 256 special tokens from id 128000.
LLAMA3_FIRST_SPECIAL_ID = 128000
LLAMA3_NAMED_SPECIAL_TOKENS = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128004: "<|finetune_right_pad_id|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128008: "<|eom_id|>",
    128009: "<|eot_id|>",
    128010: "<|python_tag|>",
}


def llama3_special_tokens(first_id: int) -> dict[int, str]:
    """The 256 special tokens of Llama 3 in their order, from `first_id` (128000 in the real tokenizer)."""
    reserved = (f"<|reserved_special_token_{n}|>" for n in range(256))
    named = {id - LLAMA3_FIRST_SPECIAL_ID: token for id, token in LLAMA3_NAMED_SPECIAL_TOKENS.items()}
    return {first_id + offset: named.get(offset) or next(reserved) for offset in range(256)}


def write_llama3_style_tokenizer(folder: Path, first_special_id: int = LLAMA3_FIRST_SPECIAL_ID) -> Path:
    """The tiny BPE's 4,096 entries, padded with never-produced entries up to `first_special_id`, then Llama 3's
    special tokens. As in Llama 3.1 8B (the base model), encoding prepends <|begin_of_text|> and the eos is
    <|end_of_text|>; the instruct template ends each turn with <|eot_id|>."""
    spec = json.loads((TINY_TOKENIZER / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab.update({f"<unused_{id}>": id for id in range(len(vocab), first_special_id)})
    specials = llama3_special_tokens(first_special_id)
    spec["added_tokens"] = spec["added_tokens"] + [
        {"id": id, "content": token, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True} for id, token in specials.items()]
    bos = specials[first_special_id]
    spec["post_processor"] = {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                       {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {bos: {"id": bos, "ids": [first_special_id], "tokens": [bos]}}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": specials[first_special_id + 1],
        "model_max_length": 131072}))
    return folder
