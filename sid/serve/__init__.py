"""``sid serve``: one resident process for a store — models stay loaded, jobs queue per device, and a local
HTTP API and web page drive the same library calls the CLI makes.

The server announces itself in the store (``SERVER_FILE``: address, token, pid; readable by the user
only), which is how ``sid render``/``sid learn`` find it (``sid.serve.client``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

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


def run(host: str, port: int, devices: list[str], announce: Any) -> None:
    """Serve until interrupted; ``announce(url, login_url, devices)`` tells the user where, once bound."""
    import uvicorn

    from sid.errors import BadInput
    from sid.pipelines import pick_device
    from sid.serve.app import Server, create_app
    from sid.serve.client import connect
    from sid.serve.jobs import Jobs
    from sid.serve.resident import ResidentModels
    from sid.serve.security import Keys, own_hosts
    from sid.store import IdentityStore

    store = IdentityStore()
    other = connect(store.root)
    if other is not None:
        raise BadInput(
            f"a server already serves the store {store.root} at {other.running.url}",
            "use that one, or stop it first (a store has one server)",
        )
    chosen = list(dict.fromkeys(pick_device(d) for d in devices or ["auto"]))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # every response's body waits ~40 ms for the client's delayed ACK of its headers
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}"

    keys = Keys()
    jobs = Jobs(
        chosen,
        partial(ResidentModels, store_root=store.root),
        serve_dir() / "jobs" / time.strftime("%Y%m%d-%H%M%S"),
    )
    app = create_app(Server(store, jobs, keys, serve_dir() / "uploads"), own_hosts(host, port))
    server_file = write_server_file(store.root, Running(url, keys.token, os.getpid(), socket.gethostname()))
    announce(url, f"{url}/login?token={keys.login}", chosen)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)).run(
            sockets=[sock]
        )
    finally:
        mine = read_server_file(store.root)
        if mine is not None and mine.pid == os.getpid():
            server_file.unlink(missing_ok=True)
