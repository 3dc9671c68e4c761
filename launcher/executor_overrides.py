"""`executor.key=value` on the command line, applied to the Slurm executor config (runtime/slurm.py)."""

import nemo_run as run
import yaml

from common.errors import UserError
from launcher import overrides
from runtime import slurm


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
