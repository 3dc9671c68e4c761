"""Test helpers: running launch.py for real, the way a user does, and reading its training log."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from runtime.process_group import DISTRIBUTED_VARIABLES
from warm_launcher import warm_launcher

REPO = Path(__file__).resolve().parents[1]
FIELD = re.compile(r"(global_step|reduced_train_loss|consumed_samples): ([\d.]+)")


def child_environment(**variables: str) -> dict[str, str]:
    """This process's environment plus `variables`, without the rank and port of any process group here:
    a child must never join (or collide with) a group that an in-process test brought up."""
    inherited = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    return dict(inherited, PYTHONUNBUFFERED="1", **variables)


def start_launch(args: list[str], cwd: Path, stdout: Path, stderr: Path, **variables: str):
    """`python launch.py ARGS` started in `cwd` (results/ and nemo_run's state land there) as a session of its own,
    writing to the files `stdout` and `stderr` (they may be one); NeMo already imported where it can be
    (tests/warm_launcher.py). Returns a Popen or its warm equivalent (pid, poll, wait)."""
    env = child_environment(NEMORUN_HOME=str(cwd / ".nemo_run"), **variables)
    stdout.touch(), stderr.touch()  # for a caller that reads them at once
    if "--verbose" not in args:  # its warnings are raised while NeMo imports: only a fresh process shows them
        return warm_launcher(env).start(args, cwd, env, stdout, stderr)
    with open(stdout, "a") as out, open(stderr, "a") as err:
        return subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=cwd, env=env,
                                start_new_session=True, stdout=out, stderr=err)


def launch(*args: str, cwd: Path, timeout: int = 600, **variables: str) -> subprocess.CompletedProcess:
    """`python launch.py ARGS` in `cwd`, to its end, as subprocess.run with its output captured."""
    with tempfile.TemporaryDirectory() as logs:
        stdout, stderr = Path(logs) / "stdout", Path(logs) / "stderr"
        started = start_launch(list(args), cwd, stdout, stderr, **variables)
        try:
            status = started.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(started.pid, signal.SIGKILL)
            started.wait()
            raise
        return subprocess.CompletedProcess([sys.executable, "launch.py", *args], status, stdout.read_text(), stderr.read_text())


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
    with tempfile.TemporaryDirectory() as logs:
        log = Path(logs) / "output"
        started = start_launch(list(args), cwd, log, log, **variables)
        deadline, sent = time.monotonic() + timeout, False
        while started.poll() is None and time.monotonic() < deadline:
            if until(log.read_text()):
                os.killpg(started.pid, sig)
                sent = True
                break
            time.sleep(0.002)
        status = started.wait(max(1, deadline - time.monotonic()))
        output = log.read_text()
    assert sent, f"the run ended (exit {status}) before the moment to send signal {sig}:\n{output[-4000:]}"
    return status, output


def killed_when(command: list[str], ready, log: Path, timeout_s: int = 300) -> None:
    """Runs `command`, its output going to `log`, and SIGKILLs its process group the moment `ready()` holds
    (polled every millisecond)."""
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=REPO, env=child_environment(), start_new_session=True,
                                   stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the run ended (exit {process.poll()}) before the moment to kill it: {log.read_text()[-3000:]}")
        time.sleep(0.001)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int = 2):
    """`folder` on a tmpfs of `megabytes` (yields no limit), or, where mounting is not allowed, a plain folder and
    the file size limit a child process must set on itself (yields it)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        yield None if mounted else megabytes * 2**20
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
