"""`python launch.py ...`, and the training processes torchrun starts for it, without paying NeMo's import in
each (about 9 s of a 12 s tiny run here): a server process per pytest worker imports launch.py and NeMo once,
then forks a process for each launch and for each torchrun worker.

A forked launch is what `python launch.py ARGS` would be from its first line on: its own session (a process
group the tests can signal), working directory, environment, stdout and stderr and exit status; it starts
torchrun as usual. torchrun's workers (`python -u -m nemo_run.core.runners.fdl_runner ...`) are started as
usual too, but tests/warm_site/sitecustomize.py, on their path, hands their command, environment, working
directory and standard streams to this server, which forks the worker's body; the started process stays
torchrun's child, passing on its signals and ending with the worker's exit status, and the worker dies with it.

What a forked process cannot be is one whose environment differed while NeMo imported: a launch whose
environment differs from the server's in anything but the variables read after import (PROCESS_VARIABLES;
nemo_run reads NEMORUN_HOME at import, and the child sets it again) gets a new server, started in its
environment; --verbose runs as a fresh process (its warnings are raised during the import). The server does nothing but import before it forks,
so no thread pool of torch exists to be inherited half-made."""

from __future__ import annotations

import atexit
import io
import json
import os
import queue
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SITE = Path(__file__).resolve().parent / "warm_site"
SOCKET_VARIABLE = "WARM_LAUNCHER_SOCKET"
# Read when a run starts, not at import: a launch may differ from the server in these.
PROCESS_VARIABLES = {"OMP_NUM_THREADS", "NEMORUN_HOME", "PYTEST_CURRENT_TEST"}
HEADER = 16  # the length of a request, in ASCII digits, before the request


def send_request(connection: socket.socket, request: dict, fds: list[int]) -> None:
    body = json.dumps(request).encode()
    socket.send_fds(connection, [f"{len(body):0{HEADER}d}".encode()], fds)
    connection.sendall(body)


def receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the request ended early")
        data += chunk
    return data


def receive_request(connection: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(connection, HEADER, 3)
    header += receive_exactly(connection, HEADER - len(header))
    return json.loads(receive_exactly(connection, int(header))), fds


# ---- the server (this file run as a script) -------------------------------------------------------------


def serve(socket_path: str) -> None:
    sys.path.insert(0, str(REPO))
    sys.argv = [str(REPO / "launch.py")]
    from common import third_party_noise

    third_party_noise.silence()  # as launch.py's argument parsing does before NeMo is imported
    before_import = dict(os.environ)
    import nemo.collections.llm  # noqa: F401  everything a launch imports, once
    import nemo_run.core.runners.fdl_runner  # noqa: F401  and a torchrun worker

    import launch
    from launcher import chain, inspection, plans, session  # noqa: F401

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(16)
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ, "request")
    events.register(sys.stdin, selectors.EVENT_READ, "client gone")  # the pytest worker closes it, or dies
    # What importing sets in the environment (e.g. KMP_INIT_AT_FORK): a forked process has it as a fresh one would.
    set_by_import = {k: v for k, v in os.environ.items() if before_import.get(k) != v}
    print(json.dumps(set_by_import), flush=True)
    while True:
        for key, _ in events.select():
            if key.data == "client gone":
                return
            if key.data == "request":
                connection, _ = listener.accept()
                request, fds = receive_request(connection)
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    run_child(request, fds, launch.main, set_by_import)
                for fd in fds:
                    os.close(fd)
                connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                events.register(os.pidfd_open(pid), selectors.EVENT_READ, (pid, connection))
            else:  # a child ended: its exit status to whoever asked for it
                pid, connection = key.data
                events.unregister(key.fileobj)
                os.close(key.fileobj)
                _, status = os.waitpid(pid, 0)
                connection.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                connection.close()


