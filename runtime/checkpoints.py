"""The starting weights and tokenizer of a run, checked where the run can see them.

A fine-tuning recipe restores `resume.restore_config.path`, usually `nemo://<hf id>`, which NeMo resolves
to `$NEMO_MODELS_CACHE/<hf id>` (nemo/lightning/base.py; default `~/.cache/nemo/models`). The launcher
checks it on the submitting machine when it can see the path, and `runtime.entry.train` checks it again
first thing in the job, so a forgotten import fails in seconds, with the import command, instead of
after NeMo, the process groups and the data have started. Lives here (not in launcher/) so that both
the launcher and the training process can import it.
"""

import os
from pathlib import Path

import yaml

from common.errors import UserError

NEMO_SCHEME = "nemo://"
HUB_SCHEME = "hf://"
RESTORE_KEY = "resume.restore_config.path"
TOKENIZER_KEY = "data.tokenizer.source"
TOKENIZER_IN_CHECKPOINT = Path("context") / "nemo_tokenizer"
# Architecture fields of a NeMo 2 model config that must match between a recipe and the checkpoint it restores.
ARCHITECTURE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "ffn_hidden_size", "vocab_size")


def models_cache() -> Path:
    """Where NeMo looks for `nemo://` paths, computed as nemo.lightning.base does (without importing NeMo)."""
    nemo_home = Path(os.getenv("NEMO_HOME", Path.home() / ".cache" / "nemo"))
    return Path(os.getenv("NEMO_MODELS_CACHE", nemo_home / "models"))


def resolve(path) -> Path:
    """A checkpoint path as NeMo will open it: `nemo://X` spelled out under the models cache."""
    path = str(path)
    if path.startswith(NEMO_SCHEME):
        return models_cache() / path.removeprefix(NEMO_SCHEME)
    return Path(path).expanduser().absolute()


def spelled_out(path) -> str:
    """`nemo://X (= /cache/X)` for a nemo:// path, else the absolute path."""
    resolved = resolve(path)
    return f"{path} (= {resolved})" if str(path).startswith(NEMO_SCHEME) else str(resolved)


