"""Atomic output: files are written under temporary names beside their final paths and renamed into
place only once complete, so a failed or interrupted run leaves what was there before."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator



def temporary_path(path: Path | str) -> Path:
    # Same folder as the final file, so os.replace is a rename on one filesystem, never a copy.
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_outputs(*final_paths: Path | str) -> Iterator[list[Path]]:
    """Temporary paths for ``final_paths``, moved into place, in the order given, only if the block succeeds.

    Order the finals so that a reader can never pair a new file with an old one it depends on (e.g. a
    Megatron .idx last, after its .bin).
    """
    temporary = [temporary_path(p) for p in final_paths]
    for path in final_paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temporary
        for temporary_file, final_path in zip(temporary, final_paths):
            os.replace(temporary_file, final_path)
    except OSError as error:
        if error.filename is not None:
            raise
        # A full disk or a file size limit fails a write without naming the file (numpy: "N requested and M
        # written", no errno): name the outputs, and the space left where they go.
        names = ", ".join(str(p) for p in final_paths)
        free = shutil.disk_usage(Path(final_paths[0]).parent).free
        message = f"{error.strerror or error} while writing {names} (nothing replaced; {free} bytes free there)"
        raise (OSError(error.errno, message) if error.errno else OSError(message)) from error
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)


def atomic_write(path: Path | str, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write one file via ``write(stream)``, atomically."""
    with atomic_outputs(path) as (temporary,):
        with open(temporary, "wb" if binary else "w", encoding=None if binary else "utf-8") as stream:
            write(stream)
