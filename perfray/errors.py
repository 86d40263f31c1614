"""Errors a user can cause, each with the exit code the CLI contract gives it."""

from __future__ import annotations

from pathlib import Path


class PerfrayError(Exception):
    """Base class: the message is one line that says what was wrong and what to do. A character that would break
    the line (a newline or another control character a user's input brought in, e.g. a config value ``"\n"``
    quoted in pydantic's message) is written as its escape."""

    exit_code = 1

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(str(message)))


def one_line(text: str) -> str:
    """``text`` with every non-printable character (newline, tab, other controls) as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class UsageError(PerfrayError):
    """Bad usage or config (exit 2)."""

    exit_code = 2


class UnavailableError(PerfrayError):
    """The run could not proceed: a backend, GPU or cluster is not there (exit 3)."""

    exit_code = 3


def raised_remotely(err: BaseException) -> PerfrayError | None:
    """The perfray error an actor's task raised (``err``: Ray's wrapper, whose ``cause`` it is), as a fresh one-line
    error of its class to raise here; None when the cause is anything else."""
    cause = getattr(err, "cause", None)
    return type(cause)(str(cause)) if isinstance(cause, PerfrayError) else None


def make_dir(path: str | Path, option: str) -> Path:
    """Create the folder a user named with ``option`` (and its parents); a one-line UsageError when it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: a file; expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{option} {path}: cannot create it ({err.strerror})") from None
    return path


EXIT_OK = 0
EXIT_TARGET_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 4  # an exception perfray did not expect (a bug), never 1: that is a failed target
EXIT_INTERRUPTED = 130
