"""Errors a user can cause, each with the exit code the CLI contract gives it."""


class PerfrayError(Exception):
    """Base class: the message is one line that says what was wrong and what to do."""

    exit_code = 1


class UsageError(PerfrayError):
    """Bad usage or config (exit 2)."""

    exit_code = 2


class UnavailableError(PerfrayError):
    """The run could not proceed: a backend, GPU or cluster is not there (exit 3)."""

    exit_code = 3


EXIT_OK = 0
EXIT_TARGET_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
