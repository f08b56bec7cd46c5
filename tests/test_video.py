"""``sid video``: both backends and every format end to end on tiny saved models, identities, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sid.cli import app
from sid.families import slot_for_width
from sid.store import Identity, IdentityStore

runner = CliRunner()
T2V_WIDTH = 64  # text width of the tiny text-to-video pipeline
SD_WIDTH = 32  # text width of conftest's tiny SD pipeline (the AnimateDiff base)


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def store_identity(name: str = "alice", width: int = T2V_WIDTH, k: int = 2, seed: int = 0) -> Identity:
    rng = np.random.default_rng(seed)
    identity = Identity(
        name=name,
        vectors={slot_for_width(width): rng.standard_normal((k, width)).astype(np.float32)},
        method="stableidentity",
        base_model="tiny",
    )
    IdentityStore().save(identity)
    return identity


def read_frames(path: Path) -> np.ndarray:
    """(F, H, W, 3) frames as a reader sees them."""
    import imageio.v2 as iio

    if path.suffix == ".gif":
        frames = [np.asarray(f)[..., :3] for f in iio.mimread(path)]
    else:
        with iio.get_reader(path, format="FFMPEG") as reader:
            frames = [np.asarray(f) for f in reader]
    return np.stack(frames)


@pytest.fixture(scope="session")
def tiny_t2v(tmp_path_factory) -> Path:
    from sid.testing import find_bpe_vocab, save_tiny, tiny_t2v_pipeline

    if find_bpe_vocab() is None:
        pytest.skip("CLIP BPE vocabulary missing: pip install --no-deps open-clip-torch")
    return save_tiny(tiny_t2v_pipeline(text_width=T2V_WIDTH), tmp_path_factory.mktemp("tiny") / "t2v64")


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory) -> Path:
    from sid.testing import save_tiny, tiny_motion_adapter

    return save_tiny(tiny_motion_adapter(), tmp_path_factory.mktemp("tiny") / "motion")


@pytest.fixture
def backend_args(request, tiny_t2v, tiny_adapter, tiny_model) -> tuple[str, list[str]]:
    """(backend, the CLI args that select it) with an identity of the matching width stored."""
    if request.param == "text-to-video":
        store_identity(width=T2V_WIDTH)
        return request.param, ["--video-model", str(tiny_t2v)]
    store_identity(width=SD_WIDTH)
    return request.param, ["--video-model", str(tiny_adapter), "--model", str(tiny_model)]


@pytest.mark.parametrize("fmt", ["mp4", "gif", "webm"])
@pytest.mark.parametrize("backend_args", ["text-to-video", "animatediff"], indirect=True)
def test_writes_every_format_with_each_backend(backend_args, fmt: str, tmp_path: Path) -> None:
    backend, args = backend_args
    target = tmp_path / f"clip.{fmt}"
    result = invoke(
        "video",
        "alice dancing",
        *args,
        "--frames",
        4,
        "--size",
        "64x64",
        "--steps",
        2,
        "--seed",
        3,
        "--fps",
        8,
        "-o",
        target,
        "--json",
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["path"] == str(target) and info["frames"] == 4 and info["fps"] == 8 and info["seed"] == 3
    assert info["backend"] == backend and info["identities"] == ["alice"] and info["size"] == "64x64"
    frames = read_frames(target)
    assert frames.shape == (4, 64, 64, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no partial file left behind


def test_identity_vectors_reach_the_video_text_encoder(tiny_t2v: Path) -> None:
    import torch

    from sid.render import prepare
    from sid.video import VideoConfig, load_video_pipeline, plan_video, video_frames

    stored = store_identity(width=T2V_WIDTH)
    store = IdentityStore()
    plan = plan_video(VideoConfig("alice dancing", video_model=str(tiny_t2v)), [stored])
    assert plan.backend == "text-to-video"
    pipe = load_video_pipeline(plan, device="cpu")
    parsed, identities = prepare("alice dancing", store, pipe)
    assert parsed.text == "<sid-alice> dancing" and [i.name for i in identities] == ["alice"]

    ids = pipe.tokenizer.convert_tokens_to_ids(["<sid-alice>", "<sid-alice>_1"])
    rows = pipe.text_encoder.get_input_embeddings().weight[ids].detach()
    assert torch.equal(rows, torch.from_numpy(stored.vectors[slot_for_width(T2V_WIDTH)]))

    def clip(text: str) -> np.ndarray:
        return video_frames(pipe, text, seed=5, frames=4, steps=2, guidance=9.0, size=(64, 64))

    with_identity = clip(parsed.text)
    assert with_identity.shape == (4, 64, 64, 3) and with_identity.dtype == np.uint8
    assert np.array_equal(with_identity, clip(parsed.text))  # same seed, same clip
    assert not np.array_equal(with_identity, clip("a person dancing"))
    assert not np.array_equal(with_identity, clip("alice dancing"))  # the plain word, not the identity


def test_low_vram_on_cpu_slices_the_vae_and_warns(tiny_t2v: Path) -> None:
    from sid.video import VideoConfig, load_video_pipeline, plan_video

    warnings: list[str] = []
    plan = plan_video(VideoConfig("a person", video_model=str(tiny_t2v)), [])
    pipe = load_video_pipeline(plan, device="cpu", low_vram=True, warn=warnings.append)
    assert pipe.vae.use_slicing and pipe.device.type == "cpu"
    assert len(warnings) == 1 and "only on CUDA" in warnings[0]


def test_family_mismatch_is_one_line_error(tiny_t2v: Path, tmp_path: Path) -> None:
    store_identity(width=32)
    result = invoke(
        "video",
        "alice dancing",
        "--video-model",
        tiny_t2v,
        "--frames",
        4,
        "--size",
        "64x64",
        "--steps",
        2,
        "-o",
        tmp_path / "clip.mp4",
    )
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "learned for 32-d text encoder" in errors[0] and "64-d" in errors[0]
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_sd1_identity_with_a_text_to_video_preset_fails_before_loading(tmp_path: Path) -> None:
    store_identity(width=768)
    result = invoke("video", "alice dancing", "--video-model", "zeroscope", "-o", tmp_path / "clip.mp4")
    assert result.exit_code == 1
    assert "SD 1.x (CLIP ViT-L, 768-d)" in result.output and "SD 2.x" in result.output
    assert "could not load" not in result.output  # refused before any download was tried


def test_unsupported_family_lists_what_is_supported(tmp_path: Path) -> None:
    store_identity(width=T2V_WIDTH)
    result = invoke("video", "alice dancing", "-o", tmp_path / "clip.mp4")
    assert result.exit_code == 1
    assert "SD 2.x identities" in result.output and "AnimateDiff" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "avi"], "unknown video format 'avi'"),
        (["-o", "clip.avi"], "unknown video format 'avi'"),
        (["--format", "gif", "-o", "clip.mp4"], "does not end in .gif"),
        (["--frames", "0"], "--frames must be between 1 and 256, not 0"),
        (["--fps", "0"], "--fps must be between 1 and 120, not 0"),
        (["--size", "60x60"], "a multiple of 8"),
        (["--steps", "0"], "--steps must be between 1 and 1000, not 0"),
    ],
)
def test_bad_options_fail_before_loading(args: list[str], message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    store_identity(width=T2V_WIDTH)
    result = invoke("video", "alice dancing", "--video-model", "/nonexistent/model", *args)
    assert result.exit_code == 1
    assert result.output.startswith("error:") and message in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_refused_without_force(tmp_path: Path) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"keep me")
    result = invoke("video", "a person dancing", "--video-model", "/nonexistent/model", "-o", target)
    assert result.exit_code == 1 and "already exists" in result.output and "--force" in result.output
    assert target.read_bytes() == b"keep me"


def test_no_identity_default_name_and_force(tiny_t2v: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "video",
        "a person dancing",
        "--video-model",
        tiny_t2v,
        "--frames",
        2,
        "--size",
        "64x64",
        "--steps",
        1,
        "--seed",
        11,
        "--format",
        "gif",
    ]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "prompt names no stored identity" in first.output
    target = tmp_path / "a-person-dancing-11.gif"
    assert target.is_file() and read_frames(target).shape == (2, 64, 64, 3)
    assert "│ 11 " in first.output and "text-to-video" in first.output  # the table: seed, backend
    assert "already exists" in invoke(*args).output
    again = invoke(*args, "--force", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["path"] == str(target)


def test_animatediff_base_is_the_identitys_own_model(tiny_adapter: Path, tiny_model: Path) -> None:
    from dataclasses import replace

    from sid.video import VideoConfig, plan_job

    identity = store_identity(width=SD_WIDTH)
    IdentityStore().save(replace(identity, base_model=str(tiny_model)), overwrite=True)
    plan = plan_job(VideoConfig(prompt="alice dancing", video_model=str(tiny_adapter))).plan
    assert plan.backend == "animatediff" and plan.base == str(tiny_model)
    notes: list[str] = []
    IdentityStore().save(replace(store_identity("bob", width=768), base_model=""), overwrite=True)  # SD 1.x
    plan = plan_job(VideoConfig(prompt="bob dancing", video_model=str(tiny_adapter)), warn=notes.append).plan
    assert plan.base == "sd15" and notes == [
        "bob records no base model; using the default model (pass --model to choose)"
    ]


def test_sdxl_identity_animates_on_an_sdxl_base(tiny_adapter: Path, tiny_sdxl_model: Path) -> None:
    """AnimateDiff-SDXL: both halves of an SDXL identity reach both text encoders, and change the clip."""
    import torch

    from sid.render import prepare
    from sid.video import VideoConfig, load_video_pipeline, plan_video, video_frames

    rng = np.random.default_rng(0)
    vectors = {
        slot: rng.standard_normal((2, width)).astype(np.float32)
        for slot, width in (("te32", 32), ("te64", 64))
    }
    stored = Identity(name="xl", vectors=vectors, method="celebbasis", base_model=str(tiny_sdxl_model))
    IdentityStore().save(stored)
    plan = plan_video(VideoConfig("xl dancing", video_model=str(tiny_adapter)), [stored])
    assert plan.base == str(tiny_sdxl_model)  # the identity's own SDXL model is the base
    pipe = load_video_pipeline(plan, device="cpu")
    assert type(pipe).__name__ == "AnimateDiffSDXLPipeline"
    parsed, _ = prepare("xl dancing", IdentityStore(), pipe)
    encoders = ((pipe.tokenizer, pipe.text_encoder, "te32"), (pipe.tokenizer_2, pipe.text_encoder_2, "te64"))
    for tokenizer, encoder, slot in encoders:
        ids = tokenizer.convert_tokens_to_ids(["<sid-xl>", "<sid-xl>_1"])
        assert torch.equal(
            encoder.get_input_embeddings().weight[ids].detach(), torch.from_numpy(vectors[slot])
        )

    def clip(text: str) -> np.ndarray:
        return video_frames(pipe, text, seed=5, frames=2, steps=2, guidance=8.0, size=(64, 64))

    with_identity = clip(parsed.text)
    assert with_identity.shape == (2, 64, 64, 3)
    assert not np.array_equal(with_identity, clip("a person dancing"))


def test_sd15_adapter_preset_on_an_sdxl_base_is_refused_before_loading(tmp_path: Path) -> None:
    store_identity(width=768)
    result = invoke(
        "video", "alice dancing", "--model", "sdxl", "--video-model", "animatediff", "-o", tmp_path
    )
    assert result.exit_code == 1
    assert (
        "animatediff is made for SD 1.x base models" in result.output and "animatediff-sdxl" in result.output
    )
    assert list(tmp_path.iterdir()) == []


def test_sdxl_adapter_preset_on_the_identitys_sd15_base_names_that_base(tmp_path: Path) -> None:
    """No --model given: the refusal names the base the identity brought, not a --model never passed."""
    IdentityStore().save(
        Identity(
            name="alice",
            vectors={"clip_l": np.zeros((2, 768), np.float32)},
            method="stableidentity",
            base_model="sd15",
        )
    )
    result = invoke("video", "alice dancing", "--video-model", "animatediff-sdxl", "-o", tmp_path)
    assert result.exit_code == 1
    assert "animatediff-sdxl is made for SDXL base models, and the base model sd15 is SD 1.x" in result.output
    assert "--model sd15" not in result.output and list(tmp_path.iterdir()) == []


def test_sdxl_clip_on_a_folder_base_records_the_sdxl_backend_and_its_guidance(
    tiny_adapter: Path, tiny_sdxl_model: Path, tmp_path: Path
) -> None:
    """Base and adapter given as folders: only the loaded base tells SDXL, and the clip says so (its
    backend, and AnimateDiff-SDXL's default guidance in the file's settings)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    vectors = {s: rng.standard_normal((2, w)).astype(np.float32) for s, w in (("te32", 32), ("te64", 64))}
    IdentityStore().save(Identity(name="xl", vectors=vectors, method="stableidentity"))
    target = tmp_path / "clip.gif"
    args = ["--model", tiny_sdxl_model, "--video-model", tiny_adapter, "--frames", 2, "--size", "64x64"]
    result = invoke("video", "xl dancing", *args, "--steps", 1, "--device", "cpu", "-o", target, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["backend"] == "animatediff-sdxl"
    settings = json.loads(Image.open(target).info["comment"])["sid"]
    assert settings["backend"] == "animatediff-sdxl" and settings["guidance"] == 8.0
