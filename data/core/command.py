"""The exit policy of every data command, on top of common.cli's: a DataError is bad input (exit 2); an
OSError, RuntimeError or MemoryError once work started is a failure (exit 1)."""

from __future__ import annotations

from typing import Callable

from common import cli
from common.errors import RunFailed


def run_command(work: Callable[[], None]) -> int:
    """Run ``work`` and turn what it raises into one ``error:`` line on stderr and an exit status."""

    def work_failing_as_run_failed() -> None:
        try:
            work()
        except (OSError, RuntimeError, MemoryError) as error:
            # The input was fine but the run could not finish (disk full, a worker died, ...); outputs are
            # atomic, so whatever was there before is still there.
            raise RunFailed(f"{type(error).__name__}: {error}") from error

    return cli.run(work_failing_as_run_failed)
