"""How every command-line entry ends and what it prints: bad input or a refusal exits 2, a failure after
work started exits 1, each with one `error:` line on stderr and no stack trace; third-party warnings
only with --verbose."""

import argparse
import sys
from typing import Callable

from common import third_party_noise
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
    """argparse for our commands: mistakes follow the exit policy (one `error:` line and exit 2, not usage +
    message), and third-party warnings stay out of the output unless `--verbose` asks for them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--verbose", action="store_true", help="also show third-party warnings (NeMo, megatron-core)")

    def parse_known_args(self, args=None, namespace=None):
        # parse_args and parse_intermixed_args both come through here
        parsed, extras = super().parse_known_args(args, namespace)
        if not getattr(parsed, "verbose", False):
            third_party_noise.silence()  # before the command imports NeMo
        return parsed, extras

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
