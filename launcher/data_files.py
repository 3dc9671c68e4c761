"""The data a local launch will read must exist before anything expensive starts (NeMo import, workers,
process groups): one message per missing file, naming the key, the path and the command that makes it."""

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
    """Raises a UserError naming every missing data file of `data`, if any."""
    problems = missing(data)
    if problems:
        raise UserError("the data this run reads is missing:\n  " + "\n  ".join(problems))


def is_preference_data(data) -> bool:
    from data.preference.datamodule import PreferenceDataModule

    return issubclass(fdl.get_callable(data), PreferenceDataModule)


def _unset(key: str, kind: str) -> str:
    return f"{key} is not set: set {key}=... on the command line ({PREPARE[kind]} makes the data)"


def missing(data) -> list[str]:
    if is_preference_data(data):
        return [_unset("data.paths", "preference") if is_unset(path) else
                f"data.paths.{i}: {path} does not exist ({PREPARE['preference']})"
                for i, path in enumerate(data.paths) if not Path(path).is_file()]
    if hasattr(data, "dataset_root"):
        if is_unset(data.dataset_root):
            return [_unset("data.dataset_root", "sft")]
        training = Path(data.dataset_root) / "training.jsonl"
        return [] if training.is_file() else [f"data.dataset_root: {training} does not exist ({PREPARE['sft']})"]
    if hasattr(data, "paths"):
        return [_unset("data.paths", "pretraining") if is_unset(prefix) else
                f"data.paths: no prepared corpus at {prefix}.bin/.idx ({PREPARE['pretraining']})"
                for prefix in prefixes(data.paths)
                if not (Path(f"{prefix}.bin").is_file() and Path(f"{prefix}.idx").is_file())]
    return []
