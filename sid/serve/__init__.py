"""``sid serve``: one resident process for a store — models stay loaded, jobs queue per device, and a local
HTTP API and web page drive the same library calls the CLI makes.

The server announces itself in the store (``SERVER_FILE``: address, token, pid; readable by the user
only), which is how ``sid render``/``sid learn`` find it (``sid.serve.client``).
"""

from __future__ import annotations

import json
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from sid.config import home

SERVER_FILE = ".server.json"  # in the store folder, beside the identities
DEFAULT_PORT = 8765


def serve_dir() -> Path:
    """The server's own files: each job's uploads and outputs."""
    return home() / "serve"


@dataclass
class Running:
    """A server as its file in the store describes it."""

    url: str
    token: str
    pid: int
    host: str  # the machine it runs on


def write_server_file(store_root: Path, running: Running) -> Path:
    """The store's server file, mode 0600 from the first byte (the token is a secret), replaced whole."""
    store_root.mkdir(parents=True, exist_ok=True)
    path = store_root / SERVER_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover (or a planted link): removed, never written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(running.__dict__, f)
    os.replace(tmp, path)
    return path


def read_server_file(store_root: Path) -> Running | None:
    """The server the store names, or None when there is no file, it is unreadable, or its process is gone
    (a file left by a server that was killed is ignored). Only a plain file of this user's that nobody
    else may read or write counts: in a shared store another user could otherwise point this user's
    commands, photos and all, at a server of theirs."""
    try:
        fd = os.open(store_root / SERVER_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        try:
            data = json.loads(f.read())
            running = Running(str(data["url"]), str(data["token"]), int(data["pid"]), str(data["host"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    if running.host == socket.gethostname() and not _alive(running.pid):
        return None
    return running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
