"""How a conversion ends badly: refused before writing anything (exit 2), or failed inside NeMo (exit 1)."""

from common.errors import RunFailed, UserError


class ConversionError(UserError):
    """A refusal with a message meant for the user; nothing was written."""


class ConversionFailed(RunFailed):
    """NeMo's conversion started and failed; nothing was published (outputs are staged, then moved)."""
