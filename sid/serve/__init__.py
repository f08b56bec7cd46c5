"""``sid serve``: one resident process for a store — models stay loaded, jobs queue per device, and a local
HTTP API and web page drive the same library calls the CLI makes.

The server announces itself in the store (``SERVER_FILE``: address, token, pid; readable by the user
only), which is how ``sid render``/``sid learn`` find it (``sid.serve.client``).
"""

from __future__ import annotations

import json
import os
import socket
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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(running.__dict__, f)
    os.replace(tmp, path)
    return path


def read_server_file(store_root: Path) -> Running | None:
    """The server the store names, or None when there is no file, it is unreadable, or its process is gone
    (a file left by a server that was killed is ignored)."""
    try:
        data = json.loads((store_root / SERVER_FILE).read_text(encoding="utf-8"))
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
