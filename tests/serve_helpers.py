"""A real `sid serve` process on a throwaway store, for the serve tests (API, CLI, browser)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    proc: subprocess.Popen
    home: Path
    env: dict[str, str]
    url: str
    token: str
    login: str  # the one-time login link it printed

    def client(self, **kwargs: Any) -> Any:
        import httpx

        headers = {"authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.url, headers=headers, timeout=300, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def server_env(home: Path, tiny_model: Path, facepack: Path, vit: Path, parser: Path) -> dict[str, str]:
    """A store whose config names the tiny model as the preset ``tiny`` (the API takes no folders)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[presets.tiny]\ncandidates = ["{tiny_model}"]\n', encoding="utf-8")
    return {
        **os.environ,
        "SID_HOME": str(home),
        "SID_CONFIG": str(home / "config.toml"),
        "SID_FACE_MODELS": str(facepack),
        "SID_VIT_MODEL": str(vit),
        "SID_FACE_PARSER": str(parser),
        "SID_SERVE_MAX_UPLOAD": str(3 * 1024 * 1024),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }


def start(env: dict[str, str], timeout: float = 120) -> Served:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sid", "serve", "--port", "0", "--device", "cpu"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    login = ""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not login:
        line = proc.stdout.readline()
        if "login?token=" in line:
            login = line.strip()
    assert login, f"sid serve did not start: {proc.stdout.read() if proc.poll() is not None else ''}"
    info = json.loads((Path(env["SID_HOME"]) / "identities" / ".server.json").read_text())
    return Served(proc, Path(env["SID_HOME"]), env, info["url"], info["token"], login)


def wait_done(client: Any, job_id: str) -> dict[str, Any]:
    """Follow the job's events to the end (as the CLI and page do); its final state."""
    with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        for _ in response.iter_lines():
            pass
    return client.get(f"/api/jobs/{job_id}").json()
