"""The exit policy of every command-line entry: bad input or a refusal exits 2, a failure after work
started exits 1, each with one `error:` line on stderr and no stack trace."""

import argparse
import sys
from typing import Callable

from common.errors import RunFailed, UserError

EXIT_USAGE = 2
EXIT_RUN_FAILED = 1


def run(command: Callable[[], int | None]) -> int:
    """Calls `command` and maps our error classes to exit statuses; anything else is a bug and propagates."""
    try:
        return command() or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_RUN_FAILED


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes follow the exit policy: one `error:` line and exit 2, not usage + message."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
