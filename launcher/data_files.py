"""The data a local launch will read must exist before anything expensive starts (NeMo import, workers,
process groups): one message per missing file, naming the key, the path and the command that makes it."""

import shlex
from pathlib import Path

import fiddle as fdl

from common.errors import UserError
from recipes.blocks import is_unset

PREPARE = {
    "pretraining": "python -m data.prepare_pretraining",
    "sft": "python -m data.sft convert --output-dir DIR",
    "preference": "python -m data.preference (or raw pair .jsonl files)",
}


def prefixes(paths) -> list[str]:
    """data.paths is [prefix, ...] or a blend [weight, prefix, weight, prefix, ...]."""
    return [str(p) for p in paths if not isinstance(p, (int, float))]


def require(data) -> None:
    """Raises a UserError naming every missing data file of `data`, or else every one that does not fit
    the recipe (record form, tokenizer), if any."""
    problems = missing(data)
    if problems:
        raise UserError("the data this run reads is missing:\n  " + "\n  ".join(problems))
    problems = misfits(data)
    if problems:
        raise UserError("the data this run reads does not fit the recipe:\n  " + "\n  ".join(problems))


def is_preference_data(data) -> bool:
    from data.preference.datamodule import PreferenceDataModule

    return issubclass(fdl.get_callable(data), PreferenceDataModule)


def _unset(key: str, kind: str) -> str:
    return f"{key} is not set: set {key}=... on the command line ({PREPARE[kind]} makes the data)"


def _missing_packed(specs) -> list[str]:
    # NeMo would pack missing files itself, with its own "{input} {output}" prompt instead of the template.
    if specs is None:
        return []
    paths = {key: getattr(specs, key, None) for key in ("packed_train_data_path", "packed_metadata_path")}
    return [f"data.packed_sequence_specs.{key}: {path} does not exist (python -m data.packing with the recipe's "
            "--template makes it)" for key, path in paths.items() if path and not Path(path).is_file()]


def missing(data) -> list[str]:
    if is_preference_data(data):
        return [_unset("data.paths", "preference") if is_unset(path) else
                f"data.paths.{i}: {path} does not exist ({PREPARE['preference']})"
                for i, path in enumerate(data.paths) if not Path(path).is_file()]
    if hasattr(data, "dataset_root"):
        if is_unset(data.dataset_root):
            return [_unset("data.dataset_root", "sft")]
        training = Path(data.dataset_root) / "training.jsonl"
        absent = [] if training.is_file() else [f"data.dataset_root: {training} does not exist ({PREPARE['sft']})"]
        return absent + _missing_packed(getattr(data, "packed_sequence_specs", None))
    if hasattr(data, "paths"):
        return [_unset("data.paths", "pretraining") if is_unset(prefix) else
                f"data.paths: no prepared corpus at {prefix}.bin/.idx ({PREPARE['pretraining']})"
                for prefix in prefixes(data.paths)
                if not (Path(f"{prefix}.bin").is_file() and Path(f"{prefix}.idx").is_file())]
    return []


def misfits(data) -> list[str]:
    """Present data that the run could not train on: SFT records of the wrong form, corpora made with
    another tokenizer. Each would otherwise fail mid-run (KeyError in NeMo's dataset, IndexError in the
    embedding)."""
    if is_preference_data(data):
        return []
    if hasattr(data, "record_form"):
        return _sft_misfits(data)
    if hasattr(data, "paths"):
        return _corpus_misfits(data)
    return []


def _sft_misfits(data) -> list[str]:
    from data.core.errors import DataError
    from data.sft_records import detect_form

    problems = _template_misfit(data)
    try:
        detect_form(data.dataset_root, data.record_form)
    except DataError as error:
        problems.append(f"data.dataset_root: {error}")
    return problems


def _template_misfit(data) -> list[str]:
    """data.template must exist and, where the tokenizer is a local folder, fit it (its special tokens, or
    the {% generation %} markers of an `hf` template)."""
    from data.chat_templates import TemplateError, load_template, prepare_template
    from data.core.tokenizer import load_hf_tokenizer

    try:
        load_template(data.template)
        folder = tokenizer_folder(data)
        if folder is not None:
            prepare_template(data.template, load_hf_tokenizer(folder))
    except TemplateError as error:
        return [f"data.template={data.template}: {error}"]
    return []


def tokenizer_source(data) -> str | None:
    """Where the data module's tokenizer comes from (a `nemo://` checkpoint, a folder or `hf://...`), when it
    is the recipes' own tokenizer factory (runtime.checkpoints.tokenizer); None for any other tokenizer."""
    from runtime import checkpoints

    tokenizer = getattr(data, "tokenizer", None)
    is_ours = isinstance(tokenizer, fdl.Buildable) and fdl.get_callable(tokenizer) is checkpoints.tokenizer
    return tokenizer.source if is_ours else None


def tokenizer_folder(data) -> str | None:
    """The local tokenizer folder the data module will load, or None where there is none here: a hub
    tokenizer (`hf://`), or weights not imported yet (the starting-weights check names that)."""
    from runtime import checkpoints

    source = tokenizer_source(data)
    if source is None or str(source).startswith(checkpoints.HUB_SCHEME):
        return None
    try:
        return checkpoints.tokenizer_folder(str(source))
    except UserError:
        return None


def _corpus_misfits(data) -> list[str]:
    from data.core.tokenizer import tokenizer_identity
    from data.corpus_tokenizer import check_corpus_fits

    folder = tokenizer_folder(data)
    if folder is None:  # a hub tokenizer: no files here to compare (or count) before launch
        return []
    vocab_size = tokenizer_identity(folder).vocab_size
    return [f"data.paths: {problem}" for prefix in prefixes(data.paths) for problem in check_corpus_fits(prefix, folder, vocab_size)]


def show_command(data) -> str | None:
    """For a dry run: the command that prints a record of an SFT run's data as this run trains on it."""
    if not hasattr(data, "record_form") or is_unset(data.dataset_root):
        return None
    arguments = ["--input", f"{data.dataset_root}/training.jsonl", "--tokenizer", tokenizer_folder(data) or str(data.tokenizer.source),
                 "--template", data.template]
    arguments += ["--system-prompt", data.system_prompt] if data.system_prompt else []
    arguments += ["--last-turn-only"] if data.last_turn_only else []
    return f"data.template={data.template}: a record as trained: python -m data.sft show {shlex.join(arguments)}"
