"""`sid serve` end to end: a real server process on the tiny models, driven through its API and the CLI."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import Served, server_env, start, wait_done
from typer.testing import CliRunner

from sid.cli import app
from sid.store import IdentityStore

runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model, facepack, tiny_vit, tiny_parser, face_photos):
    """One server for the module, with ``alice`` learned on it (2 steps) through the API."""
    env = server_env(tmp_path_factory.mktemp("served"), tiny_model, facepack, tiny_vit, tiny_parser)
    server = start(env)
    with server.client() as client:
        job = submit(
            client, "learn", {"names": ["alice"], "steps": 2, "model": "tiny"}, face_photos / "obama_1.jpg"
        )
        done = wait_done(client, job["id"])
        assert done["status"] == "done", done["error"]
    yield server
    server.stop()


@pytest.fixture
def on_server_store(served: Served, monkeypatch) -> Served:
    """This test's CLI uses the server's store (and so finds the server)."""
    for key in ("SID_HOME", "SID_CONFIG", "SID_FACE_MODELS", "SID_VIT_MODEL", "SID_FACE_PARSER"):
        monkeypatch.setenv(key, served.env[key])
    return served


def submit(client, kind: str, params: dict, *photos: Path, data: list[tuple[str, bytes]] = ()) -> dict:
    files = [("file", (p.name, p.read_bytes())) for p in photos] + [("file", d) for d in data]
    response = client.post(
        "/api/jobs", data={"kind": kind, "params": json.dumps(params)}, files=files or None
    )
    assert response.status_code == 202, response.text
    return response.json()


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_learn_render_download(served: Served) -> None:
    with served.client() as client:
        listing = client.get("/api/identities").json()["identities"]
        assert [row["name"] for row in listing] == ["alice"]
        thumb = client.get(listing[0]["thumbnail_url"])
        assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size[0] > 0

        job = submit(client, "render", {"prompt": "alice as a knight", "count": 2, "steps": 2, "seed": 5})
        done = wait_done(client, job["id"])
        assert done["status"] == "done", done["error"]
        assert done["files"] == ["alice-as-a-knight-00-5.png", "alice-as-a-knight-01-6.png"]
        first, second = (client.get(f"/api/jobs/{job['id']}/files/{f}").content for f in done["files"])
        assert png_pixels(first).shape == (64, 64, 3) and not np.array_equal(
            png_pixels(first), png_pixels(second)
        )
        outputs = client.get("/api/outputs").json()["outputs"]
        assert {o["file"] for o in outputs if o["job"] == job["id"]} == set(done["files"])
        events = client.get(f"/api/jobs/{job['id']}/events").text
        # 2 images x 2 steps, and the bar's length once the model's family is known
        assert events.count("event: image") == 2 and events.count("event: step") == 5

        # the same identity, exported and imported again under another name
        exported = client.get("/api/identities/alice/export").content
        imported = client.post(
            "/api/identities/import", files={"file": ("alice.safetensors", exported)}, data={"name": "alice2"}
        )
        assert imported.status_code == 201 and imported.json()["name"] == "alice2"
        assert client.post("/api/identities/alice2/rename", json={"to": "alice3"}).json()["name"] == "alice3"
        assert client.delete("/api/identities/alice3").status_code == 200
        assert client.get("/api/identities/alice3").json()["error"]["kind"] == "IdentityNotFound"
        schema = client.get("/api/openapi.json").json()
        assert "/api/jobs/{id}/events" in schema["paths"] and schema["openapi"].startswith("3.")


def test_two_clients_queue_in_order_and_cancel(served: Served) -> None:
    long = {"prompt": "alice in a garden", "count": 3, "steps": 40, "seed": 1}
    with served.client() as a, served.client() as b:
        first = submit(a, "render", long)
        second = submit(b, "render", {**long, "count": 1, "steps": 2})
        third = submit(a, "render", {**long, "count": 1, "steps": 2})
        # a queued job is dropped at once; the running one stops at its next step, keeping finished images
        assert b.post(f"/api/jobs/{third['id']}/cancel").json()["status"] == "cancelled"
        while a.get(f"/api/jobs/{first['id']}").json()["status"] == "queued":
            time.sleep(0.05)
        a.post(f"/api/jobs/{first['id']}/cancel")
        one, two = wait_done(a, first["id"]), wait_done(b, second["id"])
        assert one["status"] == "cancelled" and len(one["files"]) < 3
        assert two["status"] == "done" and two["started"] >= one["finished"]  # FIFO, one at a time
        assert a.get(f"/api/jobs/{third['id']}").json()["started"] is None


def test_batch_and_3d_jobs_call_the_library(served: Served, face_photos: Path) -> None:
    with served.client() as client:
        photos = [("carol.jpg", face_photos / "obama_2.jpg"), ("dave.jpg", face_photos / "biden_2.jpg")]
        batch = submit(
            client, "learn-many", {"steps": 2, "model": "tiny"}, data=[(n, p.read_bytes()) for n, p in photos]
        )
        outcomes = wait_done(client, batch["id"])["result"]["outcomes"]
        assert [(o["name"], o["status"]) for o in outcomes] == [("carol", "learned"), ("dave", "learned")]
        for name in ("carol", "dave"):
            assert client.delete(f"/api/identities/{name}").status_code == 200

        mesh = {
            "prompt": "alice bust",
            "model": "tiny",
            "iters": 4,
            "resolution": 32,
            "samples": 8,
            "frames": 4,
            "mesh_resolution": 32,
        }
        done = wait_done(client, submit(client, "3d", mesh)["id"])
        assert done["status"] == "done", done["error"]
        assert {Path(f).suffix for f in done["files"]} == {".glb", ".mp4"} and done["result"][
            "iterations"
        ] == 4


def test_bad_uploads_are_refused(served: Served, face_photos: Path) -> None:
    bomb = _png_header_only(40_000, 40_000)
    cases = {
        "not an image": (b"hello, I am text", 400, "not an image"),
        "empty": (b"", 400, "empty (0 bytes)"),
        "over the cap": (b"\0" * (4 * 1024 * 1024), 413, "over the"),
        "a decompression bomb": (bomb, 400, "too large"),
        "a pickle": (pickle.dumps({"a": 1}), 400, "not an image"),
    }
    with served.client() as client:
        before = len(client.get("/api/jobs").json()["jobs"])
        for label, (data, status, needle) in cases.items():
            response = client.post(
                "/api/jobs",
                data={"kind": "learn", "params": json.dumps({"names": ["bob"], "steps": 2})},
                files=[("file", ("x.jpg", data))],
            )
            assert response.status_code == status, (label, response.text)
            error = response.json()["error"]
            assert needle in error["message"] and error["hint"], (label, error)
        assert len(client.get("/api/jobs").json()["jobs"]) == before  # nothing was queued
        bad_name = client.post(
            "/api/jobs",
            data={"kind": "learn", "params": json.dumps({"names": ["../etc"], "steps": 2})},
            files=[("file", ("a.jpg", (face_photos / "obama_1.jpg").read_bytes()))],
        )
        # names and knobs are refused at submission, by the library's own check, as the CLI refuses them
        assert bad_name.status_code == 400 and "invalid identity name" in bad_name.json()["error"]["message"]
        huge_lr = client.post(
            "/api/jobs",
            data={"kind": "learn", "params": json.dumps({"names": ["bob"], "steps": 2, "lr": 1e308})},
            files=[("file", ("a.jpg", (face_photos / "obama_1.jpg").read_bytes()))],
        )
        assert huge_lr.status_code == 400 and "--lr" in huge_lr.json()["error"]["message"]
        # a path where a model goes is refused: the API reads no path a client names
        path_model = client.post(
            "/api/jobs", json={"kind": "render", "params": {"prompt": "x", "model": "/etc"}}
        )
        assert path_model.status_code == 400 and "names a path" in path_model.json()["error"]["message"]
        pickled = client.post("/api/identities/import", files={"file": ("evil.pt", _torch_pickle())})
        assert pickled.status_code == 400 and "pickled" in pickled.json()["error"]["message"]
        assert [r["name"] for r in client.get("/api/identities").json()["identities"]] == ["alice"]


def test_host_origin_and_token_are_checked(served: Served) -> None:
    import httpx

    port = served.url.rsplit(":", 1)[1]
    with httpx.Client(base_url=served.url) as anonymous, served.client() as client:
        assert anonymous.get("/api/identities").status_code == 401
        bad = anonymous.get("/api/identities", headers={"authorization": "Bearer nope"})
        assert bad.status_code == 401 and "login link" in bad.json()["error"]["hint"]
        rebinding = client.get("/api/identities", headers={"host": f"evil.example:{port}"})
        assert rebinding.status_code == 403 and "Host" in rebinding.json()["error"]["message"]
        cross = client.post(
            "/api/jobs", json={"kind": "render", "params": {}}, headers={"origin": "http://evil.example"}
        )
        assert cross.status_code == 403 and "Origin" in cross.json()["error"]["message"]
        same = client.get("/api/identities", headers={"origin": served.url})
        assert same.status_code == 200
        # the browser's way in: the one-time link sets a cookie, and works only once
        path = served.login.split(served.url, 1)[1]
        signed_in = anonymous.get(path)
        assert signed_in.status_code == 303 and "sid_session" in signed_in.cookies
        assert anonymous.get("/api/identities").status_code == 200
        assert httpx.get(served.url + path).status_code == 400
        assert (
            anonymous.get("/").status_code == 200
            and b'<script src="/static/app.js">' in anonymous.get("/").content
        )
    assert (served.home / "identities" / ".server.json").stat().st_mode & 0o777 == 0o600
    second = runner.invoke(app, ["serve", "--port", "0"], env={"SID_HOME": str(served.home)})
    assert second.exit_code == 1 and "already serves" in second.output and served.url in second.output


def test_cli_through_the_server_equals_local(
    on_server_store: Served, tmp_path: Path, face_photos: Path
) -> None:
    args = [
        "render",
        "alice at the beach",
        "-n",
        "2",
        "--seed",
        "11",
        "--steps",
        "3",
        "--device",
        "cpu",
        "--json",
    ]
    remote = runner.invoke(app, [*args, "-o", str(tmp_path / "remote")])
    local = runner.invoke(app, [*args, "-o", str(tmp_path / "local"), "--local"])
    assert remote.exit_code == 0 and local.exit_code == 0, (remote.output, local.output)
    remote_rows, local_rows = json.loads(remote.stdout), json.loads(local.stdout)
    assert [Path(r["path"]).name for r in remote_rows] == [Path(r["path"]).name for r in local_rows]
    for r, lo in zip(remote_rows, local_rows, strict=True):
        assert np.array_equal(
            png_pixels(Path(r["path"]).read_bytes()), png_pixels(Path(lo["path"]).read_bytes())
        )
    with on_server_store.client() as client:  # the first really ran on the server
        renders = [j for j in client.get("/api/jobs").json()["jobs"] if j["params"].get("prompt") == args[1]]
        assert len(renders) == 1 and renders[0]["params"]["seed"] == 11
    # learn through the server: the CLI's report, the identity in the store; errors keep the CLI's words
    learned = runner.invoke(
        app,
        [
            "learn",
            str(face_photos / "biden_2.jpg"),
            "--name",
            "bob",
            "--steps",
            "2",
            "--model",
            "tiny",
            "--device",
            "cpu",
        ],
    )
    assert learned.exit_code == 0 and "Learned bob (stableidentity, 2 vectors" in learned.output, (
        learned.output
    )
    assert "bob" in IdentityStore().names()
    again = runner.invoke(
        app, ["learn", str(face_photos / "biden_2.jpg"), "--name", "bob", "--steps", "2", "--model", "tiny"]
    )
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output

    # the server keeps bob's tokens loaded between renders; re-learned, bob must not render from the old ones,
    def bob_pixels(where: str, *extra: str) -> np.ndarray:
        args = ["render", "bob smiling", "--seed", "2", "--steps", "3", "--device", "cpu", "--force", "-q"]
        assert runner.invoke(app, [*args, "-o", str(tmp_path / where), *extra]).exit_code == 0
        return png_pixels(next((tmp_path / where).glob("*.png")).read_bytes())

    before = bob_pixels("bob-server")
    assert np.array_equal(before, bob_pixels("bob-local", "--local"))
    relearn = [
        "learn",
        str(face_photos / "biden_2.jpg"),
        "--name",
        "bob",
        "--steps",
        "2",
        "--seed",
        "7",
        "--force",
    ]
    # in-process, so the server hears nothing of it but the changed file
    assert runner.invoke(app, [*relearn, "--model", "tiny", "--device", "cpu", "--local"]).exit_code == 0
    after = bob_pixels("bob-server")
    assert not np.array_equal(before, after) and np.array_equal(after, bob_pixels("bob-local", "--local"))
    assert runner.invoke(app, ["rm", "bob", "--yes"]).exit_code == 0


def test_3d_through_the_server_equals_local(on_server_store: Served, tmp_path: Path) -> None:
    import trimesh

    args = ["3d", "alice statue", "--model", "tiny", "--iters", "4", "--resolution", "32", "--device", "cpu"]
    args += ["--samples", "8", "--frames", "4", "--mesh-resolution", "32", "--json"]
    meshes = []
    for where in ("server", "local"):
        extra = ["--local"] if where == "local" else []
        result = runner.invoke(app, [*args, "-o", str(tmp_path / f"{where}.glb"), *extra])
        assert result.exit_code == 0, result.output
        info = json.loads(result.stdout)
        assert info["mesh"] == str(tmp_path / f"{where}.glb") and Path(info["turntable"]).is_file()
        meshes.append(trimesh.load(info["mesh"], force="mesh"))
    assert len(meshes[0].vertices) > 0 and np.array_equal(meshes[0].vertices, meshes[1].vertices)
    with on_server_store.client() as client:
        jobs = client.get("/api/jobs").json()["jobs"]
        assert [j["params"].get("prompt") for j in jobs].count("alice statue") == 1  # the first ran there


def test_eval_through_the_server_equals_local(
    on_server_store: Served, tmp_path: Path, face_photos: Path
) -> None:
    photo = face_photos / "obama_4.jpg"
    args = ["eval", "alice", "--photo", str(photo), "-n", "1", "--steps", "2", "--size", "64x64"]
    args += ["--seed", "3", "--clip-model", "none", "--device", "cpu", "--json"]
    reports = {}
    for where in ("server", "local"):
        extra = ["--local"] if where == "local" else []
        result = runner.invoke(app, [*args, "-o", str(tmp_path / where), *extra])
        assert result.exit_code == 0, result.output
        reports[where] = json.loads(result.stdout)
        assert json.loads((tmp_path / where / "eval.json").read_text()) == reports[where]
        assert reports[where]["contact_sheet"] == str(tmp_path / where / "contact_sheet.png")
        assert reports[where]["identities"]["alice"]["reference"]["path"] == str(photo)
    server, local = reports["server"]["identities"]["alice"], reports["local"]["identities"]["alice"]
    moved = json.dumps(server).replace(str(tmp_path / "server"), str(tmp_path / "local"))
    assert json.loads(moved) == local and local["overall"]["images"] > 0  # the same report, files here
    images = sorted((tmp_path / "local").rglob("images/**/*.png"))
    assert images and [p.relative_to(tmp_path / "local") for p in images] == [
        p.relative_to(tmp_path / "server") for p in sorted((tmp_path / "server").rglob("images/**/*.png"))
    ]
    for image in images:
        twin = tmp_path / "server" / image.relative_to(tmp_path / "local")
        assert np.array_equal(png_pixels(image.read_bytes()), png_pixels(twin.read_bytes()))


def test_killed_server_mid_learn_leaves_the_store_and_resumes(
    tmp_path: Path, tiny_model, facepack, tiny_vit, tiny_parser, face_photos: Path, monkeypatch
) -> None:
    env = server_env(tmp_path / "home", tiny_model, facepack, tiny_vit, tiny_parser)
    server = start(env)
    settings = {"names": ["carol"], "steps": 120, "checkpoint_every": 5, "bank_size": 8, "model": "tiny"}
    with server.client() as client:
        submit(client, "learn", settings, face_photos / "obama_2.jpg")
        partial = server.home / "partial"
        deadline = time.time() + 240
        while not list(partial.glob("*.safetensors")) and time.time() < deadline:
            time.sleep(0.2)
    assert list(partial.glob("*.safetensors")), "no checkpoint was written"
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=30)
    for key in ("SID_HOME", "SID_CONFIG", "SID_FACE_MODELS", "SID_VIT_MODEL", "SID_FACE_PARSER"):
        monkeypatch.setenv(key, env[key])
    store = IdentityStore()
    assert store.names() == [] and store.list().errors == []
    assert (store.root / ".server.json").exists()  # stale: its process is gone, so the CLI runs in-process
    args = [
        "learn",
        str(face_photos / "obama_2.jpg"),
        "--name",
        "carol",
        "--device",
        "cpu",
        "--resume",
        *("--steps", "120", "--checkpoint-every", "5", "--bank-size", "8", "--model", "tiny"),
    ]
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "Resumed from step" in resumed.output
    assert store.names() == ["carol"] and store.get("carol").settings["steps"] == 120


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file declaring a huge image: what a decompression bomb looks like before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _torch_pickle() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"emb": Evil()}, buffer)
    return buffer.getvalue()


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_resident_models_drop_the_least_recently_used(tmp_path: Path) -> None:
    import torch

    from sid.serve.resident import ResidentModels

    cache = ResidentModels("cpu", tmp_path, max_entries=2)
    made: list[str] = []

    def loader(name: str):
        return lambda: made.append(name) or {"model": name}

    for name in ("a", "b", "a", "c"):  # a is used again, so b is the least recently used when c comes
        assert cache.get(name, loader(name)) == {"model": name}
    assert made == ["a", "b", "c"] and cache.names() == ["a", "c"]

    failures = [torch.OutOfMemoryError("CUDA out of memory")]

    def tight() -> dict:  # the device is full until a model is dropped
        if failures:
            raise failures.pop()
        return {"model": "d"}

    cache.max_entries = 3
    assert cache.get("d", tight) == {"model": "d"} and cache.names() == ["c", "d"]
