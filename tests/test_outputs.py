"""Issue 13, class 1: every command that writes a user-named path writes only regular files, never
replaces a FIFO, device, socket or folder, treats links as documented and needs --force to overwrite."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sid.cli import app
from sid.errors import BadInput
from sid.files import atomic_path, atomic_write, leftover_temp_files
from sid.store import IdentityStore, identity_from_file
from tests.helpers import one_error
from tests.test_store import make_identity

runner = CliRunner()
NO_MODEL = "/nonexistent/model"  # a check that runs after loading would fail on this instead


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*.tmp*")]


@pytest.fixture
def alice() -> None:
    IdentityStore().save(make_identity("alice", width=32))


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(os.lstat(path).st_mode)


# -- sid export ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_export_never_replaces_a_fifo(alice, fifo: Path, force: list[str]) -> None:
    one_error(invoke("export", "alice", "-o", fifo, *force), "is a FIFO")
    assert is_fifo(fifo) and temp_files(fifo.parent) == []


def test_export_through_a_symlink_only_with_force(alice, tmp_path: Path) -> None:
    target = tmp_path / "real.safetensors"
    target.write_bytes(b"keep me")
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    one_error(invoke("export", "alice", "-o", link), "is a symbolic link to")
    assert target.read_bytes() == b"keep me" and link.is_symlink()

    result = invoke("export", "alice", "-o", link, "--force")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link is kept ...
    np.testing.assert_array_equal(  # ... and its target now holds the export
        identity_from_file(target).vectors["te32"], IdentityStore().get("alice").vectors["te32"]
    )
    assert temp_files(tmp_path) == []


def test_export_refuses_a_dangling_symlink_even_with_force(alice, tmp_path: Path) -> None:
    link = tmp_path / "dangling.safetensors"
    link.symlink_to(tmp_path / "nowhere" / "x.safetensors")
    one_error(invoke("export", "alice", "-o", link, "--force"), "which does not exist")
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_export_folders_and_existing_files(alice, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    # a trailing slash means a folder, made when the file is written
    assert invoke("export", "alice", "-o", "new/").exit_code == 0
    assert (tmp_path / "new" / "alice.safetensors").is_file()
    # an existing folder means "write inside it"; the same file again needs --force
    one_error(invoke("export", "alice", "-o", "new"), "already exists")
    assert invoke("export", "alice", "-o", "new", "--force").exit_code == 0
    # a file in a folder that does not exist (no trailing slash) is refused, nothing is made
    one_error(invoke("export", "alice", "-o", "missing/alice.safetensors"), "does not exist")
    assert not (tmp_path / "missing").exists()
    # a trailing slash on something that is a file is refused
    (tmp_path / "plain").write_bytes(b"x")
    one_error(invoke("export", "alice", "-o", "plain/"), "is not a folder")


def test_new_files_get_the_usual_permissions_and_replaced_ones_keep_theirs(alice, tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.safetensors"
        assert invoke("export", "alice", "-o", fresh).exit_code == 0
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not mkstemp's 0600
        fresh.chmod(0o640)
        assert invoke("export", "alice", "-o", fresh, "--force").exit_code == 0
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
    finally:
        os.umask(umask)


def test_export_on_a_full_disk_keeps_the_old_file(alice, tmp_path: Path) -> None:
    """A real file-size limit (RLIMIT_FSIZE) makes every write past 64 bytes fail with EFBIG."""
    resource = pytest.importorskip("resource")
    import signal

    target = tmp_path / "alice.safetensors"
    target.write_bytes(b"old export")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
    try:
        result = invoke("export", "alice", "-o", target, "--force")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    one_error(result, f"could not write {target}")
    assert target.read_bytes() == b"old export" and temp_files(tmp_path) == []


# -- sid video / 3d / render / eval: refused before any model loads ------------------------------------
def test_video_never_writes_beside_a_fifo(fifo: Path, tmp_path: Path) -> None:
    """`-o /dev/full` wrote /dev/full.mp4: a special file is refused before a suffix is added."""
    result = invoke("video", "a person dancing", "--video-model", NO_MODEL, "-o", fifo, "--force")
    one_error(result, "is a FIFO")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"] and is_fifo(fifo)


def test_3d_refuses_an_existing_mesh_without_force_and_a_fifo_always(tmp_path: Path, fifo: Path) -> None:
    mesh = tmp_path / "bust.glb"
    mesh.write_bytes(b"keep me")
    one_error(invoke("3d", "a bust", "--model", NO_MODEL, "-o", mesh), "already exists")
    assert mesh.read_bytes() == b"keep me"
    turntable = tmp_path / "spin.mp4"
    turntable.write_bytes(b"keep me too")
    result = invoke("3d", "a bust", "--model", NO_MODEL, "-o", tmp_path / "new.glb", "--turntable", turntable)
    one_error(result, "spin.mp4 already exists")
    one_error(invoke("3d", "a bust", "--model", NO_MODEL, "-o", fifo, "--force"), "is a FIFO")
    # with --force the checks pass and the run goes on to load the model (which does not exist here)
    forced = invoke("3d", "a bust", "--model", NO_MODEL, "-o", mesh, "--force", "--no-turntable")
    assert forced.exit_code == 1 and "already exists" not in forced.output
    assert mesh.read_bytes() == b"keep me" and is_fifo(fifo)


def test_render_refuses_a_fifo_as_its_folder(fifo: Path) -> None:
    one_error(invoke("render", "a castle", "--model", NO_MODEL, "-o", fifo), "is a FIFO")
    assert is_fifo(fifo)


def test_eval_refuses_an_earlier_run_without_force(alice, tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "eval.json").write_text("{}")
    result = invoke("eval", "alice", "-o", folder, "--model", NO_MODEL, "--clip-model", "none")
    one_error(result, "eval.json already exists")
    assert (folder / "eval.json").read_text() == "{}"


def render_args(tiny: Path, out: Path, *extra: object) -> list[object]:
    return ["render", "a castle", "--model", tiny, "--device", "cpu", "--steps", 1, "--size", "64x64"] + [
        "--seed",
        5,
        "-o",
        out,
        "--json",
        *extra,
    ]


def test_render_overwrites_only_with_force_and_writes_through_links(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "renders"
    first = invoke(*render_args(tiny_model, out, "-n", 2))
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in out.iterdir()) == ["a-castle-00-5.png", "a-castle-01-6.png"]
    png = out / "a-castle-00-5.png"
    original = png.read_bytes()
    png.write_bytes(b"an older render")
    one_error(invoke(*render_args(tiny_model, out)), "a-castle-00-5.png already exists")
    assert png.read_bytes() == b"an older render"  # refused before anything rendered

    # a link among the images: refused without --force, written through with it
    real = tmp_path / "elsewhere.png"
    real.write_bytes(b"linked")
    png.unlink()
    png.symlink_to(real)
    one_error(invoke(*render_args(tiny_model, out)), "is a symbolic link")
    again = invoke(*render_args(tiny_model, out, "--force"))
    assert again.exit_code == 0, again.output
    assert png.is_symlink()  # the link is kept, its target holds the same seed's image again
    np.testing.assert_array_equal(np.asarray(Image.open(real)), np.asarray(Image.open(io.BytesIO(original))))
    assert temp_files(tmp_path) == []


def test_render_on_a_full_disk_keeps_the_finished_images(
    tiny_model: Path, tmp_path: Path, monkeypatch
) -> None:
    """The disk fills up while the third PNG is written: two stay, one line says what failed."""
    real_save, calls = Image.Image.save, []

    def filling(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 3:
            with open(fp, "wb") as f:
                f.write(b"\x89PNG half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", filling)
    out = tmp_path / "renders"
    result = invoke(*render_args(tiny_model, out, "-n", 4))
    line = one_error(result, "No space left on device")
    assert "free some disk space" in line and "SID_HOME" not in line  # an output, not the store
    assert sorted(p.name for p in out.iterdir()) == ["a-castle-00-5.png", "a-castle-01-6.png"]
    assert all(Image.open(p).size == (64, 64) for p in out.iterdir())


# -- the writers themselves ---------------------------------------------------------------------------
def test_atomic_path_removes_its_temp_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".bin" and tmp != target
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and temp_files(tmp_path) == []


def test_atomic_write_refuses_a_target_that_became_a_fifo(tmp_path: Path) -> None:
    """The rename is what swapped /dev/full for a file: refused when the target is not a regular file."""
    target = tmp_path / "out.bin"
    with pytest.raises(BadInput, match="is a FIFO"), atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        os.mkfifo(target)  # appears while the file is being written
    assert is_fifo(target) and temp_files(tmp_path) == []
    atomic_write(tmp_path / "fresh.bin", b"whole")
    assert (tmp_path / "fresh.bin").read_bytes() == b"whole"


def test_a_killed_atomic_write_leaves_a_temp_file_its_owner_can_find(tmp_path: Path) -> None:
    """SIGKILL runs no clean-up: the half-written temp stays, and leftover_temp_files names it (and
    nothing else) so that whoever owns the target can delete it (learn does, for its checkpoints)."""
    import subprocess
    import sys

    target = tmp_path / "learn-abc.safetensors"
    (tmp_path / "learn-abcd.safetensors").write_bytes(b"another checkpoint")
    killed = (
        "import os, sys; from pathlib import Path; from sid.files import atomic_path\n"
        "with atomic_path(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_bytes(b'half'); os._exit(9)"
    )
    proc = subprocess.run([sys.executable, "-c", killed, str(target)], capture_output=True, timeout=60)
    assert proc.returncode == 9 and not target.exists()
    (left,) = leftover_temp_files(target)
    assert left.read_bytes() == b"half" and left.parent == tmp_path and left.name.startswith(".learn-abc.")
    assert leftover_temp_files(tmp_path / "learn-abcd.safetensors") == []
