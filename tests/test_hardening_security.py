"""Issue 24, security (points 1-4): a shared SID_HOME cannot make its user overwrite their files through
planted links; sid writes nothing outside the store, the configured caches and -o; photos are opened
only as the raster formats photos come in; what a file says reaches the terminal escaped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from safetensors.numpy import save_file
from typer.testing import CliRunner

from sid.cli import app
from sid.store import IdentityStore
from tests.helpers import one_error
from tests.test_store import make_identity

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """Another file of the user's, which a link planted in the store points at."""
    path = tmp_path / "victim.txt"
    path.write_text("the user's own file")
    return path


def plant(store_file: Path, target: Path) -> None:
    store_file.parent.mkdir(parents=True, exist_ok=True)
    store_file.symlink_to(target)


@pytest.mark.parametrize("own_file", [".lock", ".lock.info"])
def test_a_linked_lock_file_is_refused_and_never_written(
    own_file: str, victim: Path, tmp_path: Path, isolated_home: Path
) -> None:
    identity_file = tmp_path / "bob.safetensors"
    save_file(make_identity("bob", width=32).vectors, str(identity_file))
    plant(isolated_home / "identities" / own_file, victim)
    line = one_error(runner.invoke(app, ["import", str(identity_file)]), "is a symbolic link")
    assert own_file in line
    assert victim.read_text() == "the user's own file"
    assert IdentityStore().names() == []


def test_a_linked_listing_cache_is_refused_and_never_written(victim: Path, isolated_home: Path) -> None:
    IdentityStore().save(make_identity("bob", width=32))
    plant(isolated_home / "identities" / ".listing.json", victim)
    one_error(runner.invoke(app, ["ls"]), ".listing.json is a symbolic link")
    assert victim.read_text() == "the user's own file"


def test_a_linked_identity_is_listed_as_a_link_and_never_replaced(
    victim: Path, tmp_path: Path, isolated_home: Path
) -> None:
    IdentityStore().save(make_identity("bob", width=32))
    plant(isolated_home / "identities" / "alice.safetensors", victim)
    listing = runner.invoke(app, ["ls"])
    assert listing.exit_code == 0 and "alice.safetensors is a symbolic link" in listing.output
    incoming = tmp_path / "in.safetensors"
    save_file(make_identity("x", width=32).vectors, str(incoming))
    for args in (["--name", "alice", "--force"], ["--name", "alice"]):
        result = runner.invoke(app, ["import", str(incoming), *args])
        one_error(result, "alice.safetensors is a symbolic link")
    IdentityStore().save(make_identity("carol", width=32))
    one_error(runner.invoke(app, ["mv", "carol", "alice"]), "alice.safetensors is a symbolic link")
    one_error(runner.invoke(app, ["show", "alice"]), "alice.safetensors is a symbolic link")
    assert victim.read_text() == "the user's own file"
    assert (isolated_home / "identities" / "alice.safetensors").is_symlink()


def test_nothing_is_written_outside_the_store_and_caches(facepack: Path, tmp_path: Path) -> None:
    from skimage.data import coffee

    photo = tmp_path / "coffee.png"
    Image.fromarray(coffee()).save(photo)
    home = tmp_path / "user"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "ORT_"))}
    env |= {"HOME": str(home), "PYTHONPATH": str(ROOT), "SID_HOME": str(tmp_path / "sid")}
    args = ["learn", str(photo), "--name", "alice", "--face-models", str(facepack), "--mask", "landmarks"]
    result = subprocess.run(
        [sys.executable, "-m", "sid", *args, "--device", "cpu"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1 and "no face" in result.stderr, result.stderr  # the face models ran
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []


@pytest.mark.parametrize(("fmt", "suffix"), [("EPS", ".jpg"), ("GIF", ".png"), ("ICO", ".jpg")])
def test_photos_open_only_as_photo_formats(fmt: str, suffix: str, tmp_path: Path) -> None:
    photo = tmp_path / f"photo{suffix}"  # named like a photo: the format is what the bytes say
    Image.new("RGB", (64, 64), "red").save(photo, format=fmt)
    learn = runner.invoke(app, ["learn", str(photo), "--name", "alice", "--device", "cpu", "-q"])
    assert f"in {fmt} format" in one_error(learn, "which sid never opens")
    render = runner.invoke(app, ["render", "a red square", "--control", str(photo), "-o", str(tmp_path)])
    one_error(render, f"in {fmt} format")  # before any model loads (there is none offline)


def test_what_a_file_says_is_printed_escaped(tmp_path: Path, isolated_home: Path) -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J[/bold][link=https://example.com]click[/link]"
    identity = make_identity("mallory", width=32)
    header = identity.header() | {"base_model": hostile, "created": "\x1b[2J2026"}
    path = tmp_path / "mallory.safetensors"
    save_file(identity.vectors, str(path), metadata=header)
    assert runner.invoke(app, ["import", str(path)]).exit_code == 0
    for args in (["ls"], ["show", "mallory"]):
        result = runner.invoke(app, args, color=True)
        assert result.exit_code == 0, result.output
        assert "\x1b]" not in result.output and "\x1b[2J" not in result.output and "\x07" not in result.output
        assert "\\x1b[2J" in result.output and "[/bold][link=https://example.com]" in result.output
    folder = tmp_path / "people"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "eve\x1b[2J.png")
    batch = runner.invoke(app, ["learn", "--from", str(folder), "--device", "cpu"], color=True)
    assert "eve\\x1b[2J" in batch.output and "\x1b[2J" not in batch.output, batch.output


def test_a_planted_server_file_is_not_trusted(isolated_home: Path, tmp_path: Path) -> None:
    """In a shared store, a server file that is a link, or that others may read or write, names no
    server: the CLI runs in-process instead of sending photos to whoever planted it."""
    from sid.serve import SERVER_FILE, Running, read_server_file, write_server_file

    store = isolated_home / "identities"
    mine = Running("http://127.0.0.1:1", "secret", os.getpid(), os.uname().nodename)
    path = write_server_file(store, mine)
    assert read_server_file(store) == mine and (path.stat().st_mode & 0o777) == 0o600
    path.chmod(0o644)  # a file others may read (or one another user wrote and left open)
    assert read_server_file(store) is None
    path.unlink()
    theirs = write_server_file(tmp_path, mine)  # a valid, private file: only the link makes it refused
    path.symlink_to(theirs)
    assert read_server_file(tmp_path) == mine and read_server_file(store) is None
    elsewhere = tmp_path / "victim.txt"
    elsewhere.write_text("x")
    path.unlink()
    path.symlink_to(elsewhere)
    write_server_file(store, mine)  # replaces the link itself, never writes through it
    assert not path.is_symlink() and elsewhere.read_text() == "x" and read_server_file(store) == mine
    tmp = store / f".{SERVER_FILE}.{os.getpid()}.tmp"
    tmp.symlink_to(elsewhere)  # a planted temporary name is removed, not written through
    write_server_file(store, mine)
    assert elsewhere.read_text() == "x" and not tmp.exists()
