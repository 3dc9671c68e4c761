"""The executor part of the command line: `executor=local|slurm|<cluster file>.yaml` and the
`executor.key=value` settings, applied to the Slurm executor config of runtime/slurm.py."""

import nemo_run as run
import yaml

from common.errors import UserError
from launcher import overrides
from runtime import slurm


EXECUTOR_KINDS = ("local", "slurm")
THEN_SECTION = "then"  # a cluster file's settings of the jobs after training (--then)


def _preset_settings(mapping: dict, prefix: str = "") -> list[str]:
    settings = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            settings += _preset_settings(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            settings.append(f"{prefix}{key}={','.join(map(str, value))}")
        else:
            settings.append(f"{prefix}{key}={value}")
    return settings


def is_cluster_file(text: str) -> bool:
    return text.startswith("executor=") and text.endswith((".yaml", ".yml"))


def read_preset(path: str) -> dict:
    """A cluster file users keep: `executor: slurm` plus any executor keys (see runtime/SLURM.md)."""
    try:
        preset = yaml.safe_load(open(path))
    except OSError as error:
        raise UserError(f"executor={path}: cannot read the cluster file ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise UserError(f"executor={path}: not valid YAML ({error})") from None
    if not isinstance(preset, dict) or preset.get("executor") not in EXECUTOR_KINDS:
        raise UserError(f"executor={path}: the file must be a mapping with `executor: {' | '.join(EXECUTOR_KINDS)}`")
    return preset


def load_preset(path: str) -> tuple[str, list[str]]:
    """The executor kind and the training job's settings of a cluster file."""
    preset = read_preset(path)
    kind = preset.pop("executor")
    preset.pop(THEN_SECTION, None)  # the jobs after training (--then): then_preset_settings
    return kind, _preset_settings(preset)


def then_preset_settings(args: list[str]) -> list[str]:
    """`key=value` settings of the `then:` section of the cluster file named in `args`, if any (launcher/chain.py)."""
    files = [text.partition("=")[2].strip() for text in args if is_cluster_file(text)]
    section = read_preset(files[-1]).get(THEN_SECTION) if files else None
    if section is not None and not isinstance(section, dict):
        raise UserError(f"executor={files[-1]}: `{THEN_SECTION}:` must be a mapping of executor keys")
    return _preset_settings(section or {})


def split_args(args: list[str]) -> tuple[str, list[str], list[str]]:
    """(kind, executor overrides without the 'executor.' prefix, recipe overrides) from the command line."""
    kind, executor_args, rest = "local", [], []
    for text in args:
        if is_cluster_file(text):
            kind, preset = load_preset(text.partition("=")[2].strip())
            executor_args = preset + executor_args  # the command line's own settings still win
        elif text.startswith("executor="):
            kind = text.partition("=")[2].strip()
            if kind not in EXECUTOR_KINDS:
                raise UserError(f"executor={kind!r}: choose one of {', '.join(EXECUTOR_KINDS)}")
        elif text.startswith("executor."):
            executor_args.append(text[len("executor."):])
        else:
            rest.append(text)
    if executor_args and kind != "slurm":
        raise UserError(f"{'executor.' + executor_args[0]}: executor.<key>=value settings need executor=slurm")
    return kind, executor_args, rest


def apply_overrides(config: run.Config, args: list[str]) -> run.Config:
    """`key=value` on the executor config; `tunnel=local|ssh` swaps the tunnel, `env_vars.NAME=v` and
    `additional_parameters.NAME=v` set dict entries; everything else is a recipe-style override."""
    for text in args:
        key, value = overrides.split_override(text)
        if key == "tunnel":
            config.tunnel = slurm.tunnel_config(value)
        elif key in slurm.LIST_KEYS:
            # `a:/a,b:/b` or a YAML list `[a:/a, b:/b]`: mounts hold colons nemo_run's list parser rejects
            items = yaml.safe_load(value) if value.startswith("[") else [v for v in value.split(",") if v]
            setattr(config, key, [str(item) for item in items or []])
        elif key.startswith(("env_vars.", "additional_parameters.")):
            field, _, name = key.partition(".")
            if field == "env_vars" and slurm.is_secret(name):
                raise UserError(
                    f"executor.{key}: {name} looks like a secret; it would be written into the sbatch script. "
                    f"Export it in the submitting shell instead: the job inherits it from there."
                )
            getattr(config, field)[name] = value
        else:
            overrides.apply(config, [text])
    return config
