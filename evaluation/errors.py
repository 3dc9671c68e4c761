"""The two ways an evaluation command ends badly, told apart by exit status."""

from __future__ import annotations


class Refusal(Exception):
    """Bad input, found before any model loads: exit 2 with one `error:` line."""


class EvaluationFailure(Exception):
    """Something broke after work had started (export, model load, lm-eval): exit 1."""