def run_child(request: dict, fds: list[int], launch_main, set_by_import: dict[str, str]) -> None:
    """In the forked child: become the requested process (a launch, or a torchrun worker) and exit as it would."""
    code = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for name, value in set_by_import.items():
            os.environ.setdefault(name, value)
        import nemo_run.config

        nemo_run.config.set_nemorun_home(os.environ.get("NEMORUN_HOME", os.path.expanduser("~/.nemo_run")))
        streams = fds if len(fds) == 3 else [os.open(os.devnull, os.O_RDONLY), *fds]
        for fd, target in enumerate(streams):
            os.dup2(target, fd)
            os.close(target)
        sys.stdin = open(0, closefd=False)
        sys.stdout = io.TextIOWrapper(open(1, "wb", buffering=0, closefd=False), write_through=True)  # as python -u
        sys.stderr = io.TextIOWrapper(open(2, "wb", buffering=0, closefd=False), write_through=True)
        sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
        if request["kind"] == "launch":
            sys.argv = [str(REPO / "launch.py"), *request["argv"]]
            code = launch_main(request["argv"])
        else:
            die_with(request["starter_pid"])
            import runpy

            sys.argv = [request["module"], *request["argv"]]
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
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


def die_with(pid: int) -> None:
    """A worker forked here is not its starter's child: when the starter is killed (torchrun's group killed by a
    test, or SIGKILLed), the worker must go too, as it would have."""
    watched = os.pidfd_open(pid)

    def watch():
        select.select([watched], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


# ---- the client ---------------------------------------------------------------------------------------


class WarmLauncher:
    def __init__(self, environment: dict[str, str]):
        self.folder = tempfile.TemporaryDirectory(prefix="warm-launcher-")
        self.socket_path = str(Path(self.folder.name) / "socket")
        self.additions = {SOCKET_VARIABLE: self.socket_path,
                          "PYTHONPATH": os.pathsep.join(filter(None, [str(SITE), environment.get("PYTHONPATH")]))}
        self.environment = dict(environment, **self.additions)
        self.server = subprocess.Popen([sys.executable, __file__, self.socket_path], cwd=REPO, env=self.environment,
                                       text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready = self.server.stdout.readline()
        assert ready, "the warm launcher did not start"
        # A process that imported NeMo (this one, for in-process tests) has these too: they are no difference.
        self.set_by_import = set(json.loads(ready))

    def differs_from(self, env: dict[str, str]) -> set[str]:
        """The variables of `env` that the server's processes could not take on after NeMo imported."""
        env = dict(env, **self.additions)
        differs = {k for k in env.keys() | self.environment.keys() if env.get(k) != self.environment.get(k)}
        return differs - PROCESS_VARIABLES - self.set_by_import

    def start(self, argv: list[str], cwd: Path, env: dict[str, str], stdout: Path, stderr: Path) -> "WarmRun":
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(self.socket_path)
        request = dict(kind="launch", argv=list(argv), cwd=str(cwd), env=dict(env, **self.additions))
        with open(stdout, "a") as out, open(stderr, "a") as err:
            send_request(connection, request, [out.fileno(), err.fileno()])
        return WarmRun(connection)

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)
        self.folder.cleanup()


class WarmRun:
    """A started launch: `pid` leads its process group; `wait()` gives its exit status as subprocess would."""

    def __init__(self, connection: socket.socket):
        self.replies: queue.Queue[dict] = queue.Queue()
        lines = connection.makefile()
        threading.Thread(target=lambda: [self.replies.put(json.loads(line)) for line in lines], daemon=True).start()
        self.pid, self.returncode = self.replies.get(timeout=60)["pid"], None

    def poll(self) -> int | None:
        if self.returncode is None and not self.replies.empty():
            self.returncode = self.replies.get()["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """As Popen.wait: the exit status, negative for a signal; raises subprocess.TimeoutExpired."""
        if self.returncode is None:
            try:
                self.returncode = self.replies.get(timeout=timeout)["returncode"]
            except queue.Empty:
                raise subprocess.TimeoutExpired(f"launch.py (pid {self.pid})", timeout) from None
        return self.returncode


_launcher: WarmLauncher | None = None


def warm_launcher(env: dict[str, str]) -> WarmLauncher:
    """This process's server for a launch in `env`: started on first use (a test run that launches nothing never
    pays for it), and again when a launch's environment differs from the server's while NeMo imports (e.g. the
    Slurm tests' SLURM_CONF, set for the rest of the run)."""
    global _launcher
    if _launcher is not None and (_launcher.server.poll() is not None or _launcher.differs_from(env)):
        _launcher.close()
        _launcher = None
    if _launcher is None:
        _launcher = WarmLauncher(env)
        atexit.register(_launcher.close)
    return _launcher


if __name__ == "__main__":
    serve(sys.argv[1])
