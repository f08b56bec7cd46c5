"""`sid ls` reads each identity's header once: the listing cache serves unchanged files, never stale ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sid.store
from sid.store import LISTING_CACHE, IdentityStore
from tests.test_store import make_identity


@pytest.fixture
def header_reads(monkeypatch) -> list[str]:
    """The files whose headers the store opens, in order."""
    reads: list[str] = []
    real = sid.store.read_header

    def counting(path: Path):
        reads.append(Path(path).stem)
        return real(path)

    monkeypatch.setattr(sid.store, "read_header", counting)
    return reads


def test_unchanged_files_are_not_reopened(tmp_path: Path, header_reads: list[str]) -> None:
    store = IdentityStore(tmp_path)
    for name in ("alice", "bob"):
        store.save(make_identity(name))
    first = store.list()
    assert sorted(header_reads) == ["alice", "bob"] and (tmp_path / LISTING_CACHE).is_file()
    header_reads.clear()
    assert store.list() == first and header_reads == []  # everything from the cache
    store.save(make_identity("carol"))
    assert [r["name"] for r in store.list().identities] == ["alice", "bob", "carol"]
    assert header_reads == ["carol"]


def test_a_replaced_or_removed_identity_is_never_served_stale(
    tmp_path: Path, header_reads: list[str]
) -> None:
    store = IdentityStore(tmp_path)
    store.save(make_identity("alice"))
    store.save(make_identity("bob"))
    store.list()
    changed = make_identity("alice", k=3)
    changed.method = "celebbasis"
    store.save(changed, overwrite=True)
    store.remove("bob")
    header_reads.clear()
    (row,) = store.list().identities
    assert (row["method"], row["num_vectors"]) == ("celebbasis", 3) and header_reads == ["alice"]


def test_a_corrupt_cache_or_a_read_only_store_still_lists(tmp_path: Path, monkeypatch) -> None:
    store = IdentityStore(tmp_path)
    store.save(make_identity("alice"))
    (tmp_path / LISTING_CACHE).write_text("{not json")
    assert [r["name"] for r in store.list().identities] == ["alice"]

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    (tmp_path / LISTING_CACHE).unlink()
    monkeypatch.setattr(sid.store, "atomic_write", refuse)
    assert [r["name"] for r in store.list().identities] == ["alice"]
    assert not (tmp_path / LISTING_CACHE).exists()


def test_a_warm_ls_imports_neither_torch_nor_numpy(isolated_home: Path) -> None:
    store = IdentityStore()
    store.save(make_identity("alice"))
    store.list()  # warms the cache, as any earlier `sid ls` would
    probe = (
        "import sys\nfrom sid.cli import main\nsys.argv = ['sid', 'ls']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('heavy:', sorted(m for m in ('torch', 'numpy', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "alice" in out and "heavy: []" in out, out


def test_ls_prints_aligned_plain_columns(isolated_home: Path) -> None:
    from typer.testing import CliRunner

    from sid.cli import app

    store = IdentityStore()
    for name in ("al", "bartholomew"):
        store.save(make_identity(name))
    lines = CliRunner().invoke(app, ["ls"]).stdout.splitlines()
    assert lines[0].split() == ["name", "method", "family", "base", "model", "vectors", "created"]
    assert [line.split()[0] for line in lines[1:]] == ["al", "bartholomew"]
    starts = {line.index("stableidentity") for line in lines[1:]} | {lines[0].index("method")}
    assert len(starts) == 1  # every row's second column starts where its header does


def test_a_moved_store_lists_its_files_where_they_are_now(tmp_path: Path) -> None:
    old = IdentityStore(tmp_path / "a")
    old.save(make_identity("alice"))
    old.list()  # cached while the folder was at a/
    (tmp_path / "a").rename(tmp_path / "b")  # same inodes, sizes and mtimes
    (row,) = IdentityStore(tmp_path / "b").list().identities
    assert row["file"] == str(tmp_path / "b" / "alice.safetensors")
