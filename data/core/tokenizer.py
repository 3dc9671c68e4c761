"""Tokenizer loading: a Hugging Face tokenizer folder as transformers loads it, or (when transformers would
load it unchanged) its ``tokenizer.json`` directly through the ``tokenizers`` library, which starts in a
fraction of the time; and what identifies a tokenizer (special ids, vocabulary size, a content fingerprint)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from data.core.errors import DataError

# transformers classes whose __init__ adds nothing of its own to PreTrainedTokenizerFast's (LlamaTokenizerFast,
# for one, rebuilds the post-processor from add_bos_token/add_eos_token, so it goes through transformers).
UNCHANGED_BY_TRANSFORMERS = {
    "PreTrainedTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast", "Qwen2Tokenizer", "Qwen2TokenizerFast",
}
# tokenizer_config.json settings that make transformers change or rebuild the backend it loaded.
BACKEND_CHANGING_SETTINGS = ("add_bos_token", "add_eos_token", "from_slow", "legacy")
ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def require_tokenizer_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"tokenizer folder {folder} does not exist (expected a local Hugging Face tokenizer folder)")
    return folder


def load_hf_tokenizer(folder: str | Path):
    """transformers' fast tokenizer from a local folder (no download); documents are tokenized whole."""
    folder = require_tokenizer_folder(folder)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # OSError, ValueError, KeyError... depending on what is missing
        raise DataError(f"cannot load a Hugging Face tokenizer from {folder}: {error}") from error
    if not tokenizer.is_fast:
        raise DataError(f"{folder}: a fast (Rust) tokenizer is needed (tokenizer.json), got a slow one")
    # Silences the "longer than model_max_length" warning: nothing here truncates.
    tokenizer.model_max_length = sys.maxsize
    return tokenizer


def _json_file(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"cannot load a Hugging Face tokenizer from {path.parent}: {path.name}: {error}") from error


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def special_tokens(folder: Path) -> dict[str, str]:
    """bos/eos/pad/... token strings as transformers resolves them: special_tokens_map.json over
    tokenizer_config.json."""
    settings = {**_json_file(folder / "tokenizer_config.json"), **_json_file(folder / "special_tokens_map.json")}
    return {key: _token_text(settings[key]) for key in SPECIAL_TOKEN_KEYS if _token_text(settings.get(key))}


def loaded_unchanged(config: dict, special: dict[str, str], tokenizer_json: dict) -> bool:
    """Whether transformers' fast tokenizer for this folder is tokenizer.json as is (transformers 4.57's
    PreTrainedTokenizerFast.__init__: it adds every configured token not already added with the same flags,
    and resets a top-level pre-tokenizer's add_prefix_space to the configured one, default False)."""
    if config.get("tokenizer_class") not in UNCHANGED_BY_TRANSFORMERS:
        return False
    if any(config.get(key) for key in BACKEND_CHANGING_SETTINGS):
        return False
    added = {token["content"]: token for token in tokenizer_json.get("added_tokens", [])}
    for token in config.get("added_tokens_decoder", {}).values():
        same = added.get(token.get("content"))
        if same is None or any(same.get(flag) != token.get(flag) for flag in ADDED_TOKEN_FLAGS):
            return False
    extra = [_token_text(token) for token in config.get("additional_special_tokens", [])]
    if any(token not in added for token in [*special.values(), *extra]):
        return False
    pre_tokenizer = tokenizer_json.get("pre_tokenizer") or {}
    return pre_tokenizer.get("add_prefix_space", False) == bool(config.get("add_prefix_space", False))


def load_backend_tokenizer(folder: str | Path):
    """The ``tokenizers.Tokenizer`` that transformers' fast tokenizer would encode with.

    Read straight from tokenizer.json when transformers would use it unchanged (:func:`loaded_unchanged`),
    otherwise taken from transformers (slow start, same ids). Truncation and padding are off, as
    transformers turns them off for a plain ``tokenizer(texts)`` call.
    """
    folder = require_tokenizer_folder(folder)
    path = folder / "tokenizer.json"
    config = _json_file(folder / "tokenizer_config.json")
    backend = None
    if path.is_file() and config.get("tokenizer_class") in UNCHANGED_BY_TRANSFORMERS:
        from tokenizers import Tokenizer

        text = path.read_text(encoding="utf-8")
        try:
            if loaded_unchanged(config, special_tokens(folder), json.loads(text)):
                backend = Tokenizer.from_str(text)
        except Exception as error:  # tokenizers raises Exception for a malformed file
            raise DataError(f"cannot load a Hugging Face tokenizer from {folder}: {error}") from error
    if backend is None:
        backend = load_hf_tokenizer(folder).backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    return backend


@dataclass(frozen=True)
class TokenizerIdentity:
    """What made a corpus: enough to tell two tokenizers apart and to check ids against a vocabulary."""

    tokenizer: str  # the folder as given
    fingerprint: str  # sha256 of tokenizer.json: the same tokenizer wherever its folder lies
    vocab_size: int  # added tokens included (transformers' len(tokenizer))
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None

    def as_json(self) -> dict:
        return asdict(self)


def fingerprint(folder: str | Path) -> str:
    path = Path(folder) / "tokenizer.json"
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "unknown"


def tokenizer_identity(folder: str | Path, backend=None) -> TokenizerIdentity:
    """The identity of the tokenizer in ``folder`` (``backend``: its loaded tokenizer, if at hand)."""
    folder = require_tokenizer_folder(folder)
    backend = backend or load_backend_tokenizer(folder)
    special = special_tokens(folder)

    def token_id(key: str) -> int | None:
        return backend.token_to_id(special[key]) if key in special else None

    return TokenizerIdentity(
        tokenizer=os.fspath(folder),
        fingerprint=fingerprint(folder),
        vocab_size=backend.get_vocab_size(with_added_tokens=True),
        bos_id=token_id("bos_token"),
        eos_id=token_id("eos_token"),
        pad_id=token_id("pad_token"),
    )
