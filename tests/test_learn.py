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


def learn(*args: str):
    return runner.invoke(app, ["learn", *args])


@pytest.fixture
def tiny_config(tiny_model: Path, facepack: Path, tiny_vit: Path, tiny_parser: Path):
    """LearnConfig(**knobs) on the tiny model, CPU, the real face pack and the tiny ViT and parser."""
    from sid.train import LearnConfig

    def make(**knobs):
        models = {"vit_model": str(tiny_vit), "face_parser": str(tiny_parser)}
        return LearnConfig(model=str(tiny_model), device="cpu", face_models=str(facepack), **models, **knobs)

    return make


def test_learn_both_methods(
    face_photos: Path, learn_args: list[str], tiny_vit: Path, tiny_parser: Path
) -> None:
    photo = str(face_photos / "obama_1.jpg")
    vectors = {}
    # each paper's own face encoder and mask: the ViT and the parser's mask for StableIdentity,
    # ArcFace and no mask (its loss has none) for Celeb Basis
    faces_used = {
        "stableidentity": ("vit", str(tiny_vit.resolve()), str(tiny_parser.resolve())),
        "celebbasis": ("arcface", None, None),
    }
    for method in ("stableidentity", "celebbasis"):
        name = f"alice_{method[:2]}"
        result = learn(photo, "--name", name, "--method", method, "--steps", "30", "--json", *learn_args)
        assert result.exit_code == 0, result.output
        (info,) = json.loads(result.stdout)
        assert info["slots"] == {"te32": 32} and info["num_vectors"] == 2  # the tiny text encoder's width
        assert info["method"] == method and info["settings"]["steps"] == 30
        used = (
            info["settings"]["face_encoder"],
            info["settings"]["vit_model"],
            info["settings"]["mask_source"],
        )
        assert used == faces_used[method]
        batch = {"stableidentity": 1, "celebbasis": 2}[method]
        assert info["settings"]["bank_size"] == 30 * batch  # one fresh augmentation per training sample
        assert info["settings"]["prior"]["file"] == PRIOR_LISTS[method].file
        schedule = info["settings"]["noise_schedule"]  # trained on DDPM noise, not the folder's DDIM sampler
        assert (schedule["class"], schedule["from"]) == ("DDPMScheduler", "DDIMScheduler")
        assert info["settings"]["seed"] == 0 and np.isfinite(info["final_loss"])
        assert info["thumbnail"] == "embedded" and IdentityStore().thumbnail(name).startswith(b"\x89PNG")
        assert len(info["photo_sha256"]) == 64
        vectors[method] = IdentityStore().get(name).vectors["te32"]
        assert np.isfinite(vectors[method]).all()
    assert not np.allclose(vectors["stableidentity"], vectors["celebbasis"], atol=1e-3)


def test_loss_falls_in_an_easy_deterministic_setting(face_photos: Path, tiny_config) -> None:
    """One latent, noise, timestep and template every step: the mapper can only lower the loss."""
    from sid.train import learn as run

    for method, lr in (("stableidentity", 1e-3), ("celebbasis", 1e-2)):
        cfg = tiny_config(method=method, steps=30, lr=lr, batch_size=1, bank_size=1, overfit=True, seed=1)
        losses = np.array(run([face_photos / "obama_1.jpg"], [f"o_{method[:2]}"], cfg).losses)
        assert len(losses) == 30
        assert losses[-10:].mean() < losses[:10].mean(), (method, losses)


def test_same_seed_same_identity(face_photos: Path, tiny_config) -> None:
    from sid.train import learn as run

    def vectors(seed: int, name: str) -> np.ndarray:
        cfg = tiny_config(steps=6, seed=seed, bank_size=4)
        return run([face_photos / "obama_2.jpg"], [name], cfg).identities[0].vectors["te32"]

    a, b, c = vectors(3, "ann"), vectors(3, "ben"), vectors(4, "cyd")
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
    shared = {k: v for k, v in a.settings.items() if k != "photos_sha256"}  # each lists its own photo
    assert shared == {k: v for k, v in b.settings.items() if k != "photos_sha256"}
    assert a.settings["photos_sha256"] == [a.photo_sha256] and b.settings["photos_sha256"] == [b.photo_sha256]
    assert not np.allclose(a.vectors["te32"], b.vectors["te32"])
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
        "--steps must be between 1 and 100000, not 0": [photo, "--name", "y", "--steps", "0"],
        "unknown mask 'hull'": [photo, "--name", "y", "--mask", "hull"],
        "unknown face encoder": [photo, "--name", "y", "--face-encoder", "clip"],
    }
    for needle, args in cases.items():
        result = learn(*args, "--quiet", *learn_args)
        assert result.exit_code == 1 and needle in result.output, (needle, result.output)
    for flag, role in (("--vit-model", "face encoder"), ("--face-parser", "face parser")):  # after learn_args
        result = learn(photo, "--name", "y", "--quiet", "--steps", "2", *learn_args, flag, "nobody/x")
        assert result.exit_code == 1 and f"could not load the {role} 'nobody/x'" in result.output, (
            result.output
        )
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


