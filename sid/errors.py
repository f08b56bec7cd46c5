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


class LostPeers(SidError):
    """Under a launcher, the other processes stopped (the first one to stop says why)."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, for one-line error reports, cut at a word boundary."""
    lines = str(e).strip().splitlines()
    if not lines:
        return type(e).__name__
    line = lines[0]
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0]  # never mid-word: a cut hub error must stay readable
    return cut.rstrip(" ,;:") + " …"


def os_hint(e: OSError, elsewhere: str) -> str:
    """The fix for a failed read or write, by its errno (space, quota, permissions, read-only...);
    ``elsewhere`` says how to use another folder (SID_HOME for the store, another path for outputs)."""
    import errno

    hints = {
        errno.ENOSPC: "free some disk space and try again",
        errno.EDQUOT: "free some disk space (you are over quota) and try again",
        errno.EROFS: f"the file system is read-only: {elsewhere}",
        errno.EACCES: f"check the folder's permissions, or {elsewhere}",
        errno.EPERM: f"check the folder's permissions, or {elsewhere}",
        errno.ENOTDIR: f"a file stands where a folder should be: move it away, or {elsewhere}",
        errno.EEXIST: f"a file stands where a folder should be: move it away, or {elsewhere}",
        errno.EFBIG: "the file system refused a file this large: free space or raise the limit",
    }
    return hints.get(e.errno or 0, "check the disk and folder")


def os_error(e: OSError, doing: str) -> SidError:
    """A StoreError for a failed read or write in the store, with the fix for the usual causes."""
    reason = e.strerror or first_line(e)
    where = f" ({e.filename})" if e.filename else ""
    return StoreError(f"could not {doing}: {reason}{where}", os_hint(e, "set SID_HOME to a writable folder"))


def as_sid_error(e: Exception) -> SidError:
    """The one-line report for an exception sid did not expect: no failure ever ends in a traceback."""
    text = first_line(e)
    if isinstance(e, OverflowError) or "overflow" in text.lower():
        return BadInput(f"a number is out of range: {text}", "use smaller values (seeds below 2**63)")
    if isinstance(e, OSError):
        return os_error(e, "read or write a file")
    if isinstance(e, MemoryError):
        return OutOfMemory("out of memory", "use smaller sizes or fewer images")
    return SidError(
        f"unexpected {type(e).__name__}: {text}",
        "this is a bug in sid: run again with SID_DEBUG=1 and report the traceback",
    )


class WriteError(SidError, OSError):
    """A file could not be written (full disk, read-only folder, missing permission). Still an OSError,
    so code that handles the operating system's error keeps handling it."""


class Interrupted(SidError):
    """Ctrl-C: what was finished is kept, and the message says what."""

    exit_code = 130
