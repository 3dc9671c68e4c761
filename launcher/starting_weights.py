"""A recipe's starting weights and tokenizer, checked on this machine before launch; the checks themselves
are runtime/checkpoints.py's, which `runtime.entry.train` runs again first thing in the job."""

import copy
from pathlib import Path

import fiddle as fdl

from launcher.data_files import tokenizer_source
from models.catalog import MODELS
from recipes import registry
from runtime import checkpoints


def restore_path(config) -> str | None:
    restore = getattr(config.resume, "restore_config", None) if config.resume is not None else None
    return None if restore is None else restore.path


def expected_architecture(config) -> dict:
    """Read from the fiddle config, class defaults included; building it would validate fusion flags against
    this machine, which a Slurm job's config is not fitted to."""
    return checkpoints.architecture_of(fdl.get_callable(config.model).__name__, config.model.config)


def import_how(prepared) -> str:
    """The import command for the recipe's model, to where the recipe looks (`--out` when not the default)."""
    model = registry.find(prepared.name).model
    spec = MODELS.get(model)
    path = restore_path(prepared.config)
    if spec is None or not spec.checkpoint:
        return checkpoints.import_command(None, path)
    return checkpoints.import_command(model, None if path in (None, spec.checkpoint) else path, spec.hf_id)


def with_import_named(config, import_how: str):
    """A copy of `config` whose tokenizer, when it comes from the starting weights, carries their import
    command: a job that cannot see the weights builds its tokenizer before runtime.entry.train's check runs,
    and must fail with the same message as that check."""
    source = tokenizer_source(config.data)
    if source is None or source != restore_path(config):
        return config
    config = copy.deepcopy(config)
    fdl.update_callable(config.data.tokenizer, checkpoints.tokenizer_of_starting_weights)
    config.data.tokenizer.import_how = import_how
    return config


def require(prepared, only_where_visible: bool = False) -> None:
    """Refuses a missing, incomplete or mismatched restore checkpoint, then a missing tokenizer. With
    `only_where_visible` (a Slurm submission), a path this machine cannot see is left to the job's check."""
    path = restore_path(prepared.config)
    if path is not None and not (only_where_visible and not checkpoints.resolve(path).exists()):
        checkpoints.require_restorable(path, expected_architecture(prepared.config), import_how(prepared))
    source = tokenizer_source(prepared.config.data)
    if source is not None and not (only_where_visible and not _visible(source)):
        checkpoints.tokenizer_folder(source)


def _visible(source: str) -> bool:
    return source.startswith(checkpoints.HUB_SCHEME) or Path(checkpoints.resolve(source)).exists()


def describe(config) -> str | None:
    """For --dryrun: the resolved restore path and whether it holds a checkpoint."""
    path = restore_path(config)
    return None if path is None else f"# starting weights: {checkpoints.RESTORE_KEY}={path} ({checkpoints.restore_status(path)})"