def test_landmark_mask_and_arcface_are_opt_ins(face_photos: Path, learn_args: list[str]) -> None:
    photo = str(face_photos / "obama_1.jpg")
    args = ["--steps", "2", "--json", "--mask", "landmarks", "--face-encoder", "arcface", *learn_args]
    result = learn(photo, "--name", "alice", *args)
    assert result.exit_code == 0, result.output
    (info,) = json.loads(result.stdout)
    settings = info["settings"]
    assert settings["face_encoder"] == "arcface" and settings["vit_model"] is None
    assert settings["mask"] == "landmarks" and settings["face_parser"] is None
    assert settings["mask_source"] == "landmarks"


def test_unavailable_default_parser_falls_back_to_landmarks_once(
    face_photos: Path, tiny_model: Path, facepack: Path, tiny_vit: Path, monkeypatch
) -> None:
    """Offline, with the default parser not cached: one warning, the landmark mask, and the ViT found
    through $SID_VIT_MODEL."""
    from huggingface_hub import try_to_load_from_cache

    from sid.face_transformers import FACE_PARSER

    if isinstance(try_to_load_from_cache(FACE_PARSER, "config.json"), str):
        pytest.skip(f"{FACE_PARSER} is in this machine's Hugging Face cache")
    monkeypatch.setenv("SID_VIT_MODEL", str(tiny_vit))
    args = ["--model", str(tiny_model), "--face-models", str(facepack), "--device", "cpu", "--steps", "2"]
    result = learn(str(face_photos / "obama_1.jpg"), "--name", "alice", "--quiet", *args)
    assert result.exit_code == 0, result.output
    assert result.output.count(f"could not load the face parser '{FACE_PARSER}'") == 1
    assert "face landmarks instead" in result.output
    settings = IdentityStore().get("alice").settings
    assert settings["face_parser"] == FACE_PARSER and settings["mask_source"] == "landmarks"
    assert settings["vit_model"] == str(tiny_vit.resolve())


def synthetic_crop():
    """An aligned crop with a face mask (left half of the lower face), hair above it and a random photo."""
    from PIL import Image

    from sid.faces import FaceCrop

    face = np.zeros((512, 512), np.float32)
    face[128:448, 64:256] = 1  # left half of the lower face
    hair = np.zeros((512, 512), np.float32)
    hair[:96, 64:256] = 1  # the band above it
    rgb = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    return FaceCrop(
        image=Image.fromarray(rgb),
        arcface_crop=np.zeros((112, 112, 3), np.uint8),
        embedding=np.ones(8, np.float32),
        mask=face,
        hair_mask=hair,
        mask_source="parser",
        bbox=(0.0, 0.0, 1.0, 1.0),
        keypoints=np.zeros((5, 2), np.float32),
        score=1.0,
        num_faces=1,
        photo_sha256="0" * 64,
    )


def test_bank_carries_binary_face_and_hair_masks_through_one_augmentation() -> None:
    """The hair mask takes the same geometry as the face mask; both are 0/1 at latent size."""
    import torch

    from sid.faces import FaceCrop
    from sid.testing import tiny_vae
    from sid.train import build_bank

    crop = synthetic_crop()
    bank = build_bank(crop, tiny_vae(), 64, 16, torch.Generator().manual_seed(0), "stableidentity", "cpu")
    assert bank.latents.shape == (16, 4, 8, 8)
    assert bank.masks.shape == bank.hair_masks.shape == (16, 1, 8, 8)
    for masks in (bank.masks, bank.hair_masks):
        assert set(masks.unique().tolist()) <= {0.0, 1.0} and masks.sum() > 0
    assert not (bank.masks * bank.hair_masks).any()  # disjoint before, disjoint after
    for m, h in zip(bank.masks, bank.hair_masks, strict=True):
        if m.any() and h.any():  # the hair stays above the face, over the same columns (flipped or not)
            assert h.nonzero()[:, 1].float().mean() < m.nonzero()[:, 1].float().mean()
            # to within one pixel of this 8x8 latent: a sliver of hair may fall beside the face's centre
            assert abs(h.nonzero()[:, 2].float().mean() - m.nonzero()[:, 2].float().mean()) <= 1
    assert bank.flips.any() and not bank.flips.all()
    no_hair = build_bank(
        FaceCrop(**{**crop.__dict__, "hair_mask": None}),
        tiny_vae(),
        64,
        2,
        torch.Generator(),
        "stableidentity",
        "cpu",
    )
    latents, _, hair_masks, _ = no_hair.sample(3, 0)  # three draws from two entries wrap around
    assert no_hair.hair_masks is None and hair_masks is None
    assert torch.equal(latents[2], latents[0]) and not torch.equal(latents[1], latents[0])


