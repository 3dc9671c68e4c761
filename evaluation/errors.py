"""The two ways an evaluation command ends badly, as the project's exit policy (common.cli) tells them apart."""

from __future__ import annotations

from common.errors import RunFailed, UserError


class Refusal(UserError):
    """Bad input, found before any model loads: exit 2 with one `error:` line."""


class EvaluationFailure(RunFailed):
    """Something broke after work had started (export, model load, lm-eval): exit 1."""
