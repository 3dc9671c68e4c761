"""Errors caused by what the user asked for: the launcher prints them as one clear message, no trace."""


class UserError(Exception):
    pass


class RunFailed(Exception):
    """A launched run ended without success; its own log already says why."""
