"""Import a Hugging Face causal-LM folder into a NeMo 2 checkpoint, with NeMo's own importers.

The folder is checked before anything is written (config.json, weights, supported architecture,
tensor shapes against the config); the checkpoint is built in a hidden sibling directory and
renamed into place only when complete, so a failed import leaves nothing behind.

Usage: conversion/README.md.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import cli
from conversion.errors import ConversionError, ConversionFailed
from models import catalog
from runtime import checkpoints

# config.json's `architectures` -> the model family, whose NeMo model class's registered "hf" importer and
# exporter do the conversion (Qwen3 dense and MoE share one NeMo model; the importer reads which from the config).
ARCHITECTURE_FAMILIES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "MixtralForCausalLM": "mixtral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3",
}
# Model classes in nemo.collections.llm whose registered "hf" importer/exporter we use.
FAMILY_MODEL_CLASSES = {
    "llama": "LlamaModel",
    "mistral": "MistralModel",
    "mixtral": "MixtralModel",
    "qwen2": "Qwen2Model",
    "qwen3": "Qwen3Model",
}
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_INDEX = "pytorch_model.bin.index.json"


def report(convert) -> int:
    """A conversion command's ending: the output path on stdout, or one `error:` line (common.cli's exit policy)."""
    return cli.run(lambda: print(convert()))


def log(message: str) -> None:
    print(f"[hf_to_nemo] {message}", flush=True)


def supported_architectures() -> str:
    return ", ".join(ARCHITECTURE_FAMILIES)


# ---------------------------------------------------------------- checks on the HF folder


def read_hf_config(hf_dir: Path) -> dict:
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir} is not a directory")
    config_file = hf_dir / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{hf_dir} has no config.json: not a Hugging Face model folder")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{config_file} is not valid JSON: {error}") from error


def safetensors_files(hf_dir: Path) -> list[Path]:
    """The safetensors shards the folder's weights live in ([] if it has none)."""
    index = hf_dir / SAFETENSORS_INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [name for name in shards if not (hf_dir / name).is_file()]
        if missing:
            raise ConversionError(f"{hf_dir}: {SAFETENSORS_INDEX} lists missing shards {missing}")
        return [hf_dir / name for name in shards]
    return sorted(hf_dir.glob("*.safetensors"))


def require_weights(hf_dir: Path) -> list[Path]:
    shards = safetensors_files(hf_dir)
    if shards or (hf_dir / "pytorch_model.bin").is_file() or (hf_dir / TORCH_INDEX).is_file():
        return shards
    raise ConversionError(
        f"{hf_dir} has config.json but no weights (expected model.safetensors, {SAFETENSORS_INDEX} "
        "or pytorch_model.bin)"
    )


def detect_family(config: dict, requested: str = "auto") -> str:
    architectures = config.get("architectures") or []
    if requested != "auto":
        if requested not in FAMILY_MODEL_CLASSES:
            raise ConversionError(f"unknown model family {requested!r}; choose from {sorted(FAMILY_MODEL_CLASSES)}")
        return requested
    for architecture in architectures:
        if architecture in ARCHITECTURE_FAMILIES:
            return ARCHITECTURE_FAMILIES[architecture]
    raise ConversionError(
        f"unsupported architecture {architectures or '(none in config.json)'}; "
        f"supported: {supported_architectures()}"
    )


def refuse_features_nemo_would_drop(config: dict, family: str) -> None:
    """NeMo's Llama/Mistral/Qwen2 config mappings ignore these; importing would silently change the model."""
    problems = []
    if config.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={config['hidden_act']!r} (only silu/SwiGLU is mapped)")
    if family == "llama":
        rope_scaling = config.get("rope_scaling") or {}
        rope_type = rope_scaling.get("rope_type", rope_scaling.get("type"))
        if rope_scaling and rope_type != "llama3":
            problems.append(f"rope_scaling type {rope_type!r} (only 'llama3' is mapped)")
        for bias in ("attention_bias", "mlp_bias"):
            if config.get(bias):
                problems.append(f"{bias}=true (Llama mapping has no biases)")
    if family == "qwen3":
        problems += qwen3_features_nemo_would_drop(config)
    if family in ("mixtral", "qwen3") and config.get("sliding_window") and config.get("use_sliding_window", True):
        problems.append(f"sliding_window={config['sliding_window']} (NeMo's {family} mapping attends to the whole sequence)")
    if problems:
        raise ConversionError("cannot import faithfully: " + "; ".join(problems))


