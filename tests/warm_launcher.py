"""`python launch.py ...` without paying NeMo's import on every launch (about 9 s of a 12 s tiny run here):
a server process per pytest worker imports launch.py and NeMo once, then forks a child for each launch.
The child is what `python launch.py ARGS` would be from its first line on: its own session (a process group
the tests can signal), working directory, environment, stdout and stderr files and exit status; torchrun
and its workers are started by it as usual.

What a forked child cannot be is a process whose environment differed while NeMo imported: a launch whose
environment differs from the server's in anything but the variables read after import (PROCESS_VARIABLES,
and NEMORUN_HOME, which nemo_run reads at import and the child sets again) runs as a fresh process
instead, as does --verbose (its warnings are raised during the import). The server does nothing but
import before it forks, so no thread pool of torch exists to be inherited half-made."""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Read when a run starts, not at import: a child may differ from the server in these.
PROCESS_VARIABLES = {"OMP_NUM_THREADS", "NEMORUN_HOME", "PYTEST_CURRENT_TEST"}


# ---- the server (this file run as a script) -------------------------------------------------------------


def serve() -> None:
    sys.path.insert(0, str(REPO))
    sys.argv = [str(REPO / "launch.py")]
    from common import third_party_noise

    third_party_noise.silence()  # as launch.py's argument parsing does before NeMo is imported
    import nemo.collections.llm  # noqa: F401  everything a launch imports, once
    import nemo_run.config

    import launch
    from launcher import chain, inspection, plans, session  # noqa: F401

    requests, replies = sys.stdin, sys.stdout
    sys.stdout = sys.stderr  # nothing but replies on the reply pipe
    print(json.dumps({"ready": True}), file=replies, flush=True)
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request, launch.main, nemo_run.config.set_nemorun_home)
        print(json.dumps({"pid": pid}), file=replies, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), file=replies, flush=True)


def run_child(request: dict, main, set_nemorun_home) -> None:
    """In the forked child: become `python launch.py ARGS` in the request's folder, environment and files."""
    code = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        set_nemorun_home(os.environ["NEMORUN_HOME"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(target, fd)
            os.close(target)
        sys.stdin.close()
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
        sys.argv = [str(REPO / "launch.py"), *request["argv"]]
        code = main(request["argv"])
    except SystemExit as ended:
        code = ended.code if isinstance(ended.code, int) else (0 if ended.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            threading._shutdown()  # as the interpreter's own exit: wait for the run's non-daemon threads
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# ---- the client ---------------------------------------------------------------------------------------


class WarmLauncher:
    def __init__(self, environment: dict[str, str]):
        self.environment = environment
        self.server = subprocess.Popen([sys.executable, __file__], cwd=REPO, env=self.environment, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.replies: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read_replies, daemon=True).start()
        assert self.replies.get(timeout=300).get("ready"), "the warm launcher did not start"

    def _read_replies(self) -> None:
        for line in self.server.stdout:
            self.replies.put(json.loads(line))
        self.replies.put({"returncode": None, "pid": None, "ready": False})  # the server died: unblock a waiter

    def serves(self, argv: list[str], env: dict[str, str]) -> bool:
        differs = {k for k in env.keys() | self.environment.keys() if env.get(k) != self.environment.get(k)}
        return self.server.poll() is None and differs <= PROCESS_VARIABLES and "--verbose" not in argv

    def start(self, argv: list[str], cwd: Path, env: dict[str, str], stdout: Path, stderr: Path) -> "WarmRun":
        """A pytest worker runs one test, so one launch, at a time: the server serves them in turn."""
        request = dict(argv=list(argv), cwd=str(cwd), env=env, stdout=str(stdout), stderr=str(stderr))
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        pid = self.replies.get(timeout=60)["pid"]
        assert pid, "the warm launcher died"
        return WarmRun(self, pid)

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)


class WarmRun:
    """A started launch: `pid` leads its process group; `wait()` gives its exit status as subprocess would."""

    def __init__(self, launcher: WarmLauncher, pid: int):
        self.launcher, self.pid, self.returncode = launcher, pid, None

    def poll(self) -> int | None:
        if self.returncode is None and not self.launcher.replies.empty():
            self.returncode = self.launcher.replies.get()["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """As Popen.wait: the exit status, negative for a signal; raises subprocess.TimeoutExpired."""
        if self.returncode is None:
            try:
                self.returncode = self.launcher.replies.get(timeout=timeout)["returncode"]
            except queue.Empty:
                raise subprocess.TimeoutExpired(f"launch.py (pid {self.pid})", timeout) from None
        return self.returncode


_launcher: WarmLauncher | None = None


def warm_launcher(environment: dict[str, str]) -> WarmLauncher:
    """This process's server, started on first use with `environment` (a test run that launches nothing never
    pays for it)."""
    global _launcher
    if _launcher is None or _launcher.server.poll() is not None:
        _launcher = WarmLauncher(environment)
        atexit.register(_launcher.close)
    return _launcher


if __name__ == "__main__":
    serve()
