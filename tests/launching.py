"""Test helpers: running launch.py for real, the way a user does, and reading its training log."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTED_VARIABLES = {"MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK"}
FIELD = re.compile(r"(global_step|reduced_train_loss|consumed_samples): ([\d.]+)")


def launch(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python launch.py ARGS` in `cwd`, so results/ and nemo_run's state land in a temporary folder."""
    # A process group that an in-process test left behind must not leak its port and ranks into the run.
    inherited = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    env = dict(inherited, NEMORUN_HOME=str(cwd / ".nemo_run"), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def training_steps(output: str) -> list[tuple[int, float, int | None]]:
    """(global step, train loss, consumed samples) per logged step, in order; rank 0's lines only."""
    steps = {}
    for line in output.splitlines():
        fields = dict(FIELD.findall(line))
        if "global_step" in fields and "reduced_train_loss" in fields:
            step, consumed = int(fields["global_step"]), fields.get("consumed_samples")
            steps.setdefault(step, (step, float(fields["reduced_train_loss"]), int(float(consumed)) if consumed else None))
    return [steps[k] for k in sorted(steps)]


def assert_succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
