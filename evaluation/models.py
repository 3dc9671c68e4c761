"""What is evaluated: a Hugging Face folder, or a NeMo 2 checkpoint exported on the fly.

A NeMo 2 checkpoint (an imported model, or a training run's `checkpoints/<name>--step=N-...`) is
exported with conversion.nemo_to_hf into a temporary folder that lives as long as the evaluation.
The checks here read only small files, so a bad path is refused before NeMo or a model loads.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from evaluation.errors import EvaluationFailure, Refusal


@dataclass(frozen=True)
class ModelSource:
    path: Path
    kind: str           # "hf" or "nemo"

    def describe(self) -> str:
        return f"{self.path} ({'Hugging Face folder' if self.kind == 'hf' else 'NeMo 2 checkpoint'})"


def resolve_model(path: Path | str) -> ModelSource:
    from conversion.hf_to_nemo import ConversionError
    from conversion.nemo_to_hf import find_checkpoint_dir, is_checkpoint_dir, refuse_peft_checkpoint

    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise Refusal(f"model {path} does not exist")
    if not path.is_dir():
        raise Refusal(f"model {path} is not a folder (a Hugging Face folder or a NeMo 2 checkpoint)")
    if (path / "config.json").is_file():
        require_hf_weights(path)
        return ModelSource(path, "hf")
    if is_checkpoint_dir(path) or (path / "weights").is_dir() or (path / "context").is_dir():
        try:
            checkpoint = find_checkpoint_dir(path)
            refuse_peft_checkpoint(checkpoint)
        except ConversionError as error:
            raise Refusal(str(error)) from error
        return ModelSource(checkpoint, "nemo")
    try:  # a run folder: find_checkpoint_dir names the checkpoints below it
        find_checkpoint_dir(path)
    except ConversionError as error:
        raise Refusal(f"{path} is neither a Hugging Face folder (no config.json) nor a NeMo 2 checkpoint: {error}") from error
    raise Refusal(f"{path} is not a model folder")


def require_hf_weights(path: Path) -> None:
    from conversion.hf_to_nemo import ConversionError, require_weights

    try:
        json.loads((path / "config.json").read_text())
        require_weights(path)
    except json.JSONDecodeError as error:
        raise Refusal(f"{path}/config.json is not valid JSON: {error}") from error
    except ConversionError as error:
        raise Refusal(str(error)) from error


@contextlib.contextmanager
def hf_folder(source: ModelSource, scratch: Path | None = None) -> Iterator[Path]:
    """The Hugging Face folder to evaluate; a NeMo checkpoint's export is deleted afterwards."""
    if source.kind == "hf":
        yield source.path
        return
    from conversion.hf_to_nemo import ConversionError
    from conversion.nemo_to_hf import export_nemo

    with tempfile.TemporaryDirectory(prefix="eval-export-", dir=scratch) as temporary:
        try:
            exported = export_nemo(source.path, Path(temporary) / "hf")
        except ConversionError as error:
            raise EvaluationFailure(f"export of {source.path} to Hugging Face failed: {error}") from error
        yield exported
