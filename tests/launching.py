"""Test helpers: running launch.py for real, the way a user does, and reading its training log."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from runtime.process_group import DISTRIBUTED_VARIABLES

REPO = Path(__file__).resolve().parents[1]
FIELD = re.compile(r"(global_step|reduced_train_loss|consumed_samples): ([\d.]+)")


def child_environment(**variables: str) -> dict[str, str]:
    """This process's environment plus `variables`, without the rank and port of any process group here:
    a child must never join (or collide with) a group that an in-process test brought up."""
    inherited = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    return dict(inherited, PYTHONUNBUFFERED="1", **variables)


def launch(*args: str, cwd: Path, timeout: int = 600, **variables: str) -> subprocess.CompletedProcess:
    """`python launch.py ARGS` in `cwd`, so results/ and nemo_run's state land in a temporary folder."""
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        cwd=cwd,
        env=child_environment(NEMORUN_HOME=str(cwd / ".nemo_run"), **variables),
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


def interrupt_after(checkpoints: Path, step: int) -> None:
    """Leaves `checkpoints` as a run killed after saving global step `step` would: later checkpoints gone,
    that one the newest `-last` (the one NeMo's resume picks)."""
    for saved in checkpoints.glob("step=*"):
        if int(saved.name.split("-")[0].removeprefix("step=")) >= step:
            shutil.rmtree(saved)
    kept = next(checkpoints.glob(f"step={step - 1}-*"))
    shutil.copytree(kept, kept.with_name(kept.name + "-last"))


def launch_until(*args: str, cwd: Path, until: Callable[[str], bool], sig: int = signal.SIGKILL, timeout: int = 600,
                 **variables: str) -> tuple[int, str]:
    """`launch`, but `sig` goes to the launch's whole process group (launch.py, torchrun and its workers) the
    moment `until(output so far)` holds; polled every few milliseconds, so `until` may also watch files.
    Returns (exit status, output). A run that ends before `until` holds fails the calling test."""
    process = subprocess.Popen(
        [sys.executable, str(REPO / "launch.py"), *args], cwd=cwd, start_new_session=True, text=True,
        env=child_environment(NEMORUN_HOME=str(cwd / ".nemo_run"), **variables),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    deadline, sent = time.monotonic() + timeout, False
    while process.poll() is None and time.monotonic() < deadline:
        if until("".join(lines)):
            os.killpg(process.pid, sig)
            sent = True
            break
        time.sleep(0.002)
    status = process.wait(timeout=max(1, deadline - time.monotonic()))
    reader.join(timeout=10)
    output = "".join(lines)
    assert sent, f"the run ended (exit {status}) before the moment to send signal {sig}:\n{output[-4000:]}"
    return status, output