def qwen3_features_nemo_would_drop(config: dict) -> list[str]:
    """NeMo's Qwen3 MoE layer renormalises the top-k router weights and puts experts in every layer."""
    if not config.get("num_experts"):
        return []
    problems = []
    if not config.get("norm_topk_prob", False):
        problems.append("norm_topk_prob=false (NeMo's router renormalises the top-k weights: true)")
    if config.get("decoder_sparse_step", 1) != 1 or config.get("mlp_only_layers"):
        problems.append(f"decoder_sparse_step={config.get('decoder_sparse_step')}, mlp_only_layers="
                        f"{config.get('mlp_only_layers')} (NeMo's mapping has experts in every layer: 1, [])")
    return problems


def refuse_shape_mismatches(hf_dir: Path, shards: list[Path]) -> None:
    """Compare safetensors headers with the shapes config.json implies, on the meta device (no weights read)."""
    if not shards:
        return  # pytorch .bin weights: transformers reports mismatches itself when loading
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(hf_dir)
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in AutoModelForCausalLM.from_config(config).state_dict().items()}
    found = {}
    for shard in shards:
        with safe_open(shard, framework="pt") as tensors:
            found.update({name: tuple(tensors.get_slice(name).get_shape()) for name in tensors.keys()})

    mismatched = [f"{name}: weights {found[name]} vs config {shape}"
                  for name, shape in expected.items() if name in found and found[name] != shape]
    if mismatched:
        raise ConversionError(f"shape mismatch between config.json and weights in {hf_dir}: " + "; ".join(mismatched[:5]))
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(set(expected) - set(found) - tied)
    if missing:
        raise ConversionError(f"weights in {hf_dir} lack {len(missing)} tensors the config needs, e.g. {missing[:3]}")


# HF config.json key -> the architecture field of models.catalog.architecture it must equal.
HF_ARCHITECTURE_KEYS = {
    "num_hidden_layers": "num_layers",
    "hidden_size": "hidden_size",
    "num_attention_heads": "num_attention_heads",
    "num_key_value_heads": "num_query_groups",
    "vocab_size": "vocab_size",
}


def expert_mismatches(config: dict, expected: dict, model_name: str) -> list[str]:
    """A mixture-of-experts row also fixes its expert count (HF: num_local_experts in Mixtral, num_experts in
    Qwen3-MoE) and router top-k (num_experts_per_tok)."""
    if not expected.get("num_moe_experts"):
        return []
    experts = config.get("num_local_experts") or config.get("num_experts")
    found = {"experts": (experts, expected["num_moe_experts"]), "num_experts_per_tok": (config.get("num_experts_per_tok"), expected["moe_router_topk"])}
    return [f"{key} {got} (the catalog's {model_name} has {want})" for key, (got, want) in found.items() if got != want]


def importable_models() -> list[str]:
    return sorted(name for name, spec in catalog.MODELS.items() if spec.checkpoint)


def require_catalog_model(model_name: str) -> catalog.ModelSpec:
    spec = catalog.MODELS.get(model_name)
    if spec is None or not spec.checkpoint:
        raise ConversionError(f"--model {model_name}: not a model of models/catalog.py that starts from imported "
                              f"weights; choose from {', '.join(importable_models())}")
    return spec


