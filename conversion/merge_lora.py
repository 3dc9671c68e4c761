"""Merge a NeMo 2 LoRA checkpoint into its base model, giving a full NeMo 2 checkpoint.

NeMo's own merge (`llm.peft.merge_lora`'s steps and its LoRAMerge: W += alpha/dim * B @ A), run
with the CPU patches of conversion._cpu, written atomically. Two differences from
`llm.peft.merge_lora`: the model keeps the parameter dtype recorded in the checkpoint's context
(NeMo forces bfloat16, which would round an fp32 model), and the tokenizer is staged in a private
temporary folder instead of the shared /tmp/nemo_tokenizer. Export the result with
`python -m conversion.nemo_to_hf`.

Usage: conversion/README.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from common import cli
from conversion.errors import ConversionError, ConversionFailed
from conversion.hf_to_nemo import publish, refuse_existing_output, report
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


def _merge_keeping_dtype(lora_ckpt: Path, out: Path, tokenizer_scratch: Path):
    """nemo.collections.llm.peft.api.merge_lora, step for step, in the checkpoint's own dtype."""
    from megatron.core import dist_checkpointing
    from nemo import lightning as nl
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer
    from nemo.collections.llm.peft import api
    from nemo.collections.llm.peft.lora import LoRAMerge
    from nemo.lightning.ckpt_utils import ckpt_to_context_subdir
    from nemo.lightning.io.pl import TrainerContext, ckpt_to_weights_subdir

    import torch

    from runtime import no_te

    no_te.enable()  # LoRA.transform compares modules with te.Linear, which raises without TE
    model, lora = api._load_base_model_and_lora(lora_ckpt)
    # NeMo's loader sets bf16; use what the training run recorded instead (fp32 for the CPU recipes).
    dtype = getattr(model.__io__.config, "params_dtype", None) or torch.float32
    if dtype == torch.float32:
        model.config.bf16, model.config.params_dtype = False, torch.float32
        precision = nl.MegatronMixedPrecision(precision="32", params_dtype=torch.float32, pipeline_dtype=torch.float32)
    else:
        precision = nl.MegatronMixedPrecision(precision="bf16-mixed")
    trainer = nl.Trainer(
        devices=1,
        accelerator="cpu",
        strategy=nl.MegatronStrategy(ddp="pytorch", setup_optimizers=False, ckpt_async_save=False),
        plugins=precision,
    )
    api._setup_trainer_and_restore_model_and_adapter(lora_ckpt, trainer, model, lora)
    merged = LoRAMerge()(trainer.strategy.megatron_parallel)
    weights = {k: v for k, v in merged.sharded_state_dict().items() if ".adapter." not in k}
    weights_dir = ckpt_to_weights_subdir(out, is_saving=True)
    Path(weights_dir).mkdir(parents=True, exist_ok=True)
    dist_checkpointing.save(weights, str(weights_dir), content_metadata=trainer.strategy.sharded_state_dict_metadata)
    # api._save_merged_weight, with a private tokenizer folder.
    if hasattr(model.tokenizer, "save_pretrained"):
        model.tokenizer.save_pretrained(str(tokenizer_scratch))
        model.tokenizer = AutoTokenizer(str(tokenizer_scratch))
    if hasattr(trainer.model, "__io__") and hasattr(trainer.model.tokenizer, "__io__"):
        trainer.model.__io__.tokenizer = trainer.model.tokenizer.__io__
    TrainerContext.from_trainer(trainer).io_dump(ckpt_to_context_subdir(out), yaml_attrs=["model"])
    return dtype


def merge_lora(lora_dir: Path | str, out_dir: Path | str, overwrite: bool = False) -> Path:
    out_dir = Path(out_dir).resolve()
    refuse_existing_output(out_dir, overwrite)
    lora_ckpt = find_checkpoint_dir(Path(lora_dir).resolve())
    base = base_checkpoint_of(lora_ckpt)
    started = time.perf_counter()
    log(f"LoRA {lora_ckpt}, base {base}")

    from conversion._cpu import cpu_conversion

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-") as staging:
        staged = Path(staging) / "checkpoint"
        try:
            with cpu_conversion(), tempfile.TemporaryDirectory(prefix="merge_lora-") as scratch:
                dtype = _merge_keeping_dtype(lora_ckpt, staged, Path(scratch) / "nemo_tokenizer")
            log(f"merged in {dtype}")
        except Exception as error:
            raise ConversionFailed(f"NeMo merge_lora failed: {type(error).__name__}: {error}") from error
        if not (staged / "weights").is_dir() or not (staged / "context" / "io.json").is_file():
            raise ConversionFailed(f"merge_lora wrote an incomplete checkpoint in {staged}")
        publish(staged, out_dir)
    log(f"wrote {out_dir} in {time.perf_counter() - started:.0f}s")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description="Merge a NeMo 2 LoRA checkpoint into its base model.")
    parser.add_argument("--lora", required=True, type=Path, help="LoRA checkpoint dir (weights/ + context/)")
    parser.add_argument("--out", required=True, type=Path, help="merged NeMo 2 checkpoint dir")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    return report(lambda: merge_lora(args.lora, args.out, args.overwrite))


if __name__ == "__main__":
    raise SystemExit(main())
