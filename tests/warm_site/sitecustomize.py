"""Read by every Python process whose path holds this folder: the processes a warm launch starts
(tests/warm_launcher.py). A torchrun worker of the project's runs (`python -u -m nemo_run.core.runners.fdl_runner
...`) asks the warm server to fork its body, NeMo already imported; this process stays what torchrun started,
passes on the signals torchrun sends it and ends with the worker's exit status. Any other process goes on as usual."""

import os

WORKER = ["-u", "-m", "nemo_run.core.runners.fdl_runner"]


def _run_warm(socket_path: str, module: str, argv: list[str]) -> None:
    import json
    import signal
    import socket
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
    from warm_launcher import send_request

    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(socket_path)
    request = dict(kind="worker", module=module, argv=argv, cwd=os.getcwd(), env=dict(os.environ),
                   starter_pid=os.getpid())
    send_request(connection, request, [0, 1, 2])
    replies = connection.makefile()
    pid = json.loads(replies.readline())["pid"]
    for passed_on in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(passed_on, lambda number, _: os.kill(pid, number))
    code = json.loads(replies.readline())["returncode"]
    if code < 0:  # died of a signal: so does this process, as torchrun expects of its worker
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def _started_as() -> list[str]:
    with open("/proc/self/cmdline", "rb") as cmdline:
        return cmdline.read().decode().split("\0")[:-1]


if os.environ.get("WARM_LAUNCHER_SOCKET") and _started_as()[1:4] == WORKER:
    _run_warm(os.environ["WARM_LAUNCHER_SOCKET"], WORKER[2], _started_as()[4:])