@pytest.mark.parametrize("method", ["stableidentity", "celebbasis"])
def test_bank_is_the_same_at_any_chunk(method: str) -> None:
    """A bank encoded in large chunks (as a GPU with free memory does) is bit for bit the bank of
    chunks of 4 that sid always built: augment 4 photos, encode them, sample 4 latents, and so on."""
    import torch

    from sid.augment import augment_batch
    from sid.bank import build_bank
    from sid.testing import tiny_vae

    crop = synthetic_crop()
    vae = tiny_vae()
    gen = torch.Generator().manual_seed(3)
    image = torch.from_numpy(np.asarray(crop.image.resize((64, 64)), np.float32) / 127.5 - 1).permute(2, 0, 1)
    mask = torch.nn.functional.interpolate(
        torch.from_numpy(np.stack([crop.mask, crop.hair_mask]).astype(np.float32))[None], size=(64, 64)
    )[0]
    reference = []
    with torch.no_grad():
        for start in range(0, 10, 4):
            images, _, _ = augment_batch(image, mask, min(4, 10 - start), gen, method)
            latent = vae.encode(images).latent_dist.sample(generator=gen) * vae.config.scaling_factor
            reference.append(latent)
    reference = torch.cat(reference)
    banks = [
        build_bank(crop, vae, 64, 10, torch.Generator().manual_seed(3), method, "cpu", chunk=chunk)
        for chunk in (None, 4, 8, 6, 64)  # None on CPU: chunks of 4; 6 rounds down to 4
    ]
    assert torch.equal(banks[0].latents, reference)
    for bank in banks[1:]:
        assert torch.equal(bank.latents, banks[0].latents)
        assert torch.equal(bank.masks, banks[0].masks) and torch.equal(bank.hair_masks, banks[0].hair_masks)
        assert torch.equal(bank.flips, banks[0].flips)


def test_binary_latent_masks() -> None:
    import torch

    from sid.train import binary_latent_masks

    masks = torch.zeros(1, 2, 512, 512)
    masks[0, 0, 128:384, 128:384] = 1
    masks[0, 1, :, :256] = 0.4  # under the threshold everywhere
    small = binary_latent_masks(masks, (64, 64))
    assert small.shape == (1, 2, 64, 64) and set(small.unique().tolist()) == {0.0, 1.0}
    assert abs(small[0, 0].sum().item() - 32 * 32) <= 2 * 32  # the square, to within an edge row
    assert small[0, 1].sum() == 0


def test_recipe_steps_are_per_identity() -> None:
    from sid.train import LearnConfig, run_length

    assert run_length(LearnConfig(method="celebbasis"), 3) == (1200, 2, 1e-2)  # 400 x N, as its code
    assert run_length(LearnConfig(method="celebbasis", steps=8, lr=0.5), 2) == (8, 2, 0.5)
    assert run_length(LearnConfig(), 1) == (451, 1, 5e-5)


def test_celebbasis_defaults_to_sd15(
    face_photos: Path, facepack: Path, tiny_vit: Path, tiny_parser: Path
) -> None:
    """Without --model each method asks for its paper's base model (offline here, so the error names it)."""
    common = ["--face-models", str(facepack), "--device", "cpu"]
    common += ["--vit-model", str(tiny_vit), "--face-parser", str(tiny_parser)]
    for method, preset in (("celebbasis", "sd15"), ("stableidentity", "sd21")):
        result = learn(str(face_photos / "obama_1.jpg"), "--name", "x", "--method", method, *common)
        assert result.exit_code != 0 and f"could not load model {preset!r}" in result.output, result.output
    assert not IdentityStore().names()


