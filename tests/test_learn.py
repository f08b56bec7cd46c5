"""`sid learn` end to end on a tiny offline pipeline with the real face stack (../shared)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sid.cli import app
from sid.priors import PRIOR_LISTS
from sid.store import IdentityStore

runner = CliRunner()


@pytest.fixture
def learn_args(tiny_model: Path, facepack: Path) -> list[str]:
    return ["--model", str(tiny_model), "--face-models", str(facepack), "--device", "cpu"]


def learn(*args: str):
    return runner.invoke(app, ["learn", *args])


def test_learn_both_methods(face_photos: Path, learn_args: list[str]) -> None:
    photo = str(face_photos / "obama_1.jpg")
    vectors = {}
    for method in ("stableidentity", "celebbasis"):
        name = f"alice_{method[:2]}"
        result = learn(photo, "--name", name, "--method", method, "--steps", "30", "--json", *learn_args)
        assert result.exit_code == 0, result.output
        (info,) = json.loads(result.stdout)
        assert info["slots"] == {"te32": 32} and info["num_vectors"] == 2  # the tiny text encoder's width
        assert info["method"] == method and info["settings"]["steps"] == 30
        batch = {"stableidentity": 1, "celebbasis": 2}[method]
        assert info["settings"]["bank_size"] == 30 * batch  # one fresh augmentation per training sample
        assert info["settings"]["prior"]["file"] == PRIOR_LISTS[method].file
        schedule = info["settings"]["noise_schedule"]  # trained on DDPM noise, not the folder's DDIM sampler
        assert (schedule["class"], schedule["from"]) == ("DDPMScheduler", "DDIMScheduler")
        assert info["settings"]["seed"] == 0 and np.isfinite(info["final_loss"])
        assert info["thumbnail"] and Path(info["thumbnail"]).is_file()
        assert len(info["photo_sha256"]) == 64
        vectors[method] = IdentityStore().get(name).vectors["te32"]
        assert np.isfinite(vectors[method]).all()
    assert not np.allclose(vectors["stableidentity"], vectors["celebbasis"], atol=1e-3)


def test_loss_falls_in_an_easy_deterministic_setting(
    face_photos: Path, tiny_model: Path, facepack: Path
) -> None:
    """One latent, noise, timestep and template every step: the mapper can only lower the loss."""
    from sid.train import LearnConfig
    from sid.train import learn as run

    for method, lr in (("stableidentity", 1e-3), ("celebbasis", 1e-2)):
        cfg = LearnConfig(
            method=method,
            model=str(tiny_model),
            steps=30,
            lr=lr,
            batch_size=1,
            bank_size=1,
            device="cpu",
            face_models=str(facepack),
            overfit=True,
            seed=1,
        )
        losses = np.array(run([face_photos / "obama_1.jpg"], [f"o_{method[:2]}"], cfg).losses)
        assert len(losses) == 30
        assert losses[-10:].mean() < losses[:10].mean(), (method, losses)


def test_same_seed_same_identity(face_photos: Path, tiny_model: Path, facepack: Path) -> None:
    from sid.train import LearnConfig
    from sid.train import learn as run

    def vectors(seed: int, name: str) -> np.ndarray:
        cfg = LearnConfig(
            model=str(tiny_model), steps=6, device="cpu", face_models=str(facepack), seed=seed, bank_size=4
        )
        return run([face_photos / "obama_2.jpg"], [name], cfg).identities[0].vectors["te32"]

    a, b, c = vectors(3, "a"), vectors(3, "b"), vectors(4, "c")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_joint_learning_stores_both(face_photos: Path, learn_args: list[str]) -> None:
    result = learn(
        str(face_photos / "obama_1.jpg"),
        str(face_photos / "biden_2.jpg"),
        "--name",
        "obama",
        "--name",
        "biden",
        "--method",
        "celebbasis",
        "--steps",
        "8",
        "--quiet",
        *learn_args,
    )
    assert result.exit_code == 0, result.output
    store = IdentityStore()
    assert store.names() == ["biden", "obama"]
    a, b = store.get("obama"), store.get("biden")
    assert a.settings == b.settings and not np.allclose(a.vectors["te32"], b.vectors["te32"])
    assert a.settings["bank_size"] == 8  # 4 steps each at batch 2: a fresh augmentation per sample
    assert a.photo_sha256 != b.photo_sha256


def test_bad_input_is_refused_and_store_untouched(
    face_photos: Path, learn_args: list[str], tmp_path: Path
) -> None:
    photo = str(face_photos / "obama_1.jpg")
    assert learn(photo, "--name", "alice", "--steps", "2", "--quiet", *learn_args).exit_code == 0
    before = IdentityStore().get("alice").vectors["te32"].copy()
    cases = {
        "already exists": [photo, "--name", "ALICE"],
        "joint learning": [photo, photo, "--name", "x", "--name", "y"],
        "not found": [str(tmp_path / "missing.jpg"), "--name", "y"],
        "invalid identity name": [photo, "--name", "../y"],
        "unknown method": [photo, "--name", "y", "--method", "dreambooth"],
        "--steps must be at least 1": [photo, "--name", "y", "--steps", "0"],
    }
    for needle, args in cases.items():
        result = learn(*args, "--quiet", *learn_args)
        assert result.exit_code == 1 and needle in result.output, (needle, result.output)
    from PIL import Image
    from skimage import data

    cat = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(cat)
    result = learn(str(cat), "--name", "cat", "--quiet", "--steps", "2", *learn_args)
    assert result.exit_code == 1 and "no face found" in result.output
    assert IdentityStore().names() == ["alice"]
    np.testing.assert_array_equal(IdentityStore().get("alice").vectors["te32"], before)
    forced = learn(photo, "--name", "alice", "--steps", "2", "--seed", "9", "--force", "--quiet", *learn_args)
    assert forced.exit_code == 0 and not np.array_equal(IdentityStore().get("alice").vectors["te32"], before)


def test_killed_run_leaves_store_unchanged_and_resumes(
    face_photos: Path, learn_args: list[str], isolated_home: Path
) -> None:
    args = [
        sys.executable,
        "-m",
        "sid",
        "learn",
        str(face_photos / "obama_1.jpg"),
        "--name",
        "alice",
        "--steps",
        "400",
        "--checkpoint-every",
        "5",
        "--bank-size",
        "8",
        "--quiet",
        *learn_args,
    ]
    proc = subprocess.Popen(args, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = isolated_home / "partial"
    deadline = time.time() + 240
    while not list(partial.glob("*.safetensors")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    assert list(partial.glob("*.safetensors")), "no checkpoint was written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert IdentityStore().names() == []
    assert not [p for p in (isolated_home / "identities").glob("*") if p.name != ".lock"]
    resumed = subprocess.run(
        args + ["--resume"], env=dict(os.environ), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    match = [line for line in resumed.stderr.splitlines() if line.startswith("Resumed from step")]
    assert match and int(match[0].split()[-1].rstrip(".")) >= 5
    assert IdentityStore().names() == ["alice"]
    assert IdentityStore().get("alice").settings["steps"] == 400
    assert not list(partial.glob("*.safetensors"))  # the checkpoint is gone once the identity is stored


def test_recipe_steps_are_per_identity() -> None:
    from sid.train import LearnConfig, run_length

    assert run_length(LearnConfig(method="celebbasis"), 3) == (1200, 2, 1e-2)  # 400 x N, as its code
    assert run_length(LearnConfig(method="celebbasis", steps=8, lr=0.5), 2) == (8, 2, 0.5)
    assert run_length(LearnConfig(), 1) == (451, 1, 5e-5)


def test_celebbasis_defaults_to_sd15(face_photos: Path, facepack: Path) -> None:
    """Without --model each method asks for its paper's base model (offline here, so the error names it)."""
    common = ["--face-models", str(facepack), "--device", "cpu"]
    for method, preset in (("celebbasis", "sd15"), ("stableidentity", "sd21")):
        result = learn(str(face_photos / "obama_1.jpg"), "--name", "x", "--method", method, *common)
        assert result.exit_code != 0 and f"could not load model {preset!r}" in result.output, result.output
    assert not IdentityStore().names()
