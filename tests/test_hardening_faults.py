"""Issue 24, faults and messages (points 9 and 10): only settings that change the result invalidate a
checkpoint, no library bar or repeated line around sid's own output, and every message says what
happened (before any model loads, where the fault is in the options)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from sid.cli import app
from sid.store import IdentityStore
from tests.helpers import interrupted_at_first_checkpoint, one_error
from tests.test_store import make_identity

runner = CliRunner()
NO_MODEL = "/nonexistent/model"  # a fault in the options must be found before this is looked at


def test_a_resume_with_a_cosmetic_change_continues(
    face_photos: Path, learn_args: list[str], isolated_home: Path, monkeypatch
) -> None:
    args = ["learn", str(face_photos / "obama_1.jpg"), "--name", "alice", *learn_args, "--steps", "4"]
    args += ["--bank-size", "2", "--mask", "landmarks"]
    with interrupted_at_first_checkpoint(monkeypatch):
        assert runner.invoke(app, [*args, "--checkpoint-every", "2", "-q"]).exit_code == 130
    resumed = runner.invoke(app, [*args, "--checkpoint-every", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "Resumed from step 2." in resumed.output and "starting over" not in resumed.output
    assert list((isolated_home / "partial").glob("*.safetensors")) == []


@pytest.fixture(scope="module")
def sd_controlnet(tiny_model: Path, tmp_path_factory) -> Path:
    from diffusers import StableDiffusionPipeline

    from sid.testing import tiny_controlnet

    folder = tmp_path_factory.mktemp("cn") / "controlnet"
    tiny_controlnet(StableDiffusionPipeline.from_pretrained(str(tiny_model))).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_a_controlnet_render_shows_no_library_bars(
    quiet: list[str], tiny_model: Path, sd_controlnet: Path, tmp_path: Path
) -> None:
    control = tmp_path / "control.png"
    Image.new("RGB", (64, 64), "white").save(control)
    args = ["render", "a castle", "--model", str(tiny_model), "--steps", "2", "--size", "64x64"]
    args += ["--control", str(control), "--controlnet", str(sd_controlnet), "--device", "cpu"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out"), *quiet])
    assert result.exit_code == 0, result.output
    assert "it/s]" not in result.output and "%|" not in result.output, result.output


def test_a_long_prompt_is_warned_about(tiny_model: Path, tmp_path: Path) -> None:
    prompt = "a castle " + " ".join(["on a hill"] * 40)
    args = [
        "render",
        prompt,
        "--model",
        str(tiny_model),
        "--steps",
        "1",
        "--size",
        "64x64",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, [*args, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "the text encoder reads the first 75, the rest is cut" in result.output


def test_a_dangling_output_folder_link_fails_before_any_model_loads(tmp_path: Path) -> None:
    link = tmp_path / "out"  # render's -o is a folder (video's and 3d's files were checked already)
    link.symlink_to(tmp_path / "gone" / "away")
    result = runner.invoke(app, ["render", "a castle", "-o", str(link), "--model", NO_MODEL])
    one_error(result, "which does not exist")


def test_sid_3d_makes_a_new_output_folder_as_render_does(tmp_path: Path) -> None:
    result = runner.invoke(app, ["3d", "a bust", "-o", f"{tmp_path / 'newdir'}/", "--model", NO_MODEL])
    assert "newdir" not in one_error(result, NO_MODEL)  # the options passed; the model is what is missing


def test_under_torchrun_an_error_every_rank_shares_prints_once(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, lines in (("0", 1), ("1", 0)):
        monkeypatch.setenv("RANK", rank)
        result = runner.invoke(app, ["render", " "])
        assert result.exit_code == 1 and len(result.output.splitlines()) == lines, result.output


def test_manifest_rows_are_numbered_by_their_line(tmp_path: Path) -> None:
    manifest = tmp_path / "people.csv"
    manifest.write_text('photo,name\n\n"first\nhalf.jpg",alice\n\n\nmissing.jpg,bob\n')
    result = runner.invoke(app, ["learn", "--from", str(manifest), "--json", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert [(r["line"], r["name"]) for r in json.loads(result.stdout)] == [(3, "alice"), (7, "bob")]


def test_export_checks_the_format_first_and_writes_only_safetensors(tmp_path: Path) -> None:
    IdentityStore().save(make_identity("alice", width=32))
    taken = tmp_path / "alice.safetensors"
    taken.write_text("someone's file")
    one_error(
        runner.invoke(app, ["export", "alice", "--format", "ckpt", "-o", str(taken)]), "unknown export format"
    )
    one_error(
        runner.invoke(app, ["export", "alice", "-o", str(tmp_path / "x.pt")]), "sid exports .safetensors"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.safetensors"]


def test_a_declined_rm_says_so() -> None:
    IdentityStore().save(make_identity("alice", width=32))
    result = runner.invoke(app, ["rm", "alice"], input="n\n")
    assert result.exit_code == 1 and "Kept alice: nothing removed." in result.output
    assert IdentityStore().names() == ["alice"]


def test_a_row_another_run_stored_first_leaves_no_checkpoint(
    face_photos: Path, learn_args: list[str], tmp_path: Path, isolated_home: Path, monkeypatch
) -> None:
    """Two overlapping --from runs learn the same row: the one that stores second keeps no checkpoint."""
    import sid.many
    from sid.photos import photo_sha256

    photo = face_photos / "obama_1.jpg"
    manifest = tmp_path / "people.csv"
    manifest.write_text(f"photo,name\n{photo},alice\n")
    real_check = sid.many.check_rows

    def other_run_stores_first(*args, **kwargs):
        plan = real_check(*args, **kwargs)
        winner = make_identity("alice", width=32)
        winner.photo_sha256 = photo_sha256(photo.read_bytes())
        IdentityStore().save(winner)  # as the other run does while this one learns
        return plan

    monkeypatch.setattr(sid.many, "check_rows", other_run_stores_first)
    args = ["learn", "--from", str(manifest), *learn_args, "--steps", "2", "--checkpoint-every", "1"]
    result = runner.invoke(app, [*args, "--bank-size", "2", "--mask", "landmarks", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["status"] == "skipped" and "another run" in row["reason"]
    assert list((isolated_home / "partial").glob("*.safetensors")) == []
