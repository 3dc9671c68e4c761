"""How a conversion ends badly: refused before writing anything (exit 2), or failed inside NeMo (exit 1)."""

import shutil
from pathlib import Path

from common.errors import RunFailed, UserError


class ConversionError(UserError):
    """A refusal with a message meant for the user; nothing was written."""


class ConversionFailed(RunFailed):
    """NeMo's conversion started and failed; nothing was published (outputs are staged, then moved)."""


def failed(what: str, out_dir: Path, error: BaseException) -> ConversionFailed:
    """`what` (NeMo's import, export, the averaging save) failed while its output was staged beside `out_dir`: one
    line naming the output and the space left on its filesystem, since a full disk often fails torch's writers
    without an errno (`unexpected pos 704 vs 598`), and the error's last line (torch's CheckpointException
    carries every rank's traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[-1] if lines else ""
    if not reason.startswith(type(error).__name__):
        reason = f"{type(error).__name__}: {reason}"
    free = shutil.disk_usage(out_dir.parent).free
    return ConversionFailed(f"{what} failed writing {out_dir} (nothing replaced; {free} bytes free there): {reason}")
