"""The CLI's side of a running ``sid serve``: submit a job, follow its events, fetch its files.

Light on purpose (httpx only): a command that runs through the server imports no torch, which is the
point of the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sid.errors import SidError, first_line
from sid.serve import Running, read_server_file


class ServerError(SidError):
    """A failure the server reported (its message and hint, as the CLI would have printed them)."""


class Remote:
    def __init__(self, running: Running) -> None:
        import httpx

        self.running = running
        self.http = httpx.Client(
            base_url=running.url, headers={"authorization": f"Bearer {running.token}"}, timeout=None
        )

    @contextmanager
    def talking(self) -> Iterator[None]:
        """A server that stops answering is one line, as any failure of the CLI is."""
        import httpx

        try:
            yield
        except httpx.HTTPError as e:
            raise ServerError(
                f"lost the server at {self.running.url} ({first_line(e) or type(e).__name__})",
                "run the command again (with --local to run it here)",
            ) from e

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.talking():
            response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error(response.json() if response.content else {}, response.status_code)
        return response.json()

    def submit(self, kind: str, params: dict[str, Any], device: str, files: list[Path]) -> str:
        """Queue a job (uploading ``files``); its id."""
        form = {"kind": kind, "params": json.dumps(params), "device": device}
        parts = [("file", (p.name, p.read_bytes())) for p in files]
        return self.call("POST", "/api/jobs", data=form, files=parts or None)["id"]

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's events as they happen, to the last one."""
        with self.talking(), self.http.stream("GET", f"/api/jobs/{job_id}/events") as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[6:])

    def follow(self, job_id: str, on_event: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Feed every event to ``on_event``; the job's result, or its error raised as the CLI's own.

        Ctrl-C cancels the job on the server (which keeps what a local Ctrl-C keeps) and re-raises.
        """
        try:
            for event in self.events(job_id):
                on_event(event)
        except KeyboardInterrupt:
            self.call("POST", f"/api/jobs/{job_id}/cancel")
            raise
        job = self.call("GET", f"/api/jobs/{job_id}")
        if job["status"] != "done":
            raise _error({"error": job["error"] or {"message": f"job {job['status']}"}}, 500)
        return job["result"]

    def run(
        self,
        kind: str,
        params: dict[str, Any],
        device: str,
        files: list[Path],
        warn: Callable[[str], None],
        on_step: Callable[..., None] | None = None,
        progress: Callable[[int, int, float], None] | None = None,
        phase: Callable[[str], None] | None = None,
        on_image: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Submit a job and feed its events to the callbacks the library takes in-process (so the CLI
        shows the same bars, phases and warnings); the job's id and result. ``on_image(job, event)``."""
        job = self.submit(kind, params, device, files)

        def on_event(event: dict[str, Any]) -> None:
            kind = event["type"]
            if kind == "step" and on_step is not None:
                on_step(event["advance"], total=event.get("total"))
            elif kind == "progress" and progress is not None:
                progress(event["step"], event["total"], event["loss"])
            elif kind == "phase" and phase is not None:
                phase(event["text"])
            elif kind == "warning":
                warn(event["text"])
            elif kind == "image" and on_image is not None:
                on_image(job, event)

        return job, self.follow(job, on_event)

    def download(self, job_id: str, name: str) -> bytes:
        with self.talking():
            response = self.http.get(f"/api/jobs/{job_id}/files/{name}")
        if response.status_code >= 400:
            raise _error(response.json(), response.status_code)
        return response.content


def _error(body: dict[str, Any], status: int) -> SidError:
    """The CLI's own exception for a server error, so it exits and prints as a local failure would."""
    from sid import errors

    error = body.get("error") or {}
    cls = getattr(errors, str(error.get("kind")), None)
    if not (isinstance(cls, type) and issubclass(cls, SidError)) or cls is SidError:
        cls = ServerError
    return cls(
        str(error.get("message") or f"the server answered HTTP {status}"), str(error.get("hint") or "")
    )


def connect(store_root: Path) -> Remote | None:
    """The store's running server, or None (no file, a dead server's file, or nobody answers)."""
    running = read_server_file(store_root)
    if running is None:
        return None
    import httpx

    remote = Remote(running)
    try:
        remote.http.get("/api/server", timeout=2.0).raise_for_status()
    except httpx.HTTPError:
        return None
    return remote
