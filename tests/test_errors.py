"""Class 5 of issue 13: every failure is one line with a hint, never a traceback, and nothing is lost."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sid.cli import app
from sid.store import IdentityStore
from tests.helpers import one_error
from tests.test_corrupt_store import F32, raw_safetensors
from tests.test_store import make_identity
from tests.test_video import tiny_t2v  # noqa: F401  (fixture)

runner = CliRunner()
NO_FACE_MODELS = ["--face-encoder", "arcface", "--mask", "landmarks"]  # no ViT or parser needed


def write_tensors(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, str] | None = None) -> Path:
    from safetensors.numpy import save

    path.write_bytes(save(tensors, metadata=meta))
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: raw_safetensors(p, [1, 2]), "invalid type: sequence"),
        (
            lambda p: raw_safetensors(p, {"emb_params": {"dtype": "F32", "shape": "x"}}),
            "invalid type: string",
        ),
        (lambda p: raw_safetensors(p, {"emb_params": {**F32, "shape": []}}, b"\0" * 4), "shape ()"),
        (lambda p: raw_safetensors(p, {"__metadata__": {"name": ["x"]}}), "expected a string"),
        (lambda p: write_tensors(p, {"emb_params": np.ones((2, 16), np.int32)}), "not floats"),
        (lambda p: write_tensors(p, {"emb_params": np.full((2, 16), np.inf, np.float32)}), "NaN or infinite"),
        (lambda p: write_tensors(p, {"emb_params": np.ones((2, 3), np.float32)}), "not (vectors, width)"),
    ],
)
def test_malformed_imports_are_one_line(tmp_path: Path, make, needle: str) -> None:
    path = make(tmp_path / "emb.safetensors")
    one_error(runner.invoke(app, ["import", str(path), "--name", "emb"]), needle)
    assert not IdentityStore().root.exists() or IdentityStore().names() == []


def fail(code: int):
    def raiser(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return raiser


@pytest.mark.parametrize(
    ("code", "hint"), [(errno.ENOSPC, "free some disk space"), (errno.EROFS, "read-only")]
)
def test_full_or_read_only_store_on_rm_mv_import(tmp_path: Path, monkeypatch, code: int, hint: str) -> None:
    store = IdentityStore()
    store.save(make_identity("alice"))
    before = (store.root / "alice.safetensors").read_bytes()
    export = tmp_path / "bob.safetensors"
    assert runner.invoke(app, ["export", "alice", "-o", str(export)]).exit_code == 0
    monkeypatch.setattr(Path, "write_bytes", fail(code))  # every file write fails, as on such a disk
    monkeypatch.setattr(Path, "unlink", fail(code))
    for args in (["rm", "alice", "-y"], ["mv", "alice", "carol"], ["import", str(export), "--name", "bob"]):
        line = one_error(runner.invoke(app, args), os.strerror(code))
        assert hint in line, line
    monkeypatch.undo()
    assert store.names() == ["alice"] and (store.root / "alice.safetensors").read_bytes() == before


HOLDER = """
import sys, time
from sid.store import IdentityStore
with IdentityStore().lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_held_lock_says_who_holds_it_then_times_out(monkeypatch) -> None:
    IdentityStore().save(make_identity("alice"))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=dict(os.environ), stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        monkeypatch.setenv("SID_LOCK_TIMEOUT", "1")
        result = runner.invoke(app, ["rm", "alice", "-y"])
        line = one_error(result, f"still locked by pid {holder.pid}")
        assert "wait for that command to finish" in line
        assert f"waiting up to 1 s for the store lock, held by pid {holder.pid}" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    assert IdentityStore().names() == ["alice"]
    assert runner.invoke(app, ["rm", "alice", "-y"]).exit_code == 0  # the lock died with its holder


def test_a_text_to_video_model_given_to_render_and_learn(tiny_t2v: Path, tmp_path: Path) -> None:  # noqa: F811
    line = one_error(
        runner.invoke(app, ["render", "cat", "--model", str(tiny_t2v), "-q"]), "TextToVideoSDPipeline"
    )
    assert "not a text-to-image" in line


def test_out_of_range_seed_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    args = ["render", "cat", "--model", str(tiny_model), "--seed", "99999999999999999999", "--steps", "1"]
    line = one_error(
        runner.invoke(app, [*args, "--size", "64x64", "-o", str(tmp_path), "-q"]), "--seed must be"
    )
    assert "between 0 and 4294967295" in line and not list(tmp_path.iterdir())  # nothing rendered


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ("model = 5", "model = 5 is not a str"),
        ('[presets.sd21]\ncandidates = "x"', "presets.sd21.candidates = 'x' is not a list"),
        ("presets = 3", "presets = 3 is not a dict"),
        ("[presets.mine]\ncandidates = [1]", "must list hub ids"),
        ("model = [", "not valid TOML"),
    ],
)
def test_malformed_config_values(isolated_home: Path, config: str, needle: str) -> None:
    (isolated_home / "config.toml").write_text(config)
    one_error(runner.invoke(app, ["render", "cat", "-q"]), needle)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dtype", "fp8"], "unknown dtype 'fp8'"),
        (["--lr", "inf"], "--lr must be between 1e-08 and 1"),
        (["--lr", "nan"], "--lr must be between 1e-08 and 1"),
        (["--lr", "-1"], "--lr must be between 1e-08 and 1"),
    ],
)
def test_learn_options_checked_before_anything_loads(tmp_path: Path, args: list[str], needle: str) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"never read")
    one_error(runner.invoke(app, ["learn", str(photo), "--name", "alice", *args]), needle)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["render", "cat", "--guidance", "nan"], "--guidance must be a finite number"),
        (["render", "cat", "--control-scale", "inf"], "--control-scale must be a finite number"),
        (["render", "cat", "--guidance", "-1"], "--guidance must be a finite number"),
        (["video", "cat", "--guidance", "inf"], "--guidance must be a finite number"),
    ],
)
def test_guidance_checked_before_anything_loads(args: list[str], needle: str) -> None:
    one_error(runner.invoke(app, [*args, "-q"]), needle)  # no model exists offline: it never got that far


def test_unexpected_errors_are_one_line_and_debug_shows_them(monkeypatch) -> None:
    def broken(self):
        raise ValueError("something sid did not foresee")

    monkeypatch.setattr(IdentityStore, "list", broken)
    line = one_error(runner.invoke(app, ["ls"]), "unexpected ValueError: something sid did not foresee")
    assert "SID_DEBUG=1" in line
    monkeypatch.setenv("SID_DEBUG", "1")
    assert isinstance(runner.invoke(app, ["ls"]).exception, ValueError)


def test_a_text_to_video_model_given_to_learn(tiny_t2v: Path, face_photos: Path, facepack: Path) -> None:  # noqa: F811
    args = ["learn", str(face_photos / "obama_1.jpg"), "--name", "alice", "--model", str(tiny_t2v)]
    one_error(
        runner.invoke(app, [*args, "--face-models", str(facepack), "--device", "cpu", "-q", *NO_FACE_MODELS]),
        "not a text-to-image",
    )
    assert IdentityStore().names() == []
