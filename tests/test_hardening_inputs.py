"""Issue 24, inputs (points 6 and 7): every input a user can get wrong reads as their error — usage
errors as click's usage message (exit 2), the rest as one line naming the problem and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from safetensors.numpy import save_file
from typer.testing import CliRunner

from sid.cli import app
from sid.store import IdentityStore, read_header
from tests.helpers import interrupted_at_first_checkpoint, one_error
from tests.test_store import make_identity

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands


def _params(command: str, kind: str) -> list:
    return [p for p in COMMANDS[command].params if type(p).__name__ == kind]


def _number_option(command: str) -> str | None:
    numbers = (int, float)
    for p in _params(command, "TyperOption"):
        if p.type_descriptor.annotation in numbers:
            return p.opts[0]
    return None


def _required_args(command: str) -> list[str]:
    """Values for a command's required arguments (a bad value must be judged, not a missing one)."""
    return ["x" for p in _params(command, "TyperArgument") if p.required]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_reads_usage_errors_as_usage_errors(command: str) -> None:
    unknown = runner.invoke(app, [command, *_required_args(command), "--no-such-option"])
    assert unknown.exit_code == 2 and "No such option: --no-such-option" in unknown.output, unknown.output
    assert "Usage: " in unknown.output and "bug in sid" not in unknown.output
    if _required_args(command):
        missing = runner.invoke(app, [command])
        assert missing.exit_code == 2 and "Missing argument" in missing.output, missing.output
    number = _number_option(command)
    if number is not None:
        bad = runner.invoke(app, [command, *_required_args(command), number, "abc"])
        assert bad.exit_code == 2 and "Invalid value" in bad.output, bad.output
        assert "bug in sid" not in bad.output


def test_usage_errors_name_the_closest_command_and_option() -> None:
    typo = runner.invoke(app, ["rendr", "x"])
    assert typo.exit_code == 2 and "Did you mean 'render'?" in typo.output, typo.output
    option = runner.invoke(app, ["ls", "--jsn"])
    assert option.exit_code == 2 and "--json" in option.output, option.output


# -- point 7: each input that read as "bug in sid" or a misleading message ----------------------------
@pytest.fixture(scope="module")
def sd_controlnet(tiny_model: Path, tmp_path_factory) -> Path:
    from diffusers import StableDiffusionPipeline

    from sid.testing import tiny_controlnet

    folder = tmp_path_factory.mktemp("cn") / "controlnet"
    tiny_controlnet(StableDiffusionPipeline.from_pretrained(str(tiny_model))).save_pretrained(str(folder))
    return folder


def test_a_controlnet_of_another_family_is_refused(
    tiny_sdxl_model: Path, sd_controlnet: Path, tmp_path: Path
) -> None:
    control = tmp_path / "control.png"
    Image.new("RGB", (64, 64), "white").save(control)
    args = ["render", "a castle", "--model", str(tiny_sdxl_model), "--control", str(control), "--steps", "1"]
    result = runner.invoke(
        app, [*args, "--controlnet", str(sd_controlnet), "-o", str(tmp_path / "out"), "-q"]
    )
    one_error(result, "is for another model family than a model with 32-d + 64-d text encoders")
    assert not (tmp_path / "out").exists()


def _tampered(path: Path, how: str) -> None:
    from safetensors.torch import load_file, save_file

    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return
    meta = read_header(path)[0]
    tensors = load_file(str(path))
    if how == "step not a number":
        meta["step"] = "two"
    elif how == "step out of range":
        meta["step"] = "999999"
    else:  # optimizer state of another shape
        key = next(k for k in tensors if k.startswith("opt.") and not k.endswith(".step"))
        tensors[key] = torch.zeros(3, 5)
    save_file(tensors, str(path), metadata=meta)


def test_a_damaged_checkpoint_is_refused_on_resume(
    face_photos: Path, learn_args: list[str], isolated_home: Path, monkeypatch
) -> None:
    args = ["learn", str(face_photos / "obama_1.jpg"), "--name", "alice", *learn_args, "-q"]
    args += ["--steps", "4", "--checkpoint-every", "2", "--bank-size", "2", "--mask", "landmarks"]
    with interrupted_at_first_checkpoint(monkeypatch):
        assert runner.invoke(app, args).exit_code == 130
    (ckpt,) = (isolated_home / "partial").glob("learn-*.safetensors")
    original = ckpt.read_bytes()
    for how in ("truncated", "step not a number", "step out of range", "optimizer state of another shape"):
        ckpt.write_bytes(original)
        _tampered(ckpt, how)
        line = one_error(runner.invoke(app, [*args, "--resume"]), "cannot be resumed")
        assert "without --resume" in line, how
    assert IdentityStore().names() == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('photo,name\na.jpg,alice\n"b.jpg,bob\n', "line 3: unexpected end of data"),
        ("photo,name\n" + "x" * 200_000 + ",carol\n", "line 2: field larger than field limit"),
        ("photo,name,photo\na.jpg,alice,b.jpg\n", "column photo appears twice"),
    ],
)
def test_a_malformed_manifest_is_one_line(text: str, needle: str, tmp_path: Path) -> None:
    manifest = tmp_path / "people.csv"
    manifest.write_text(text)
    one_error(runner.invoke(app, ["learn", "--from", str(manifest), "--device", "cpu"]), needle)


