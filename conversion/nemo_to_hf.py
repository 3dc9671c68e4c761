"""Export a NeMo 2 checkpoint (imported model or training-run checkpoint) to a Hugging Face folder.

Uses NeMo's registered "hf" exporter (llm.export_ckpt -> HFLlamaExporter / HFMistralExporter /
HFMixtralExporter / HFQwen2Exporter / HFQwen3Exporter). The result has safetensors weights, config.json, generation_config.json and
tokenizer files with the chat template inside tokenizer_config.json. It is assembled in a hidden
sibling directory and renamed into place only when complete.

Tokenizer: --tokenizer DIR wins; otherwise the Hugging Face tokenizer recorded in the checkpoint's
context (context/nemo_tokenizer for imported models). --chat-template FILE sets/replaces the template.

Usage: conversion/README.md.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import cli
from conversion.errors import ConversionError, ConversionFailed
from conversion.hf_to_nemo import (
    FAMILY_MODEL_CLASSES,
    publish,
    refuse_existing_output,
    refuse_shape_mismatches,
    report,
    safetensors_files,
)


def log(message: str) -> None:
    print(f"[nemo_to_hf] {message}", flush=True)


# ---------------------------------------------------------------- checks on the NeMo checkpoint


def is_checkpoint_dir(path: Path) -> bool:
    return (path / "weights").is_dir() and (path / "context").is_dir()


def find_checkpoint_dir(path: Path) -> Path:
    """The checkpoint dir itself: an imported model dir or `<log_dir>/checkpoints/<name>--step=N-...`."""
    if not path.is_dir():
        raise ConversionError(f"{path} is not a directory")
    if is_checkpoint_dir(path):
        if not (path / "context" / "io.json").is_file():
            raise ConversionError(f"{path}/context has no io.json: incomplete NeMo 2 checkpoint")
        if not (path / "weights" / "metadata.json").is_file():
            raise ConversionError(f"{path}/weights has no metadata.json: incomplete or unfinished checkpoint")
        return path
    if (path / "weights").is_dir():
        raise ConversionError(
            f"{path} has weights/ but no context/: NeMo 2 needs the context to rebuild the model "
            "(train with nl.ModelCheckpoint(save_context_on_train_end/always_save_context))"
        )
    if (path / "context").is_dir():
        raise ConversionError(f"{path} has context/ but no weights/: incomplete NeMo 2 checkpoint")
    candidates = sorted(str(p.parent) for p in path.glob("**/context/io.json") if is_checkpoint_dir(p.parent.parent))
    hint = f"; checkpoints below it: {candidates[:5]}" if candidates else ""
    raise ConversionError(f"{path} is not a NeMo 2 checkpoint (needs weights/ and context/){hint}")


def read_model_context(ckpt_dir: Path):
    """The model's fiddle config from context/io.json, not yet built (building needs the CPU patches)."""
    from nemo.lightning import io

    try:
        return io.load_context(ckpt_dir, subpath="model", build=False)
    except Exception as error:
        raise ConversionError(f"cannot read the model from {ckpt_dir}/context: {error}") from error


def require_supported_model(model_config) -> str:
    from nemo.collections import llm

    model_class = model_config.__fn_or_cls__
    for family, class_name in FAMILY_MODEL_CLASSES.items():
        if issubclass(model_class, getattr(llm, class_name)):
            return family
    supported = ", ".join(f"llm.{name}" for name in FAMILY_MODEL_CLASSES.values())
    raise ConversionError(f"unsupported architecture {model_class.__module__}.{model_class.__name__}; supported: {supported}")


def refuse_peft_checkpoint(ckpt_dir: Path) -> None:
    if (ckpt_dir / "weights" / "adapter_metadata.json").is_file():
        raise ConversionError(
            f"{ckpt_dir} holds LoRA adapter weights only: merge them first "
            "(python -m conversion.merge_lora), then export the merged checkpoint"
        )


# ---------------------------------------------------------------- tokenizer


def tokenizer_dir_in_context(model_config) -> Path | None:
    tokenizer = getattr(model_config, "tokenizer", None)
    path = getattr(tokenizer, "pretrained_model_name", None)
    if path and Path(str(path)).is_dir():
        return Path(str(path))
    return None


