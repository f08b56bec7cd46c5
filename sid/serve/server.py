"""``sid serve``'s process: bind, announce, serve until interrupted (``sid.cli.serve`` calls ``run``).

Apart from the package's ``__init__``, which the client and the CLI read without starting anything.
"""

from __future__ import annotations

import os
import socket
import time
from functools import partial
from typing import Any

from sid.serve import Running, read_server_file, serve_dir, write_server_file


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