def refuse_architecture_mismatch(config: dict, family: str, model_name: str) -> None:
    """The folder must hold the catalog row's model: otherwise its recipes would restore the wrong shapes."""
    expected = catalog.architecture(model_name)
    found = {key: config.get(key) for key in HF_ARCHITECTURE_KEYS}
    found["num_key_value_heads"] = found["num_key_value_heads"] or found["num_attention_heads"]
    problems = [f"{key} {found[key]} (the catalog's {model_name} has {expected[field]})"
                for key, field in HF_ARCHITECTURE_KEYS.items() if found[key] != expected[field]]
    problems += expert_mismatches(config, expected, model_name)
    if FAMILY_MODEL_CLASSES[family] != expected["model"]:
        problems.append(f"family {family} (the catalog's {model_name} is a {expected['model']})")
    if problems:
        raise ConversionError(f"the folder's config.json does not describe {model_name}: " + "; ".join(problems))


def destination(model_name: str | None, out: Path | None) -> Path:
    """--out, or where the catalog model's recipes look for its imported weights."""
    if out is not None:
        return out
    if model_name is None:
        raise ConversionError("give --model NAME to import where that model's recipes look "
                              f"({', '.join(importable_models())}), or --out DIR")
    return checkpoints.resolve(require_catalog_model(model_name).checkpoint)


def how_to_use(model_name: str | None, out_dir: Path) -> str:
    """What to type next: the recipe that restores this checkpoint, and the overrides when it is elsewhere."""
    recipe = f"{model_name}_sft" if model_name else "<model>_sft"
    launch = f"python launch.py recipe={recipe} data.dataset_root=<folder from python -m data.sft convert>"
    if model_name and checkpoints.resolve(catalog.MODELS[model_name].checkpoint).resolve() == out_dir:
        where = checkpoints.spelled_out(catalog.MODELS[model_name].checkpoint)
        return f"the {model_name}_* recipes restore from {where}:\n  {launch}"
    pointing = f"{checkpoints.RESTORE_KEY}={out_dir} {checkpoints.TOKENIZER_KEY}={out_dir}"
    return f"point a recipe at it (weights and tokenizer):\n  {launch} {pointing}"


def refuse_existing_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise ConversionError(f"{out_dir} already exists (pass --overwrite to replace it)")


# ---------------------------------------------------------------- the import itself


def nemo_model_class(family: str):
    from nemo.collections import llm

    return getattr(llm, FAMILY_MODEL_CLASSES[family])


def importer_for(family: str, hf_dir: Path, tokenizer_scratch: Path):
    """NeMo's registered HF importer for the family, pointed at a local folder.

    `ConnectorMixin._get_connector` only recognises "hf://<path>"; a bare path is taken as the
    extension name and fails with "No connector found for extension". The importer also stages
    tokenizer files in a fixed /tmp/nemo_tokenizer, which concurrent imports would overwrite;
    ours get a private directory (same basename, so the checkpoint's context/ looks the same).
    """
    registered = type(nemo_model_class(family).importer(f"hf://{hf_dir}"))
    carried_over = FIELDS_NEMO_IMPORTERS_DROP.get(family, lambda config: {})(read_hf_config(hf_dir))

    class PrivateTokenizerImporter(registered):
        def save_hf_tokenizer_assets(self, tokenizer_name_or_path, save_path=None):
            return super().save_hf_tokenizer_assets(tokenizer_name_or_path, str(tokenizer_scratch))

        @functools.cached_property
        def config(self):
            return with_fields(super().config, carried_over)

    PrivateTokenizerImporter.__name__ = registered.__name__
    return PrivateTokenizerImporter(str(hf_dir))


def qwen3_fields(config: dict) -> dict:
    """NeMo 2.7.3's Qwen3 importer keeps its class defaults for these (head size 128; for MoE 128 experts, top 8,
    as Qwen3-30B-A3B and 235B-A22B have), where the HF config says otherwise; its exporter writes them back."""
    fields = {"kv_channels": config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]}
    if config.get("num_experts"):
        fields.update(num_moe_experts=config["num_experts"], moe_router_topk=config["num_experts_per_tok"],
                      moe_aux_loss_coeff=config.get("router_aux_loss_coef", 1e-3))
    return fields


