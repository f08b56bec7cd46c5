"""A real `sid serve` process on a throwaway store, for the serve tests (API, CLI, browser)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sid.serve.spawn import Spawned, spawn

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    spawned: Spawned
    home: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.spawned.running.url

    @property
    def token(self) -> str:
        return self.spawned.running.token

    @property
    def login(self) -> str:
        return self.spawned.login

    @property
    def proc(self) -> Any:
        return self.spawned.proc

    def client(self, **kwargs: Any) -> Any:
        import httpx

        headers = {"authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.url, headers=headers, timeout=300, **kwargs)

    def stop(self) -> None:
        self.spawned.stop()


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


def start(env: dict[str, str]) -> Served:
    return Served(spawn(env), Path(env["SID_HOME"]), env)


def wait_done(client: Any, job_id: str) -> dict[str, Any]:
    """Follow the job's events to the end (as the CLI and page do); its final state."""
    with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        for _ in response.iter_lines():
            pass
    return client.get(f"/api/jobs/{job_id}").json()
