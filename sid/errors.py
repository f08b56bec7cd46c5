"""The errors sid expects: each carries a one-line message and a hint that says how to fix it.

The CLI prints them without a traceback (set SID_DEBUG=1 to see one) and exits non-zero.
"""

from __future__ import annotations


class SidError(Exception):
    """An expected failure with a user-facing message and a fix."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InvalidName(SidError):
    """An identity name that is not allowed."""


class IdentityNotFound(SidError):
    """No identity of that name in the store."""


class IdentityExists(SidError):
    """An identity of that name already exists."""


class StoreError(SidError):
    """The store or a file in it could not be read or written."""


class ModelNotFound(SidError):
    """A model could not be loaded from any of its sources."""


class BadInput(SidError):
    """A file or option given by the user is not usable."""


class NoFaceFound(SidError):
    """The photo holds no detectable face."""


class IncompatibleIdentity(SidError):
    """An identity was learned for a text encoder unlike the model's."""


class OutOfMemory(SidError):
    """The device ran out of memory."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, for one-line error reports."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__


class WriteError(SidError, OSError):
    """A file could not be written (full disk, read-only folder, missing permission). Still an OSError,
    so code that handles the operating system's error keeps handling it."""


class Interrupted(SidError):
    """Ctrl-C: what was finished is kept, and the message says what."""

    exit_code = 130
