"""Class 3 of issue 13: an identity and its face change together or not at all; the store is checked
before training; a changed --resume says so and leaves no checkpoint that can never resume."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sid.store
import sid.train
from sid.cli import app
from sid.errors import StoreError
from sid.store import IdentityStore
from tests.helpers import interrupted_at_first_checkpoint
from tests.test_store import make_identity

runner = CliRunner()


def store_files(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "identities").iterdir() if not p.name.startswith(".lock"))


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def learn_args(learn_args: list[str]) -> list[str]:
    return [*learn_args, "--steps", "2"]


def test_learn_force_on_a_full_disk_keeps_identity_and_face_together(
    face_photos: Path, learn_args: list[str], isolated_home: Path, monkeypatch
) -> None:
    first = runner.invoke(
        app, ["learn", str(face_photos / "obama_1.jpg"), "--name", "alice", "-q", *learn_args]
    )
    assert first.exit_code == 0, first.output
    before = IdentityStore().get("alice")
    files = store_files(isolated_home)
    monkeypatch.setattr(Path, "write_bytes", disk_full)  # every file write fails, as on a full disk
    for name, force in (("alice", ["--force"]), ("bob", [])):  # replacing one, and a new name
        photo = str(face_photos / "biden_2.jpg")
        result = runner.invoke(app, ["learn", photo, "--name", name, "-q", *force, *learn_args])
        assert result.exit_code == 1, result.output
        assert "No space left on device" in result.output and "free some disk space" in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
        assert store_files(isolated_home) == files == ["alice.safetensors"]  # no stray thumbnail, no bob
    after = IdentityStore().get("alice")
    assert after.thumbnail_png == before.thumbnail_png and after.thumbnail_png.startswith(b"\x89PNG")
    np.testing.assert_array_equal(after.vectors["te32"], before.vectors["te32"])


def test_legacy_thumbnail_files_stay_readable_and_move_inside_on_rename(isolated_home: Path) -> None:
    store = IdentityStore()
    old = make_identity("alice")
    path = store.root / "alice.safetensors"
    store.root.mkdir(parents=True)
    header = old.header()
    del header["thumbnail"]  # a file written before sid embedded thumbnails
    from safetensors.numpy import save

    path.write_bytes(save(old.vectors, metadata=header))
    path.with_suffix(".png").write_bytes(b"\x89PNG legacy")
    assert store.thumbnail("alice") == b"\x89PNG legacy"
    assert runner.invoke(app, ["mv", "alice", "carol"]).exit_code == 0
    assert store_files(isolated_home) == ["carol.safetensors"]
    assert store.thumbnail("carol") == b"\x89PNG legacy"
    # an identity replaced by one without a face never shows the old face
    carol = make_identity("carol", seed=1)
    store.save(carol, overwrite=True)
    assert store.thumbnail("carol") is None


@pytest.mark.parametrize("case", ["identities is a file", "home under a file", "no space"])
def test_store_not_writable_fails_before_any_work(
    case: str, tmp_path: Path, isolated_home: Path, monkeypatch
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"never decoded: the store check comes first")
    if case == "identities is a file":
        (isolated_home / "identities").write_text("in the way")
        needle = "a file stands where a folder should be"
    elif case == "home under a file":
        (tmp_path / "file").write_text("x")
        monkeypatch.setenv("SID_HOME", str(tmp_path / "file" / "home"))
        needle = "a file stands where a folder should be"
    else:
        monkeypatch.setattr(sid.store.shutil, "disk_usage", lambda p: type("U", (), {"free": 2**20})())
        needle = "only 1 MB free"
    calls = []
    monkeypatch.setattr(sid.train, "extract_face", lambda *a, **k: calls.append(a))
    result = runner.invoke(app, ["learn", str(photo), "--name", "alice", "--device", "cpu"])
    assert result.exit_code == 1 and needle in result.output, result.output
    assert calls == [] and "finding the face" not in result.output  # failed before any work
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_resume_with_changed_settings_says_so_and_cleans_up(
    face_photos: Path, learn_args: list[str], isolated_home: Path, monkeypatch
) -> None:
    photo = str(face_photos / "obama_1.jpg")
    args = ["learn", photo, "--name", "alice", "--checkpoint-every", "2", "--bank-size", "2", *learn_args]
    with interrupted_at_first_checkpoint(monkeypatch):
        interrupted = runner.invoke(app, [*args, "--steps", "6", "-q"])
    assert interrupted.exit_code == 130, interrupted.output
    partial = isolated_home / "partial"
    (stale,) = partial.glob("learn-*.safetensors")
    resumed = runner.invoke(app, [*args, "--steps", "4", "--resume", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert "not resuming" in resumed.output and "--steps 6 -> 4" in resumed.output
    assert "Resumed from step" not in resumed.output
    assert not stale.exists() and list(partial.glob("*.safetensors")) == []
    info = json.loads(runner.invoke(app, ["show", "alice", "--json"]).stdout)
    assert info["settings"]["steps"] == 4 and info["thumbnail"] == "embedded"


def test_a_group_is_stored_whole_or_not_at_all(isolated_home: Path, monkeypatch) -> None:
    """Joint learning stores its identities together: a disk that fills up at the second file leaves
    both old identities as they were, and no new file."""
    store = IdentityStore()
    for name in ("alice", "bob"):
        store.save(make_identity(name))
    before = store_files(isolated_home)
    contents = {n: (store.root / f"{n}.safetensors").read_bytes() for n in ("alice", "bob")}
    real_write, writes = Path.write_bytes, []

    def second_fails(self: Path, data: bytes) -> int:
        writes.append(self)
        if len(writes) == 2:
            disk_full()
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", second_fails)
    new = [make_identity("alice", seed=1), make_identity("bob", seed=1), make_identity("carol", seed=1)]
    with pytest.raises(StoreError, match="No space left") as failed:
        store.save_all(new, overwrite=True)
    assert "free some disk space" in failed.value.hint
    monkeypatch.undo()
    assert len(writes) == 2 and store_files(isolated_home) == before
    assert {n: (store.root / f"{n}.safetensors").read_bytes() for n in ("alice", "bob")} == contents
    store.save_all(new, overwrite=True)
    assert store.names() == ["alice", "bob", "carol"]
    stored = store.get("bob").vectors
    assert all(np.array_equal(stored[k], v) for k, v in new[1].vectors.items())
