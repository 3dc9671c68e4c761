"""Merge a NeMo 2 LoRA checkpoint into its base model, giving a full NeMo 2 checkpoint.

    python -m conversion.merge_lora --lora CKPT_DIR --out DIR [--overwrite]

A thin wrapper over NeMo's own `llm.peft.merge_lora` (LoRAMerge: W += alpha/dim * B @ A), run
with the CPU patches of conversion._cpu, written atomically. NeMo's merge loads the model in
bfloat16 (its choice, kept here), so the merged checkpoint is bf16 even if the base was fp32.
Export the result with `python -m conversion.nemo_to_hf`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from conversion.hf_to_nemo import ConversionError, refuse_existing_output
from conversion.nemo_to_hf import find_checkpoint_dir

ADAPTER_METADATA = "adapter_metadata.json"  # nemo.lightning.ckpt_utils.ADAPTER_META_FILENAME


def log(message: str) -> None:
    print(f"[merge_lora] {message}", flush=True)


def base_checkpoint_of(lora_ckpt: Path) -> Path:
    metadata_file = lora_ckpt / "weights" / ADAPTER_METADATA
    if not metadata_file.is_file():
        raise ConversionError(f"{lora_ckpt} is not a LoRA checkpoint (no weights/{ADAPTER_METADATA})")
    base = Path(json.loads(metadata_file.read_text()).get("model_ckpt_path", ""))
    if not base.is_dir():
        raise ConversionError(f"the LoRA checkpoint's base model {str(base)!r} (weights/{ADAPTER_METADATA}) is missing")
    return base


def merge_lora(lora_dir: Path | str, out_dir: Path | str, overwrite: bool = False) -> Path:
    out_dir = Path(out_dir).resolve()
    refuse_existing_output(out_dir, overwrite)
    lora_ckpt = find_checkpoint_dir(Path(lora_dir).resolve())
    base = base_checkpoint_of(lora_ckpt)
    started = time.perf_counter()
    log(f"LoRA {lora_ckpt}, base {base}")

    from nemo.collections import llm

    from conversion._cpu import cpu_conversion

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-") as staging:
        staged = Path(staging) / "checkpoint"
        try:
            with cpu_conversion():
                llm.peft.merge_lora(lora_checkpoint_path=str(lora_ckpt), output_path=str(staged))
        except Exception as error:
            raise ConversionError(f"NeMo merge_lora failed: {type(error).__name__}: {error}") from error
        if not (staged / "weights").is_dir() or not (staged / "context" / "io.json").is_file():
            raise ConversionError(f"merge_lora wrote an incomplete checkpoint in {staged}")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
    log(f"wrote {out_dir} in {time.perf_counter() - started:.0f}s")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Merge a NeMo 2 LoRA checkpoint into its base model.")
    parser.add_argument("--lora", required=True, type=Path, help="LoRA checkpoint dir (weights/ + context/)")
    parser.add_argument("--out", required=True, type=Path, help="merged NeMo 2 checkpoint dir")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        print(merge_lora(args.lora, args.out, args.overwrite))
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
