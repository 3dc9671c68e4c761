"""The exit policy of every data command: 0 done, 2 bad input or refusal, 1 failure after work started."""

from __future__ import annotations

import sys
from typing import Callable

from data.core.errors import DataError

BAD_INPUT = 2  # the same status argparse gives a bad option, and the launcher gives a bad config
FAILED = 1


def run_command(work: Callable[[], None]) -> int:
    """Run ``work`` and turn what it raises into one ``error:`` line on stderr and an exit status."""
    try:
        work()
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    except (OSError, RuntimeError, MemoryError) as error:
        # The input was fine but the run could not finish (disk full, a worker died, ...); outputs are
        # atomic, so whatever was there before is still there.
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return FAILED
    return 0