# family -> the NeMo config fields its importer leaves at class defaults, read from config.json.
FIELDS_NEMO_IMPORTERS_DROP = {"qwen3": qwen3_fields}


def with_fields(config, fields: dict):
    """`config` with `fields` set, in the object and in the record NeMo writes into the checkpoint's context."""
    io_record = getattr(config, "__io__", None)
    for name, value in fields.items():
        setattr(config, name, value)
        if io_record is not None:
            setattr(io_record, name, value)
    return config


def require_complete_checkpoint(ckpt_dir: Path) -> None:
    for part in ("weights", "context", "context/io.json"):
        if not (ckpt_dir / part).exists():
            raise ConversionFailed(f"NeMo import produced no {part} in {ckpt_dir}")


def validate_hf_folder(hf_dir: Path, family: str = "auto", model_name: str | None = None) -> str:
    """All refusals, before anything is written. Returns the model family."""
    config = read_hf_config(hf_dir)
    shards = require_weights(hf_dir)
    family = detect_family(config, family)
    refuse_features_nemo_would_drop(config, family)
    if model_name is not None:
        require_catalog_model(model_name)
        refuse_architecture_mismatch(config, family, model_name)
    refuse_shape_mismatches(hf_dir, shards)
    return family


def import_hf(hf_dir: Path | str, out_dir: Path | str | None = None, family: str = "auto", overwrite: bool = False,
              model_name: str | None = None) -> Path:
    """Imports to `out_dir`, or (None) to where `model_name`'s recipes look; with `model_name`, the folder must
    hold that catalog model's architecture."""
    hf_dir = Path(hf_dir).resolve()
    out_dir = destination(model_name, None if out_dir is None else Path(out_dir)).resolve()
    started = time.perf_counter()
    log(f"checking {hf_dir}" + (f" against the catalog's {model_name}" if model_name else ""))
    refuse_existing_output(out_dir, overwrite)
    family = validate_hf_folder(hf_dir, family, model_name)
    log(f"model family: {family} -> nemo.collections.llm.{FAMILY_MODEL_CLASSES[family]}")

    log("loading NeMo (takes ~25 s)")
    from conversion._cpu import cpu_conversion

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-") as staging, \
            tempfile.TemporaryDirectory(prefix="hf_to_nemo-") as scratch:
        staged = Path(staging) / "checkpoint"
        with cpu_conversion():
            importer = importer_for(family, hf_dir, Path(scratch) / "nemo_tokenizer")
            log(f"converting with NeMo's {type(importer).__name__} (load HF weights, map, save dist checkpoint)")
            try:
                importer(output_path=staged)
            except Exception as error:
                raise ConversionFailed(f"NeMo import of {hf_dir} failed: {type(error).__name__}: {error}") from error
        require_complete_checkpoint(staged)
        publish(staged, out_dir)
    log(f"wrote {out_dir} in {time.perf_counter() - started:.0f}s")
    log(how_to_use(model_name, out_dir))
    return out_dir


def publish(staged: Path, out_dir: Path) -> None:
    """Moves a complete staged output into place; an older output is removed only once the new one is in."""
    previous = out_dir.with_name(f".{out_dir.name}.previous")
    if out_dir.exists():
        out_dir.rename(previous)
    staged.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description="Import a Hugging Face model folder into a NeMo 2 checkpoint.")
    parser.add_argument("--hf", required=True, type=Path, help="Hugging Face model folder (config.json + weights)")
    parser.add_argument("--model", help="catalog model (models/catalog.py) the folder holds: checked, and the "
                        "default --out is where its recipes look ($NEMO_MODELS_CACHE/<hf id>)")
    parser.add_argument("--out", type=Path, help="NeMo 2 checkpoint directory to create (default: from --model)")
    parser.add_argument("--model-family", default="auto", choices=["auto", *FAMILY_MODEL_CLASSES])
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    return report(lambda: import_hf(args.hf, args.out, args.model_family, args.overwrite, args.model))


if __name__ == "__main__":
    raise SystemExit(main())