def resolve_hf_tokenizer(model_config, tokenizer_dir: Path | None, chat_template_file: Path | None):
    from transformers import AutoTokenizer

    source = tokenizer_dir or tokenizer_dir_in_context(model_config)
    if source is None:
        raise ConversionError(
            "the checkpoint's context has no Hugging Face tokenizer folder; pass --tokenizer DIR"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as error:
        raise ConversionError(f"cannot load a Hugging Face tokenizer from {source}: {error}") from error
    if chat_template_file is not None:
        if not chat_template_file.is_file():
            raise ConversionError(f"chat template {chat_template_file} does not exist")
        tokenizer.chat_template = chat_template_file.read_text()
    log(f"tokenizer from {source}" + (f", chat template from {chat_template_file}" if chat_template_file else ""))
    return tokenizer


# ---------------------------------------------------------------- the export itself


def first_line_mentioning(word: str, text: str) -> str | None:
    """megatron wraps per-rank failures in a CheckpointException whose useful line is deep inside."""
    for line in text.splitlines():
        if word in line.lower():
            return line.split("CheckpointingException: ")[-1].strip()
    return None


def run_nemo_exporter(ckpt_dir: Path, staged: Path) -> None:
    from nemo.collections import llm

    from conversion._cpu import cpu_conversion

    try:
        with cpu_conversion():
            llm.export_ckpt(ckpt_dir, "hf", output_path=staged)
    except Exception as error:
        mismatch = first_line_mentioning("mismatch", str(error))
        if mismatch:
            raise ConversionError(f"shape mismatch between {ckpt_dir}/context and its weights: {mismatch}") from error
        raise ConversionFailed(f"NeMo export of {ckpt_dir} failed: {type(error).__name__}: {error}") from error


def write_tokenizer(tokenizer, hf_dir: Path) -> None:
    # The exporter saved NeMo's wrapped tokenizer (which adds cls/sep tokens) with the template
    # in chat_template.jinja; replace it with the plain HF tokenizer, template in tokenizer_config.json.
    for name in ("chat_template.jinja", "chat_template.json", "special_tokens_map.json",
                 "tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model"):
        (hf_dir / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(hf_dir, save_jinja_files=False)


def write_generation_config(model_config, tokenizer, hf_dir: Path) -> None:
    """Prefer the generation config NeMo recorded at import; the exporter only derives one from config.json."""
    import fiddle as fdl

    recorded = getattr(getattr(model_config, "config", None), "generation_config", None)
    if recorded is None:
        return
    generation_config = fdl.build(recorded) if isinstance(recorded, fdl.Buildable) else recorded
    if generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        generation_config.pad_token_id = tokenizer.pad_token_id
    generation_config.save_pretrained(hf_dir)


def write_pad_token_id(tokenizer, hf_dir: Path) -> None:
    """NeMo's exporter carries bos/eos ids into config.json but not the pad id."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(hf_dir)
    if tokenizer.pad_token_id is not None and config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
        config.save_pretrained(hf_dir)


def require_loadable_hf_folder(hf_dir: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    shards = safetensors_files(hf_dir)
    if not shards:
        raise ConversionFailed(f"NeMo's exporter wrote no safetensors weights in {hf_dir}")
    AutoConfig.from_pretrained(hf_dir)
    AutoTokenizer.from_pretrained(hf_dir)
    refuse_shape_mismatches(hf_dir, shards)


def export_nemo(
    nemo_dir: Path | str,
    out_dir: Path | str,
    tokenizer_dir: Path | str | None = None,
    chat_template_file: Path | str | None = None,
    overwrite: bool = False,
) -> Path:
    out_dir = Path(out_dir).resolve()
    tokenizer_dir = Path(tokenizer_dir).resolve() if tokenizer_dir else None
    chat_template_file = Path(chat_template_file).resolve() if chat_template_file else None
    started = time.perf_counter()

    refuse_existing_output(out_dir, overwrite)
    ckpt_dir = find_checkpoint_dir(Path(nemo_dir).resolve())
    log(f"checkpoint {ckpt_dir}")
    refuse_peft_checkpoint(ckpt_dir)
    log("loading NeMo (takes ~25 s)")
    model_config = read_model_context(ckpt_dir)
    family = require_supported_model(model_config)
    log(f"model: {model_config.__fn_or_cls__.__name__} ({family})")
    tokenizer = resolve_hf_tokenizer(model_config, tokenizer_dir, chat_template_file)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-") as staging:
        staged = Path(staging) / "hf"
        log("converting with NeMo's exporter (load dist checkpoint, map, save safetensors)")
        run_nemo_exporter(ckpt_dir, staged)
        write_tokenizer(tokenizer, staged)
        write_generation_config(model_config, tokenizer, staged)
        write_pad_token_id(tokenizer, staged)
        log("checking the result loads with transformers")
        require_loadable_hf_folder(staged)
        publish(staged, out_dir)
    log(f"wrote {out_dir} in {time.perf_counter() - started:.0f}s")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description="Export a NeMo 2 checkpoint to a Hugging Face model folder.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--nemo", type=Path, help="NeMo 2 checkpoint dir (has weights/ and context/)")
    source.add_argument("--run", type=Path, help="a training run's log dir (or its checkpoints/): its newest checkpoint")
    parser.add_argument("--out", required=True, type=Path, help="Hugging Face folder to create")
    parser.add_argument("--tokenizer", type=Path, help="HF tokenizer folder (default: the one in the checkpoint context)")
    parser.add_argument("--chat-template", type=Path, help="Jinja chat template file to store in tokenizer_config.json")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    from conversion.average import newest_checkpoint  # here, not at the top: conversion.average imports this module

    return report(lambda: export_nemo(args.nemo or newest_checkpoint(args.run), args.out, args.tokenizer,
                                      args.chat_template, args.overwrite))


if __name__ == "__main__":
    raise SystemExit(main())
