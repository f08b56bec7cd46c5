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


@pytest.mark.parametrize("fmt", ["sid", "diffusers", "a1111", "comfyui", "invokeai"])
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
        ("alice", "invokeai", {"emb_params"}),  # InvokeAI's probe takes A1111's layout, not diffusers'
        ("xl", "comfyui", {"clip_l", "clip_g"}),
        ("xl", "invokeai", {"clip_l", "clip_g"}),
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


def test_export_help_names_a_format_for_every_tool() -> None:
    from sid.interop import FORMATS, TOOLS

    text = " ".join(runner.invoke(app, ["export", "--help"]).output.split())
    for tool, (fmt, _) in TOOLS.items():
        assert fmt in FORMATS and f"{tool}: --format {fmt}" in text
    assert "eos_token_id" in text  # the SDXL diffusers recipe's pooling line


def test_legacy_a1111_pt_with_a_pickled_parameter_dict_imports(tmp_path: Path) -> None:
    """Older A1111 files pickle string_to_param as a torch.nn.ParameterDict: allowed, and nothing else."""
    import torch

    vectors = torch.randn(2, 768)
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors)})
    path = tmp_path / "old.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": params, "name": "oldie", "step": 5}, path)
    result = runner.invoke(app, ["import", str(path)])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(IdentityStore().get("oldie").vectors["clip_l"], vectors.numpy())

    evil = tmp_path / "evil.pt"  # the allow-list is one class: a module that is not it still fails
    torch.save({"string_to_param": torch.nn.ModuleDict({"*": torch.nn.Linear(2, 2)})}, evil)
    refused = runner.invoke(app, ["import", str(evil), "--name", "evil"])
    assert refused.exit_code == 1 and "pickled code" in refused.output


def _a1111_png(path: Path, data: dict) -> None:
    """An embedding image as AUTOMATIC1111 saves one: base64 JSON in the sd-ti-embedding chunk."""
    import base64
    import json

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(data).encode()).decode())
    Image.new("RGB", (16, 16)).save(path, pnginfo=info)


def _a1111_pixels(picture: np.ndarray, payload: dict):
    """An embedding hidden in an image's pixels as AUTOMATIC1111 lays it out: zlib JSON, low nibbles in
    a block left of the picture and high nibbles right of it, behind one black column each, every
    nibble XOR-ed with its LCG key stream (here with a constant pattern in the high bits)."""
    import json
    import zlib

    from PIL import Image

    raw = np.frombuffer(zlib.compress(json.dumps(payload).encode(), 9), np.uint8)
    h = picture.shape[0]
    width = -(-raw.size // (h * 3))
    seed, key = 0, []
    for _ in range(h * width * 3):
        seed = (1664525 * seed + 1013904223) % 2**32
        key.append(seed % 255)
    key = (np.array(key, np.uint8) & 0x0F).reshape(h, width, 3)
    low = (np.resize(raw & 0x0F, (h, width, 3)) ^ key) | 0x80
    high = (np.resize(raw >> 4, (h, width, 3)) ^ key) | 0x40
    canvas = np.zeros((h, 2 * width + picture.shape[1] + 2, 3), np.uint8)
    canvas[:, :width], canvas[:, width + 1 : width + 1 + picture.shape[1]] = low, picture
    canvas[:, -width:] = high
    return Image.fromarray(canvas)


def test_a1111_embedding_images_import_from_their_chunk_or_their_pixels(tmp_path: Path) -> None:
    from PIL import Image

    from sid.embedding_image import key_stream

    # A1111's own test pins its generator's first values (its lcg() as uint8)
    reference = [253, 242, 127, 44, 157, 27, 239, 133, 38, 79, 167, 4, 177, 95, 130, 79, 78, 14]
    np.testing.assert_array_equal(key_stream(len(reference)), np.array(reference, np.uint8) & 0x0F)

    vectors = np.random.default_rng(3).standard_normal((2, 768)).astype(np.float32)
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": {"TORCHTENSOR": vectors.tolist()}},
        "name": "pictured",
        "step": 500,
        "sd_checkpoint": "abc",
    }
    _a1111_png(tmp_path / "pictured.png", data)
    result = runner.invoke(app, ["import", str(tmp_path / "pictured.png")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(IdentityStore().get("pictured").vectors["clip_l"], vectors)

    picture = np.random.default_rng(4).integers(16, 256, (64, 48, 3), dtype=np.uint8)
    _a1111_pixels(picture, {**data, "name": "hidden"}).save(tmp_path / "stripped.png")  # no text chunk
    result = runner.invoke(app, ["import", str(tmp_path / "stripped.png")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(IdentityStore().get("hidden").vectors["clip_l"], vectors)

    Image.fromarray(picture).save(tmp_path / "plain.png")
    _a1111_png(tmp_path / "broken.png", {"name": "x"})
    (tmp_path / "garbled.png").write_bytes(b"\x89PNG not really")
    for file, needle in (
        ("plain.png", "holds no AUTOMATIC1111 embedding"),
        ("broken.png", "no string_to_param"),
        ("garbled.png", "not a readable image"),
    ):
        refused = runner.invoke(app, ["import", str(tmp_path / file), "--name", "x"])
        assert refused.exit_code == 1 and needle in refused.output, refused.output


def test_diffusers_two_file_sdxl_embedding_imports_as_one_identity(tmp_path: Path) -> None:
    """diffusers' SDXL textual-inversion script writes one file per text encoder; together they are one
    SDXL identity, in either order, and it exports back to the same two tensors."""
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(4)
    big_l, g = (rng.standard_normal((2, w)).astype(np.float32) for w in (768, 1280))
    first, second = tmp_path / "learned_embeds.safetensors", tmp_path / "learned_embeds_2.safetensors"
    save_file({"<cat-toy>": big_l}, str(first))
    save_file({"<cat-toy>": g}, str(second))
    for name, files in (("toy", [first, second]), ("toy2", [second, first])):
        result = runner.invoke(app, ["import", *map(str, files), "--name", name])
        assert result.exit_code == 0, result.output
        identity = IdentityStore().get(name)
        assert set(identity.vectors) == {"clip_l", "clip_g"}
        np.testing.assert_array_equal(identity.vectors["clip_l"], big_l)
        np.testing.assert_array_equal(identity.vectors["clip_g"], g)
    out = tmp_path / "toy.safetensors"
    assert runner.invoke(app, ["export", "toy", "--format", "comfyui", "-o", str(out)]).exit_code == 0
    back = load_file(str(out))
    np.testing.assert_array_equal(back["clip_g"], g)

    save_file({"<x>": rng.standard_normal((2, 1024)).astype(np.float32)}, str(tmp_path / "sd2.safetensors"))
    wrong = runner.invoke(app, ["import", str(first), str(tmp_path / "sd2.safetensors"), "--name", "bad"])
    assert wrong.exit_code == 1 and "not the text encoders of one model family" in wrong.output
    assert "bad" not in IdentityStore().names()