def test_inject_vectors_writes_the_slots_vectors_at_the_placeholders_only() -> None:
    """The loop assigns ``slot.vectors``; the embedding rows at placeholder ids become them, with grads."""
    import torch

    from sid.prompts import inject_vectors
    from sid.testing import tiny_text_encoder

    encoder = tiny_text_encoder(width=32)
    embed = encoder.get_input_embeddings()
    ids = torch.tensor([[1, 5, 6, 2], [5, 6, 3, 3]])
    plain = embed(ids).detach()
    vectors = torch.randn(2, 2, 32, requires_grad=True)
    with inject_vectors([(encoder, [5, 6])]) as slot:
        with pytest.raises(RuntimeError, match="assign slot.vectors"):
            embed(ids)
        slot.vectors = vectors
        out = embed(ids)
        encoder(ids)[0].sum().backward()  # the model's own forward reaches the vectors
    assert torch.equal(out[0, 1], vectors[0, 0]) and torch.equal(out[0, 2], vectors[0, 1])
    assert torch.equal(out[1, 0], vectors[1, 0]) and torch.equal(out[1, 1], vectors[1, 1])
    assert torch.equal(out[0, [0, 3]], plain[0, [0, 3]]) and torch.equal(out[1, 2:], plain[1, 2:])
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0
    assert torch.equal(embed(ids), plain)  # the hook is gone on exit


def test_inject_vectors_gives_each_encoder_its_own_part() -> None:
    """SDXL: one (B, K, 32 + 64) tensor, the first 32 dims to encoder 1, the other 64 to encoder 2."""
    import torch

    from sid.prompts import inject_vectors
    from sid.testing import tiny_text_encoder

    first, second = tiny_text_encoder(width=32), tiny_text_encoder(width=64, seed=1)
    ids = torch.tensor([[1, 7, 8, 2]])
    vectors = torch.randn(1, 2, 96)
    with inject_vectors([(first, [7, 8]), (second, [7, 8])]) as slot:
        slot.vectors = vectors
        one, two = first.get_input_embeddings()(ids), second.get_input_embeddings()(ids)
    assert torch.equal(one[0, 1:3], vectors[0, :, :32]) and torch.equal(two[0, 1:3], vectors[0, :, 32:])


def test_loss_log_moves_losses_off_the_device_only_on_flush() -> None:
    import math

    import torch

    from sid.losslog import WINDOW, LossLog

    log = LossLog()
    for value in range(WINDOW + 5):
        log.add(torch.tensor(float(value)))
    assert log.values == [] and math.isnan(log.smoothed())  # nothing read back yet
    assert log.flush() == [float(v) for v in range(WINDOW + 5)] and log.pending == []
    assert log.smoothed() == sum(range(5, WINDOW + 5)) / WINDOW  # the last WINDOW steps
    log.add(torch.tensor(100.0))
    assert len(log.flush()) == WINDOW + 6 and log.values[-1] == 100.0


def test_default_bank_is_one_entry_per_sample_and_bounded() -> None:
    """The bank the papers imply (one fresh augmentation per sample) unless that would exceed the bound
    --bank-size has: a 100k-step run reuses 2048 entries rather than ask for 100k VAE encodes."""
    from sid.limits import LIMITS
    from sid.train import default_bank_size

    assert default_bank_size(451, 1, 1) == 451
    assert default_bank_size(800, 2, 2) == 800  # 400 steps per identity, batch 2
    cap = LIMITS["learn"]["bank_size"].high
    assert default_bank_size(100_000, 64, 1) == cap and default_bank_size(100_000, 1, 1) == cap


def test_a_checkpoint_of_another_mapper_layout_is_a_clear_error(tmp_path: Path) -> None:
    """A checkpoint whose mapper parameters differ (another sid version's mapper) is refused with a
    fix, not a state-dict traceback."""
    import torch

    from sid.checkpoints import load_state, save_state
    from sid.errors import BadInput

    old, new = torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.nn.Sequential(torch.nn.Linear(2, 3))
    path, gen = tmp_path / "learn-x.safetensors", torch.Generator()
    save_state(path, old, torch.optim.AdamW(old.parameters()), gen, 1, [0.5], {"format": "sid-learn"})
    with pytest.raises(BadInput, match="does not fit this run") as caught:
        load_state(path, new, torch.optim.AdamW(new.parameters()), gen)
    assert "without --resume" in caught.value.hint


