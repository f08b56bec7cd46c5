"""Writing files: every file sid writes appears whole or not at all, and never replaces anything that is
not a regular file.

Writers go through ``atomic_write`` (bytes) or ``atomic_path`` (a temporary name for tools that write to
a path: ffmpeg, Pillow). Both write a unique hidden name in the target's folder, fsync it and rename it
into place, so a crash, Ctrl-C or a full disk leaves the old file (or none), never half of one; and
the rename refuses a target that became a device, FIFO, socket or folder.

``output_file``/``output_folder``/``check_output_target`` turn a user's ``-o`` into a path sid may
write, before any model loads: devices, FIFOs and sockets are refused, an existing folder (or a path
written with a trailing slash) means "write inside it", an existing file needs ``--force``, and a
symbolic link is refused unless ``--force``, which writes through it (the link's target is replaced,
the link kept). Inside sid's own folders a link is never followed (``no_link``). Standard library only:
the store imports this module.
"""

from __future__ import annotations

import glob
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sid.errors import BadInput, StoreError, WriteError, first_line, os_hint

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def _not_writable(path: Path, mode: int) -> BadInput:
    return BadInput(f"{path} is {kind_of(mode)}, not a file sid can write", "pick a regular file or a folder")


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _refuse_special(path: Path) -> None:
    """A device, FIFO or socket is never an output (a symbolic link is judged by check_output_target)."""
    st = _lstat(path)
    if st is not None and not (
        stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)
    ):
        raise _not_writable(path, st.st_mode)


def check_output_target(path: Path, force: bool) -> Path:
    """``path`` if sid may write it: an existing file needs ``force``, and so does a link (the writers
    write through it); devices, FIFOs, sockets, folders and dangling links are refused."""
    st = _lstat(path)
    if st is None:
        return path
    if stat.S_ISLNK(st.st_mode):
        _refuse_dangling(path)
        target = Path(os.path.realpath(path))
        if not force:
            raise BadInput(
                f"{path} is a symbolic link to {target}", f"pass --force to overwrite {target} through it"
            )
        check_output_target(target, force)
        return path
    if not stat.S_ISREG(st.st_mode):
        raise _not_writable(path, st.st_mode)
    if not force:
        raise BadInput(f"{path} already exists", "pass --force to overwrite it, or pick another -o")
    return path


def is_folder(given: str | Path) -> bool:
    """``-o`` names a folder: an existing one (or a link to one), or a path written with a trailing slash."""
    raw = os.fspath(given)
    return raw.endswith(("/", os.sep)) or Path(raw).expanduser().is_dir()


def output_folder(given: str | Path) -> Path:
    """A folder to write into: it exists, or it will be made at write time because its nearest existing
    ancestor is a folder (so nothing is created before the work succeeds)."""
    folder = Path(given).expanduser()
    _refuse_special(folder)
    _refuse_dangling(folder)
    for existing in (folder, *folder.parents):
        if existing.exists():
            if not existing.is_dir():
                raise BadInput(f"{existing} is not a folder", "pick another -o folder")
            _check_writable(existing)
            return folder
    return folder


def _refuse_dangling(path: Path) -> None:
    """A link to nothing is never an output: writing through it would create a file somewhere unexpected."""
    if path.is_symlink() and not path.exists():
        raise BadInput(
            f"{path} is a symbolic link to {os.path.realpath(path)}, which does not exist",
            "remove the link or pick another -o",
        )


def _check_writable(folder: Path) -> None:
    """Refuse, before any work, a folder sid could not write in (read-only file system, permissions)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write in {folder} (read-only, or no permission)", "pick another -o")


def output_file(given: str | Path | None, name: str, force: bool, suffix: str = "") -> Path:
    """The checked file to write for ``-o given``: ``name`` in a folder (or here when None), else the file
    itself (``suffix`` appended when it has none). A file's folder must exist."""
    if given is None:
        return check_output_target(Path(name), force)
    if is_folder(given):
        return check_output_target(output_folder(given) / name, force)
    path = Path(given).expanduser()
    _refuse_special(path)  # before adding a suffix: `-o /dev/full` must not become /dev/full.mp4
    if suffix and not path.suffix:
        path = path.with_name(f"{path.name}{suffix}")
    if not path.parent.is_dir():
        raise BadInput(f"the folder {path.parent} does not exist", "create it first or pick another -o")
    _check_writable(path.parent)
    return check_output_target(path, force)


def no_link(path: Path) -> Path:
    """``path`` unless it is a symbolic link. In sid's own folders (the store, checkpoints) a link is never
    followed: anyone who can write a shared SID_HOME could otherwise make its user overwrite their files."""
    if path.is_symlink():
        raise StoreError(
            f"{path} is a symbolic link, and sid never follows links in its own folders",
            "remove the link (and find out who put it there)",
        )
    return path


@contextmanager
def atomic_path(path: Path, follow_links: bool = True) -> Iterator[Path]:
    """A unique temporary path beside ``path`` (same suffix, so writers pick the format from it); when the
    block succeeds it is fsynced and renamed onto ``path``, when it fails it is removed.

    A link at ``path`` is written through (its target is replaced, the link kept) when ``follow_links``
    (a user's ``-o``), else refused (``no_link``); anything else there must be a regular file at rename
    time. The folder is made if missing. OSError (full disk, read-only folder) becomes a WriteError."""
    if not follow_links:
        no_link(path)
    elif path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        prefix, suffix = _temp_affixes(path)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
        os.close(fd)
    except OSError as e:
        raise _write_error(path, e) from e
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(path))
        _sync(tmp)
        st = _lstat(path)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise _not_writable(path, st.st_mode)
        os.replace(tmp, path)
        _sync_dir(path.parent)
    except WriteError:  # another file's failure in the same block (several written together): as it is
        raise
    except OSError as e:
        raise _write_error(path, e) from e
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes, follow_links: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    with atomic_path(path, follow_links) as tmp:
        tmp.write_bytes(data)


def leftover_temp_files(path: Path) -> list[Path]:
    """Temporary files that atomic writes of ``path`` left beside it when their process was killed
    (SIGKILL runs no clean-up); whoever owns ``path`` may delete them."""
    prefix, suffix = _temp_affixes(path)
    return sorted(path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"))


def _temp_affixes(path: Path) -> tuple[str, str]:
    """How ``atomic_path`` names its temporary files: hidden, named after ``path``, same suffix."""
    return f".{path.name}.", f".tmp{path.suffix}"


def _write_error(path: Path, e: OSError) -> WriteError:
    reason = e.strerror or first_line(e)
    return WriteError(f"could not write {path}: {reason}", os_hint(e, "write to another folder"))


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, else the usual ones for a new file (mkstemp makes 0600)."""
    st = _lstat(path)
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _sync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _sync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
