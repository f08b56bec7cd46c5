"""Export and import in every format, bit-exact; unsafe or malformed files are refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sid.cli import app
from sid.store import Identity, IdentityStore
from tests.test_store import make_identity

runner = CliRunner()


def sdxl_identity(name: str = "xl") -> Identity:
    rng = np.random.default_rng(5)
    return Identity(
        name=name,
        method="imported",
        vectors={
            "clip_l": rng.standard_normal((2, 768)).astype(np.float32),
            "clip_g": rng.standard_normal((2, 1280)).astype(np.float32),
        },
    )


@pytest.mark.parametrize("fmt", ["sid", "diffusers", "a1111", "comfyui"])
@pytest.mark.parametrize("make", [lambda: make_identity("alice", width=1024), lambda: sdxl_identity("alice")])
def test_round_trip_every_format(tmp_path: Path, fmt: str, make) -> None:
    original = make()
    IdentityStore().save(original)
    target = tmp_path / "out"
    target.mkdir()
    result = runner.invoke(app, ["export", "alice", "--format", fmt, "-o", str(target)])
    assert result.exit_code == 0, result.output
    exported = target / "alice.safetensors"  # A1111/ComfyUI take the trigger word from the file name
    imported = runner.invoke(app, ["import", str(exported), "--name", "back"])
    assert imported.exit_code == 0, imported.output
    back = IdentityStore().get("back")
    assert set(back.vectors) == set(original.vectors)
    for slot, vectors in original.vectors.items():
        np.testing.assert_array_equal(back.vectors[slot], vectors)


def test_export_layouts(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    IdentityStore().save(make_identity("alice", width=768))
    IdentityStore().save(sdxl_identity("xl"))
    for name, fmt, keys in [
        ("alice", "diffusers", {"<alice>"}),
        ("alice", "a1111", {"emb_params"}),
        ("xl", "comfyui", {"clip_l", "clip_g"}),
        ("xl", "diffusers", {"clip_l", "clip_g"}),
    ]:
        path = tmp_path / f"{name}-{fmt}.safetensors"
        assert runner.invoke(app, ["export", name, "--format", fmt, "-o", str(path)]).exit_code == 0
        tensors = load_file(str(path))
        assert set(tensors) == keys
        if name == "xl":
            assert tensors["clip_l"].shape == (2, 768) and tensors["clip_g"].shape == (2, 1280)
    bad = runner.invoke(app, ["export", "alice", "--format", "ckpt", "-o", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 1 and "unknown export format" in bad.output


def test_diffusers_loads_the_export(tmp_path: Path, tiny_model: Path) -> None:
    from diffusers import StableDiffusionPipeline

    identity = make_identity("alice", width=32)
    IdentityStore().save(identity)
    path = tmp_path / "alice.safetensors"
    assert runner.invoke(app, ["export", "alice", "--format", "diffusers", "-o", str(path)]).exit_code == 0
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model))
    pipe.load_textual_inversion(str(path))
    ids = pipe.tokenizer.convert_tokens_to_ids(["<alice>", "<alice>_1"])
    rows = pipe.text_encoder.get_input_embeddings().weight[ids].detach().numpy()
    np.testing.assert_array_equal(rows, identity.vectors["te32"])


def test_legacy_a1111_pt_import(tmp_path: Path) -> None:
    import torch

    vectors = torch.randn(3, 768)
    path = tmp_path / "charturner.pt"
    torch.save(
        {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "charturner", "step": 100},
        path,
    )
    result = runner.invoke(app, ["import", str(path)])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(IdentityStore().get("charturner").vectors["clip_l"], vectors.numpy())


class Boom:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "PWNED",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": torch.zeros(2, 768)}, "name": Boom()}, path)
    raw = tmp_path / "evil2.bin"
    raw.write_bytes(pickle.dumps(Boom()))
    for file in (path, raw):
        result = runner.invoke(app, ["import", str(file), "--name", "evil"])
        assert result.exit_code == 1 and (
            "pickled code" in result.output or "not a readable" in result.output
        )
    assert not (Path(__file__).parent / "PWNED").exists()
    assert IdentityStore().names() == []


def test_malformed_embeddings_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    cases = {
        "nan.safetensors": ({"emb_params": np.full((2, 768), np.nan, np.float32)}, "NaN"),
        "flat.safetensors": ({"emb_params": np.zeros((2, 3, 768), np.float32)}, "not (vectors, width)"),
        "many.safetensors": (
            {"a": np.zeros((2, 768), np.float32), "b": np.zeros((2, 768), np.float32)},
            "unrecognised embedding layout",
        ),
    }
    for file, (tensors, needle) in cases.items():
        save_file(tensors, str(tmp_path / file))
        result = runner.invoke(app, ["import", str(tmp_path / file), "--name", "x"])
        assert result.exit_code == 1 and needle in result.output, (file, result.output)
    assert IdentityStore().names() == []


def test_import_needs_a_name_when_none_can_be_inferred(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "9 lives.safetensors"
    save_file({"emb_params": np.ones((2, 768), np.float32)}, str(path))
    result = runner.invoke(app, ["import", str(path)])
    assert result.exit_code == 1 and "pass --name" in result.output
    assert runner.invoke(app, ["import", str(path), "--name", "cat"]).exit_code == 0
