"""Class 6 of issue 13: messages that tell the truth, names that cannot take over prompts, quiet output."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from sid.cli import app
from sid.errors import first_line
from sid.store import IdentityStore
from tests.helpers import one_error
from tests.test_render import render
from tests.test_store import make_identity

runner = CliRunner()


def test_a_folder_is_called_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "photos.safetensors"
    folder.mkdir()
    one_error(runner.invoke(app, ["import", str(folder)]), "is a folder")
    one_error(runner.invoke(app, ["learn", str(folder), "--name", "alice"]), "is a folder")


def test_a_broken_local_model_folder_is_not_an_offline_problem(tiny_model: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_model, tmp_path / "broken")
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.unlink()
    line = one_error(runner.invoke(app, ["render", "cat", "--model", str(broken), "-q"]), "model folder")
    assert (
        "you are offline" not in line and "download it once" not in line and "incomplete or damaged" in line
    )


def test_garbage_is_not_called_pickled_code(tmp_path: Path) -> None:
    garbage = tmp_path / "emb.pt"
    garbage.write_bytes(bytes(range(256)) * 4)
    line = one_error(runner.invoke(app, ["import", str(garbage), "--name", "emb"]), "not a PyTorch embedding")
    assert "pickled code" not in line
    pickled = tmp_path / "evil.pt"
    pickled.write_bytes(pickle.dumps(Path("x")))  # a real pickle of an object: refused as such
    one_error(runner.invoke(app, ["import", str(pickled), "--name", "emb"]), "holds pickled code")


def test_long_errors_are_cut_between_words() -> None:
    message = "could not reach https://huggingface.co " + "resolving " * 40
    cut = first_line(ValueError(message), limit=60)
    assert cut.endswith(" …") and len(cut) <= 62
    assert cut[:-2].split()[-1] in message.split()  # a whole word before the ellipsis
    assert first_line(ValueError("short"), limit=60) == "short"


def test_name_clashes_name_the_stored_spelling(tmp_path: Path) -> None:
    IdentityStore().save(make_identity("Alice"))
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"never read")
    one_error(runner.invoke(app, ["learn", str(photo), "--name", "alice"]), "'Alice' already exists")
    export = tmp_path / "x.safetensors"
    assert runner.invoke(app, ["export", "Alice", "-o", str(export)]).exit_code == 0
    one_error(runner.invoke(app, ["import", str(export), "--name", "ALICE"]), "'Alice' already exists")


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        (["learn", "PHOTO", "--name", "alice", "--dtype", "fp8"], "unknown dtype"),
        (["3d", "a bust of a cat", "--model", "/nonexistent/model", "--iters", "2"], "neither a preset"),
        (["video", "a cat dancing", "--video-model", "/no/model", "-o", "c.mp4"], "neither a preset"),
    ],
)
def test_no_empty_progress_bar_above_an_early_error(
    command: list[str], needle: str, tmp_path: Path, monkeypatch
) -> None:
    """Errors raised after the progress bar's context opened, before the first step."""
    monkeypatch.chdir(tmp_path)
    Path("p.jpg").write_bytes(b"never read")
    result = runner.invoke(app, [arg.replace("PHOTO", "p.jpg") for arg in command])
    one_error(result, needle)
    assert result.stderr.startswith("error:"), repr(result.stderr)  # no bar, no blank line above it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jpg"]


@pytest.mark.parametrize("name", ["a", "photo", "The", "man", "con", "NUL", "com1", "lpt9"])
def test_prompt_words_and_device_names_are_refused(tmp_path: Path, name: str) -> None:
    IdentityStore().save(make_identity("alice"))
    export = tmp_path / "x.safetensors"
    assert runner.invoke(app, ["export", "alice", "-o", str(export)]).exit_code == 0
    needle = "common prompt word" if name.lower() in ("a", "photo", "the", "man") else "reserved device name"
    one_error(runner.invoke(app, ["mv", "alice", name]), needle)
    one_error(runner.invoke(app, ["import", str(export), "--name", name]), needle)
    one_error(runner.invoke(app, ["learn", str(export), "--name", name]), needle)
    assert IdentityStore().names() == ["alice"]


def test_an_old_identity_with_a_stop_word_name_can_still_be_renamed() -> None:
    store = IdentityStore()
    store.save(make_identity("alice"))
    (store.root / "alice.safetensors").rename(store.root / "man.safetensors")  # stored before the rule
    assert runner.invoke(app, ["show", "man"]).exit_code == 0
    assert runner.invoke(app, ["mv", "man", "manfred"]).exit_code == 0
    assert store.names() == ["manfred"]


def test_an_old_stop_word_identity_is_flagged_when_it_takes_over_a_prompt(
    tiny_model: Path, tmp_path: Path
) -> None:
    store = IdentityStore()
    store.save(make_identity("alice", width=32))
    (store.root / "alice.safetensors").rename(store.root / "man.safetensors")  # stored before the rule
    taken = render(tiny_model, tmp_path / "a", "a man and a Man walking")
    assert taken.exit_code == 0, taken.output
    warnings = [line for line in taken.stderr.splitlines() if "common prompt word" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: 'man'"), taken.stderr  # once, not per word
    assert "@man" in warnings[0] and "sid mv man" in warnings[0]
    png = Image.open(json.loads(taken.stdout)[0]["path"])
    assert list(json.loads(png.text["sid"])["identities"]) == ["man"]  # the word became the person
    forced = render(tiny_model, tmp_path / "b", "a photo of @man walking")
    assert forced.exit_code == 0 and "common prompt word" not in forced.stderr, forced.output


def test_json_output_is_not_wrapped_in_library_noise(tiny_model: Path, tmp_path: Path) -> None:
    from huggingface_hub.utils import are_progress_bars_disabled

    args = [
        "render",
        "cat",
        "--model",
        str(tiny_model),
        "--steps",
        "1",
        "--size",
        "64x64",
        "-o",
        str(tmp_path),
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert [Path(r["path"]).exists() for r in json.loads(result.stdout)] == [True]
    noise = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert noise == [], result.stderr  # no progress bars, no library warnings
    assert not are_progress_bars_disabled()  # the Hub's download bars are back for the next command