def test_deeply_nested_metadata_is_corrupt_metadata(tmp_path: Path) -> None:
    identity = make_identity("deep", width=32)
    path = tmp_path / "deep.safetensors"
    save_file(identity.vectors, str(path), metadata=identity.header() | {"settings": "[" * 100_000})
    one_error(runner.invoke(app, ["import", str(path)]), "nested too deeply")
    assert IdentityStore().names() == []


@pytest.mark.parametrize("flag", ["--vit-model", "--face-parser"])
def test_a_model_folder_of_the_wrong_kind_says_why(
    flag: str, face_photos: Path, facepack: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "not-a-vision-model"
    wrong.mkdir()
    (wrong / "config.json").write_text('{"model_type": "bert"}')
    args = ["learn", str(face_photos / "obama_1.jpg"), "--name", "alice", "--face-models", str(facepack)]
    args += ["--face-encoder", "vit", "--mask", "landmarks"] if flag == "--vit-model" else []
    result = runner.invoke(app, [*args, flag, str(wrong), "--model", "/nonexistent", "--device", "cpu", "-q"])
    (line,) = [
        line for line in result.output.splitlines() if str(wrong) in line
    ]  # error, or the mask's warning
    assert result.exit_code == 1 and "offline" not in line and "Can't load" in line, result.output


def test_a_strip_of_a_photo_is_refused(tmp_path: Path) -> None:
    photo = tmp_path / "strip.png"
    Image.new("RGB", (60_000, 40), "white").save(photo)
    result = runner.invoke(app, ["learn", str(photo), "--name", "alice", "--device", "cpu", "-q"])
    one_error(result, "60000x40 pixels, a strip rather than a photo")


@pytest.mark.parametrize("thumbnail", ["jpeg", "bomb"])
def test_a_damaged_thumbnail_is_the_identitys_problem(
    thumbnail: str, facepack: Path, tmp_path: Path, isolated_home: Path
) -> None:
    import io

    buffer = io.BytesIO()
    if thumbnail == "jpeg":
        Image.new("RGB", (128, 128)).save(buffer, format="JPEG")
    else:  # a small PNG whose header claims 100000 x 100000 pixels
        import struct
        import zlib

        Image.new("1", (64, 64)).save(buffer, format="PNG")
        data = bytearray(buffer.getvalue())
        data[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR's width and height
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        buffer = io.BytesIO(bytes(data))
    identity = make_identity("alice", width=32)
    identity.thumbnail_png = buffer.getvalue()
    IdentityStore().save(identity)
    args = ["eval", "alice", "--face-models", str(facepack), "-o", str(tmp_path / "eval"), "--device", "cpu"]
    line = one_error(runner.invoke(app, [*args, "-q"]), "identity 'alice' has a damaged face thumbnail")
    assert "check the disk" not in line


def test_config_values_of_another_type_are_refused(isolated_home: Path, tmp_path: Path) -> None:
    (isolated_home / "config.toml").write_text("vit_model = 7\n")
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64)).save(photo)
    result = runner.invoke(app, ["learn", str(photo), "--name", "alice", "--face-encoder", "vit", "-q"])
    one_error(result, "vit_model = 7 is not a str")


def test_sid_home_of_an_unknown_user_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SID_HOME", "~nosuchuser_sid/x")
    one_error(runner.invoke(app, ["ls"]), "there is no user 'nosuchuser_sid'")
    assert list(tmp_path.iterdir()) == []  # no folder named "~nosuchuser_sid" made here


def test_bf16_embeddings_import_and_float8_ones_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file as save_torch

    save_torch({"<bea>": torch.randn(2, 32).bfloat16()}, str(tmp_path / "bea.safetensors"))
    save_torch({"<eight>": torch.randn(2, 32).to(torch.float8_e4m3fn)}, str(tmp_path / "eight.safetensors"))
    imported = runner.invoke(app, ["import", str(tmp_path / "bea.safetensors")])
    assert imported.exit_code == 0, imported.output
    assert IdentityStore().get("bea").vectors["te32"].dtype == np.float32
    one_error(runner.invoke(app, ["import", str(tmp_path / "eight.safetensors")]), "float8_e4m3fn values")


@pytest.mark.parametrize("kind", ["character device", "FIFO"])
def test_a_photo_that_is_no_file_is_called_what_it_is(kind: str, tmp_path: Path) -> None:
    if kind == "FIFO":
        photo = tmp_path / "photo.jpg"
        os.mkfifo(photo)
    else:
        photo = Path("/dev/null")
    result = runner.invoke(app, ["learn", str(photo), "--name", "alice", "--device", "cpu", "-q"])
    assert "not found" not in one_error(result, f"is a {kind}")


def test_a_name_without_a_photo_asks_for_the_photo() -> None:
    one_error(runner.invoke(app, ["learn", "--name", "alice"]), "no photo given")