def import_command(model_name: str | None, out=None, hf_id: str | None = None) -> str:
    """The command that imports a Hugging Face folder (of `hf_id`) for `model_name` (a models/catalog.py row)
    to `out` (default: where that model's recipes look)."""
    parts = [f"python -m conversion.hf_to_nemo --hf <Hugging Face folder{f' of {hf_id}' if hf_id else ''}>"]
    if model_name:
        parts.append(f"--model {model_name}")
    if out is not None:
        parts.append(f"--out {resolve(out)}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------- the checkpoint


def missing_parts(checkpoint: Path) -> list[str]:
    """What a complete NeMo 2 checkpoint has and `checkpoint` lacks ([] when complete)."""
    parts = ("weights/metadata.json", "weights/common.pt", "context/io.json", "context/model.yaml")
    return [part for part in parts if not (checkpoint / part).is_file()]


def saved_architecture(checkpoint: Path) -> dict:
    """The model class name and architecture numbers a NeMo 2 checkpoint's context recorded."""
    saved = yaml.safe_load((checkpoint / "context" / "model.yaml").read_text())
    config = saved.get("config", {})
    return {"model": saved["_target_"].rsplit(".", 1)[-1], **{f: config.get(f) for f in ARCHITECTURE_FIELDS}}


def architecture_of(model_class_name: str, model_config) -> dict:
    """The same fields for a recipe's model: its class name and its (built) NeMo config's numbers."""
    return {"model": model_class_name, **{f: getattr(model_config, f, None) for f in ARCHITECTURE_FIELDS}}


def architecture_mismatches(expected: dict, found: dict) -> list[str]:
    """`field: expected X, found Y` for each field both sides state and disagree on."""
    return [f"{name}: expected {value}, found {found[name]}" for name, value in expected.items()
            if value is not None and found.get(name) is not None and found[name] != value]


def restore_problem(path, expected: dict) -> str | None:
    """Why `path` cannot start a run of the `expected` architecture (None when it can)."""
    checkpoint = resolve(path)
    if not checkpoint.exists():
        return "does not exist"
    missing = missing_parts(checkpoint)
    if missing:
        return f"is not a complete NeMo 2 checkpoint (no {', '.join(missing)})"
    mismatches = architecture_mismatches(expected, saved_architecture(checkpoint))
    if mismatches:
        return "holds another architecture than the recipe's model (" + "; ".join(mismatches) + ")"
    return None


def require_restorable(path, expected: dict, import_how: str, key: str = RESTORE_KEY) -> None:
    """One error naming the key, the resolved path, what is wrong and the import command."""
    problem = restore_problem(path, expected)
    if problem:
        raise UserError(f"{key}: {spelled_out(path)} {problem}: import the model there with `{import_how}`, "
                        f"or point {key}=... at a NeMo 2 checkpoint of it")


def restore_status(path) -> str:
    """For --dryrun and --explain: the resolved path and whether it holds a complete checkpoint."""
    checkpoint = resolve(path)
    if not checkpoint.exists():
        state = "missing"
    elif missing_parts(checkpoint):
        state = "incomplete: no " + ", ".join(missing_parts(checkpoint))
    else:
        state = "exists"
    return f"{checkpoint}: {state}"


def restore_of(recipe) -> tuple[object, dict] | None:
    """(restore path, expected architecture) of a built `llm.finetune` partial, None if it starts from scratch."""
    keywords = getattr(recipe, "keywords", {})
    restore = getattr(keywords.get("resume"), "restore_config", None)
    model = keywords.get("model")
    if restore is None or model is None:
        return None
    return restore.path, architecture_of(type(model).__name__, model.config)


def require_restorable_recipe(recipe, import_how: str) -> None:
    """The check `runtime.entry.train` runs before anything else in the job."""
    restore = restore_of(recipe)
    if restore is not None:
        require_restorable(*restore, import_how)


# ---------------------------------------------------------------------------------- the tokenizer


def tokenizer_folder(source: str, key: str = TOKENIZER_KEY) -> str:
    """The local folder (or `hf://` hub id) of `source`: a NeMo 2 checkpoint (its context/nemo_tokenizer,
    staged there by the import), a folder of tokenizer files, or `hf://<id>` to ask the hub."""
    if source.startswith(HUB_SCHEME):
        return source.removeprefix(HUB_SCHEME)
    folder = resolve(source)
    for candidate in (folder / TOKENIZER_IN_CHECKPOINT, folder):
        if (candidate / "tokenizer_config.json").is_file():
            return str(candidate)
    raise UserError(
        f"{key}: {spelled_out(source)} holds no tokenizer (neither {TOKENIZER_IN_CHECKPOINT}/ of an imported "
        f"checkpoint nor tokenizer_config.json): import the model (`{import_command('NAME')}`), "
        f"or set {key}=<a local tokenizer folder>, or {key}=hf://<hub id> to download it"
    )


def tokenizer(source: str, **auto_tokenizer_arguments):
    """NeMo's AutoTokenizer from `source` (see tokenizer_folder), built in the launched process; other
    arguments (`data.tokenizer.chat_template=...`, ...) go to AutoTokenizer as they are."""
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer

    return AutoTokenizer(pretrained_model_name=tokenizer_folder(source), **auto_tokenizer_arguments)


def tokenizer_of_starting_weights(source: str, import_how: str, **auto_tokenizer_arguments):
    """`tokenizer` where `source` is the run's starting weights, as the launcher hands it to a job: fiddle
    builds it before runtime.entry.train checks the weights, so a missing import must fail here, with that
    check's own message."""
    require_restorable(source, {}, import_how)
    return tokenizer(source, **auto_tokenizer_arguments)
