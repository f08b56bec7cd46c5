"""Who may talk to ``sid serve``: its own Host and Origin only, with the token or the login cookie.

- A request whose ``Host`` is not one of the server's own names is refused (DNS rebinding: a page on
  evil.example that resolves to 127.0.0.1 still sends ``Host: evil.example``).
- A request carrying an ``Origin`` that is not the server's own is refused (another page open in the
  user's browser posting to localhost).
- Every other request needs ``Authorization: Bearer TOKEN`` (the CLI reads TOKEN from the server file,
  which only the user can read) or the session cookie, which the browser gets by opening the one-time
  login link ``sid serve`` prints (as Jupyter and Datasette's ``--root`` do).
- Request bodies are counted as they arrive and cut off at the upload cap.
"""

from __future__ import annotations

import hmac
import json
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from sid.errors import SidError
from sid.serve.jobs import error_dict
from sid.serve.uploads import TooLarge, max_request_bytes

COOKIE = "sid_session"


class Refused(SidError):
    """A request from elsewhere or without the token (HTTP 403 or 401)."""


# reachable without a token (the Host and Origin checks still apply): the page and its files, no data
OPEN_PATHS = ("/login", "/static/")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass
class Keys:
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # the API token (server file)
    login: str | None = field(default_factory=lambda: secrets.token_urlsafe(24))  # one-time browser link
    sessions: set[str] = field(default_factory=set)  # cookies handed out by the login link

    def redeem(self, given: str) -> str | None:
        """A new session cookie for the one-time login token, once; None after or on a wrong token."""
        if self.login is None or not hmac.compare_digest(given.encode(), self.login.encode()):
            return None
        self.login = None
        session = secrets.token_urlsafe(32)
        self.sessions.add(session)
        return session

    def allows(self, headers: dict[str, str], cookies: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), self.token.encode()):
            return True
        return cookies.get(COOKIE, "") in self.sessions


def own_hosts(host: str, port: int) -> set[str]:
    """The ``Host`` values this server answers to: its address, and its machine's names when bound wide."""
    names = {host}
    if host in LOOPBACK or host in ("0.0.0.0", "::"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    if host in ("0.0.0.0", "::"):
        names |= {socket.gethostname(), socket.getfqdn()}
        try:
            names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
        except OSError:
            pass
    return {n.lower() for n in names} | {f"{n}:{port}".lower() for n in names}


def _cookies(raw: str) -> dict[str, str]:
    jar: dict[str, str] = {}
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            jar[key] = value
    return jar


class Guard:
    """ASGI middleware applying the rules of the module docstring before the app sees a request."""

    def __init__(self, app: Any, keys: Keys, hosts: set[str]) -> None:
        self.app, self.keys, self.hosts = app, keys, hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refusal(scope["path"], headers)
        if refusal is not None:
            status, message, hint = refusal
            body = json.dumps({"error": error_dict(Refused(message, hint))}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return None
        return await self.app(scope, _capped(receive), send)

    def refusal(self, path: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            return 403, f"Host {host!r} is not this server's", "open the address sid serve printed"
        origin = headers.get("origin")
        if origin is not None and origin.lower().partition("://")[2] not in self.hosts:
            return (
                403,
                f"Origin {origin!r} is not this server's",
                "requests must come from the server's own page",
            )
        if (
            path == "/"
            or path.startswith(OPEN_PATHS)
            or self.keys.allows(headers, _cookies(headers.get("cookie", "")))
        ):
            return None
        return (
            401,
            "not signed in",
            "open the login link sid serve printed, or send the token of its server file",
        )


def _capped(receive: Any) -> Any:
    """``receive`` that raises TooLarge once the body passes the upload cap."""
    seen = [0]
    cap = max_request_bytes()

    async def wrapped() -> dict[str, Any]:
        message = await receive()
        if message["type"] == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > cap:
                raise TooLarge(
                    f"the upload is over the cap of {cap // (1024 * 1024)} MiB", "send smaller files"
                )
        return message

    return wrapped