def test_storing_drops_the_half_written_checkpoint_a_kill_left(tmp_path: Path) -> None:
    """A run killed while writing its checkpoint leaves a temp file (named as tests/test_outputs.py
    shows atomic writes name them); the run that finishes deletes it, and nobody else's."""
    from sid.train import drop_checkpoints

    ckpt = tmp_path / "learn-k.safetensors"
    stray = tmp_path / ".learn-k.safetensors.x1y2.tmp.safetensors"
    others = tmp_path / ".learn-kk.safetensors.x1y2.tmp.safetensors"
    for path in (stray, others):
        path.write_bytes(b"half")
    drop_checkpoints(ckpt, {"names": '["alice"]'})
    assert not stray.exists() and others.exists()


# -- several photos, one identity -----------------------------------------------------------------
# every 8th dimension of the (2, 32) vectors that one photo gave before several photos were supported
# (obama_2, 6 steps, bank 4, seed 2), produced by that code, not by hand
ONE_PHOTO = {
    "stableidentity": [
        [0.01816098764538765, 0.004197006579488516, -0.007053402252495289, -0.02911578118801117],
        [-0.0007370724342763424, -0.008569891564548016, -0.009093784727156162, -0.01892300322651863],
    ],
    "celebbasis": [
        [-0.035298626869916916, 0.040450457483530045, 0.03220401331782341, 0.052217088639736176],
        [-0.0036497085820883512, 0.02010999619960785, 0.03046996518969536, 0.06602869182825089],
    ],
}


def test_one_photo_is_bit_identical_to_before_several_photos(face_photos: Path, tiny_config) -> None:
    from sid.train import learn as run

    for method, pinned in ONE_PHOTO.items():
        cfg = tiny_config(method=method, steps=6, bank_size=4, seed=2)
        (identity,) = run([face_photos / "obama_2.jpg"], [f"p{method[:2]}"], cfg).identities
        np.testing.assert_array_equal(identity.vectors["te32"][:, ::8], np.float32(pinned))
        assert identity.settings["photos_sha256"] == [identity.photo_sha256]


def test_several_photos_make_one_identity_and_every_photo_counts(face_photos: Path, tiny_config) -> None:
    """One name, several photos: one identity whose metadata lists every photo, whose thumbnail is the
    first photo's face, and whose vectors change when any photo is left out (StableIdentity: the mean
    of the mapper on each photo; Celeb Basis: the moving average over every photo's samples)."""
    from sid.photos import photo_sha256
    from sid.train import learn as run

    one, two, three = (face_photos / f"obama_{i}.jpg" for i in (1, 2, 3))
    for method in ("stableidentity", "celebbasis"):
        cfg = tiny_config(method=method, steps=6, bank_size=6, seed=1)

        def vectors(photos: list[Path], name: str, cfg=cfg) -> np.ndarray:
            (identity,) = run(photos, [name], cfg, force=True).identities
            return identity.vectors["te32"]

        every = vectors([one, two, three], f"all_{method[:2]}")
        stored = IdentityStore().get(f"all_{method[:2]}")
        expected = [photo_sha256(p.read_bytes()) for p in (one, two, three)]
        assert stored.settings["photos_sha256"] == expected and stored.photo_sha256 == expected[0]
        first_alone = vectors([one], f"one_{method[:2]}")
        assert stored.thumbnail_png == IdentityStore().get(f"one_{method[:2]}").thumbnail_png
        for left_out in ([two, three], [one, three], [one, two]):
            assert not np.allclose(every, vectors(left_out, "x"), atol=1e-6), (method, left_out)
        assert not np.allclose(every, first_alone, atol=1e-6)


def test_a_photo_of_someone_else_is_named_and_face_applies_to_each_photo(
    face_photos: Path, learn_args: list[str]
) -> None:
    photos = [str(face_photos / n) for n in ("obama_1.jpg", "obama_2.jpg", "biden_1.jpg")]
    result = learn(*photos, "--name", "mixed", "--steps", "2", "--quiet", *learn_args)
    assert result.exit_code == 0, result.output
    assert "biden_1.jpg does not look like the other photos of mixed" in " ".join(result.stderr.split())
    assert "obama_1.jpg does not" not in result.stderr
    clean = learn(*photos[:2], "--name", "clean", "--steps", "2", "--quiet", *learn_args)
    assert clean.exit_code == 0 and "does not look like" not in clean.stderr

    wrong = learn(*photos[:2], "--name", "twice", "--face", "2", "--steps", "2", "--quiet", *learn_args)
    assert wrong.exit_code == 1 and "face 2 asked for, but" in wrong.output and "obama_1.jpg" in wrong.output
    assert "twice" not in IdentityStore().names()
