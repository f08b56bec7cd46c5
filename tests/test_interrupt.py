"""Issue 13, class 3 (first bullet): Ctrl-C never loses finished work. Renders are written as soon as
they are decoded; an interrupted command exits 130 and says what it kept. Ctrl-C is raised for real
(KeyboardInterrupt) from inside the run, after k images, on the tiny saved pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import sid.clipfile
import sid.render
from sid.cli import app
from sid.store import IdentityStore
from tests.test_store import make_identity
from tests.test_video import T2V_WIDTH, store_identity, tiny_t2v  # noqa: F401 (fixture)

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def ctrl_c_on_call(monkeypatch, module: object, name: str, call: int) -> list[int]:
    """Make ``module.name`` raise KeyboardInterrupt when it is called for the ``call``-th time."""
    real, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def hidden(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name != ".lock"]


def test_render_keeps_the_images_finished_before_ctrl_c(
    tiny_model: Path, tmp_path: Path, monkeypatch
) -> None:
    IdentityStore().save(make_identity("alice", width=32))
    ctrl_c_on_call(monkeypatch, sid.render, "generate", 4)  # while the 4th image is being denoised
    out = tmp_path / "renders"
    args = ["render", "alice on a horse", "--model", tiny_model, "--device", "cpu", "--steps", 1]
    result = invoke(*args, "--size", "64x64", "-n", 6, "--seed", 10, "-o", out)
    assert result.exit_code == 130, result.output
    assert "interrupted after 3 of 6 images" in result.output and str(out) in result.output
    kept = sorted(p.name for p in out.iterdir())
    assert kept == ["alice-on-a-horse-00-10.png", "alice-on-a-horse-01-11.png", "alice-on-a-horse-02-12.png"]
    assert all(np.asarray(Image.open(out / name)).shape == (64, 64, 3) for name in kept)
    assert hidden(out) == []


def test_ctrl_c_while_loading_is_one_line_and_exit_130(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    ctrl_c_on_call(monkeypatch, sid.render, "load_render_pipeline", 1)
    result = invoke("render", "a castle", "--model", tiny_model, "-o", tmp_path / "out")
    assert result.exit_code == 130 and result.output.strip() == "error: interrupted"
    assert not (tmp_path / "out").exists()


def test_video_interrupted_while_writing_keeps_the_old_clip(
    tiny_t2v: Path,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    monkeypatch,
) -> None:
    store_identity(width=T2V_WIDTH)
    clip = tmp_path / "clip.gif"
    clip.write_bytes(b"the clip from yesterday")
    real = sid.clipfile._write_gif

    def half_then_ctrl_c(frames, path, fps, comment):
        real(frames[:1], path, fps, comment)  # part of the file is on disk ...
        raise KeyboardInterrupt  # ... when Ctrl-C arrives

    monkeypatch.setattr(sid.clipfile, "_write_gif", half_then_ctrl_c)
    args = ["video", "alice dancing", "--video-model", tiny_t2v, *"--frames 2 --size 64x64 --steps 1".split()]
    result = invoke(*args, "-o", clip, "--force", "--quiet")
    assert result.exit_code == 130 and "it was not written" in result.output, result.output
    assert clip.read_bytes() == b"the clip from yesterday" and hidden(tmp_path) == []


def test_eval_keeps_the_renders_finished_before_ctrl_c(
    tiny_model: Path, facepack: Path, face_photos: Path, tmp_path: Path, monkeypatch
) -> None:
    IdentityStore().save(make_identity("alice", width=32))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("{} as an oil painting\n{} on the beach\n")
    ctrl_c_on_call(monkeypatch, sid.render, "generate", 3)
    out = tmp_path / "eval"
    result = invoke(
        "eval",
        "alice",
        "--prompts",
        prompts,
        "-n",
        2,
        "--size",
        "64x64",
        "--steps",
        1,
        "--model",
        tiny_model,
        "--clip-model",
        "none",
        "--face-models",
        facepack,
        "--photo",
        face_photos / "obama_1.jpg",
        "-o",
        out,
        "--quiet",
    )
    assert result.exit_code == 130, result.output
    assert "interrupted after 2 of 4 images; no report was written" in result.output
    assert len(list((out / "images" / "alice").glob("*.png"))) == 2
    assert not (out / "eval.json").exists() and hidden(out) == []


@pytest.mark.parametrize("stop_at", [1, 2])
def test_3d_ctrl_c_while_meshing_writes_nothing(
    tiny_model: Path, tmp_path: Path, monkeypatch, stop_at: int
) -> None:
    """Ctrl-C while the mesh is extracted (1) or the turntable rendered (2): neither file appears, so
    --resume works without --force."""
    import sid.threed.generate as generate

    ctrl_c_on_call(monkeypatch, generate, "extract_mesh" if stop_at == 1 else "render_turntable", 1)
    args = ["3d", "a bust", "--model", tiny_model, "--iters", 2, "--resolution", 16, "--samples", 8]
    result = invoke(*args, "--frames", 2, "--mesh-resolution", 16, "-o", tmp_path / "bust.glb", "--quiet")
    assert result.exit_code == 130 and "nothing was written" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []
