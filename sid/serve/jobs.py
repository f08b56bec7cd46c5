"""Jobs of ``sid serve``: a FIFO queue and one worker thread per device, progress kept as events.

A job is one call of a library function (``sid.serve.kinds``); its callbacks (progress, warnings,
phases, finished images) append events that clients read as Server-Sent Events, from any position,
so a client that connects late or reconnects sees the whole story. Cancelling a queued job drops it;
cancelling a running one raises KeyboardInterrupt from its next callback, which the library handles
as it handles Ctrl-C (training keeps its checkpoint and leaves the store unchanged; rendering keeps
the finished images).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sid.errors import BadInput, Interrupted, SidError, as_sid_error
from sid.files import no_link

FINAL = ("done", "failed", "cancelled")


class JobNotFound(SidError):
    """No job of that id on this server (HTTP 404)."""


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    device: str
    folder: Path  # the job's own outputs (and uploads beside them)
    run: Callable[[Job], dict[str, Any]]  # the library call; returns the result
    status: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: dict[str, str] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)

    def emit(self, kind: str, **data: Any) -> None:
        """Append an event; a running job that was cancelled stops here (see the module docstring)."""
        with self.changed:
            self.events.append({"seq": len(self.events), "type": kind, **data})
            self.changed.notify_all()
        if self.cancel_requested and self.status == "running" and kind in ("progress", "step", "image"):
            raise KeyboardInterrupt

    def wait(self, seq: int, timeout: float) -> list[dict[str, Any]]:
        """Events from ``seq`` on, waiting up to ``timeout`` s for one when there are none yet."""
        with self.changed:
            if len(self.events) <= seq and self.status not in FINAL:
                self.changed.wait(timeout)
            return self.events[seq:]

    def files(self) -> list[str]:
        """The job's output files, relative to its folder (uploads excluded)."""
        out = self.folder / "out"
        if not out.is_dir():
            return []
        return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and ".tmp" not in p.name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "device": self.device,
            "params": self.params,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "result": self.result,
            "error": self.error,
            "files": self.files(),
            "events": len(self.events),
        }


class Worker:
    """One device: its FIFO queue, its resident models and the thread that runs its jobs."""

    def __init__(self, device: str, resident: Any) -> None:
        self.device = device
        self.resident = resident
        self.queue: deque[Job] = deque()
        self.current: Job | None = None
        self.wake = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name=f"sid-serve-{device}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.wake:
            self.queue.append(job)
            self.wake.notify()

    def load(self) -> int:
        return len(self.queue) + (self.current is not None)

    def drop(self, job: Job) -> bool:
        with self.wake:
            if job in self.queue:
                self.queue.remove(job)
                return True
        return False

    def _loop(self) -> None:
        from sid.pipelines import RESIDENT

        RESIDENT.set(self.resident)  # this thread's loaders keep their models (sid.serve.resident)
        while True:
            with self.wake:
                while not self.queue:
                    self.wake.wait()
                job = self.current = self.queue.popleft()
            self.resident.begin()
            try:
                execute(job)
            finally:
                self.current = None
            self.resident.release(job.kind)


def execute(job: Job) -> None:
    """Run one job to a final status; never raises."""
    job.status, job.started = "running", time.time()
    job.emit("status", status="running")
    try:
        job.result = job.run(job)
        status = "done"
    except (KeyboardInterrupt, Interrupted) as e:
        status = "cancelled" if job.cancel_requested else "failed"
        job.error = error_dict(e if isinstance(e, SidError) else Interrupted("cancelled"))
    except SidError as e:
        status, job.error = "failed", error_dict(e)
    except Exception as e:  # a bug or a library failure: worded as the CLI words it
        status, job.error = "failed", error_dict(as_sid_error(e))
    job.finished = time.time()
    job.status = status
    job.emit("status", status=status, error=job.error, result=job.result, files=job.files())


def error_dict(e: SidError) -> dict[str, str]:
    """A failure as the API reports it (in a job, and as ``{"error": ...}`` of a refused request)."""
    return {"message": e.message, "hint": e.hint, "kind": type(e).__name__}


class Jobs:
    """Every job of this server, and the workers (one per device) that run them."""

    def __init__(self, devices: list[str], resident_for: Callable[[str], Any], root: Path) -> None:
        self.workers = {d: Worker(d, resident_for(d)) for d in devices}
        self.root = root
        self.all: dict[str, Job] = {}
        self.lock = threading.Lock()

    def new(self, kind: str, params: dict[str, Any], device: str | None) -> Job:
        """A job not yet queued (its folder exists: uploads go there before ``submit``)."""
        worker = self._worker(device)
        job_id = uuid.uuid4().hex[:12]
        folder = self.root / job_id
        for part in (self.root.parent, self.root):  # sid's own folders: a planted link is refused
            no_link(part)
        (folder / "out").mkdir(parents=True)
        return Job(job_id, kind, params, worker.device, folder, run=lambda j: {})

    def submit(self, job: Job) -> Job:
        with self.lock:
            self.all[job.id] = job
        job.emit("status", status="queued")
        self.workers[job.device].submit(job)
        return job

    def get(self, job_id: str) -> Job:
        job = self.all.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}", "list the jobs with GET /api/jobs")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status in FINAL:
            return job
        job.cancel_requested = True
        if self.workers[job.device].drop(job):
            job.status, job.finished = "cancelled", time.time()
            job.emit("status", status="cancelled", error=None, result={}, files=[])
        return job

    def _worker(self, device: str | None) -> Worker:
        if device in (None, "", "auto"):
            return min(self.workers.values(), key=Worker.load)  # the least busy device
        if device not in self.workers:
            raise BadInput(
                f"this server runs no device {device!r}", f"use one of: {', '.join(self.workers)}, or auto"
            )
        return self.workers[device]
