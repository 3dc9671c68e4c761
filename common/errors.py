"""The two ways a command ends badly, shared by every command-line entry (see common.cli)."""


class UserError(Exception):
    """What was asked cannot be done as asked (bad input, a refusal); nothing has started. Exit 2."""


class RunFailed(Exception):
    """Work started and then failed; its own log already says why. Exit 1."""
