"""The store's lock: writers across processes take it in turn, and one that has to wait says who holds it
(pid, host, command, since when; from ``.lock.info``, beside the lock in the store folder).

Neither file is ever written through a link: a link at either is refused (``sid.files.no_link``), and
the holder's note is created anew, exclusively and without following links, so anyone who can write a
shared store cannot make another user's sid overwrite a file of theirs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sid.config import lock_timeout
from sid.errors import StoreError, os_error
from sid.files import no_link

LOCK_FILE, LOCK_INFO = ".lock", ".lock.info"


@contextmanager
def store_lock(root: Path, notify: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock of the store folder ``root`` (which exists); ``notify`` announces a wait."""
    from filelock import FileLock, Timeout

    info = no_link(root / LOCK_INFO)
    lock = FileLock(str(no_link(root / LOCK_FILE)))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        timeout = lock_timeout()
        notify(f"waiting up to {timeout:g} s for the store lock, held by {_lock_holder(root)}")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise StoreError(
                f"the store {root} is still locked by {_lock_holder(root)} after {timeout:g} s",
                "wait for that command to finish (or stop it), then run yours again",
            ) from None
    except OSError as e:
        raise os_error(e, f"lock the store {root}") from e
    try:
        try:  # advisory: who holds the lock, for the message above; a full disk must not stop us
            _create_new(info, json.dumps(_holder_info()).encode("utf-8"))
        except OSError:
            pass
        yield
    finally:
        try:
            info.unlink(missing_ok=True)
        except OSError:  # a read-only or failing disk must never keep the lock held
            pass
        lock.release()


def _lock_holder(root: Path) -> str:
    try:
        fd = os.open(root / LOCK_INFO, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with open(fd, encoding="utf-8") as f:
            who = json.loads(f.read())
        return f"pid {who['pid']} on {who['host']} (`{who['command']}`, since {who['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another sid process"


def _create_new(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file at ``path``: what stood there (a link, a planted hard link) is removed,
    never written through, and the file is created exclusively (``O_EXCL``, ``O_NOFOLLOW``)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with open(fd, "wb") as f:
        f.write(data)


def _holder_info() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["sid", *sys.argv[1:]])[:200],
        "since": datetime.now().replace(microsecond=0).isoformat(sep=" "),
    }
