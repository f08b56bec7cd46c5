"""The identity store: round trips, names, atomicity, and concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sid.errors import IdentityExists, IdentityNotFound, InvalidName, StoreError
from sid.families import slot_for_width
from sid.store import Identity, IdentityStore, read_header, validate_name


def make_identity(name: str = "alice", width: int = 1024, k: int = 2, seed: int = 0) -> Identity:
    rng = np.random.default_rng(seed)
    return Identity(
        name=name,
        vectors={slot_for_width(width): rng.standard_normal((k, width)).astype(np.float32)},
        method="stableidentity",
        base_model="sd21",
        fingerprints={slot_for_width(width): f"{width}:abc123"},
        photo_sha256="f" * 64,
        settings={"steps": 450, "lr": 5e-5},
        final_loss=0.125,
    )


def test_round_trip_vectors_and_metadata(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    original = make_identity()
    original.thumbnail_png = b"\x89PNG fake"
    path = store.save(original)
    loaded = store.get("alice")
    np.testing.assert_array_equal(loaded.vectors["clip_h"], original.vectors["clip_h"])
    assert loaded.vectors["clip_h"].dtype == np.float32
    assert (loaded.method, loaded.base_model, loaded.final_loss) == ("stableidentity", "sd21", 0.125)
    assert loaded.settings == {"steps": 450, "lr": 5e-5}
    assert loaded.fingerprints == {"clip_h": "1024:abc123"}
    assert loaded.photo_sha256 == "f" * 64 and loaded.created and loaded.sid_version
    meta, shapes = read_header(path)
    assert meta["format"] == "sid" and meta["num_vectors"] == "2" and shapes == {"clip_h": [2, 1024]}
    assert store.thumbnail("ALICE") == b"\x89PNG fake" and list(tmp_path.glob("*.png")) == []


def test_lookup_is_case_insensitive_and_names_unique(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    store.save(make_identity("Alice"))
    assert store.get("alice").name == "Alice"
    with pytest.raises(IdentityExists):
        store.save(make_identity("ALICE", seed=1))
    store.save(make_identity("ALICE", seed=1), overwrite=True)
    assert store.names() == ["ALICE"]
    assert not np.allclose(store.get("alice").vectors["clip_h"], make_identity().vectors["clip_h"])


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 200, "1abc", "a b", "a.b", "é"])
def test_bad_names_rejected(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(bad)
    with pytest.raises(InvalidName):
        IdentityStore(tmp_path).save(make_identity(bad))
    assert list(tmp_path.glob("*.safetensors")) == []


def test_good_names_accepted() -> None:
    for good in ("q", "alice", "Bob_2", "x-y", "A" + "b" * 39):
        assert validate_name(good) == good


def test_missing_identity_error_lists_known(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    store.save(make_identity("bob"))
    with pytest.raises(IdentityNotFound, match="bob"):
        store.get("carol")


def test_rejects_non_finite_vectors(tmp_path: Path) -> None:
    ident = make_identity()
    ident.vectors["clip_h"][0, 0] = np.nan
    with pytest.raises(StoreError):
        IdentityStore(tmp_path).save(ident)
    assert not list(tmp_path.glob("*.safetensors"))


def test_crash_mid_write_leaves_store_as_before(tmp_path: Path, monkeypatch) -> None:
    store = IdentityStore(tmp_path)
    store.save(make_identity("alice", seed=0))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"}

    def crash(*args, **kwargs):
        raise OSError("simulated power loss")

    monkeypatch.setattr(os, "replace", crash)  # the write dies after the temp file is written
    with pytest.raises(StoreError, match="simulated"):
        store.save(make_identity("alice", seed=1), overwrite=True)
    with pytest.raises(StoreError, match="simulated"):
        store.save(make_identity("bob", seed=2))
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before  # no temp files left, old identity intact, no half-written bob


def test_killed_writer_leaves_no_visible_identity(tmp_path: Path) -> None:
    """A temp file orphaned by a hard kill is never listed as an identity."""
    store = IdentityStore(tmp_path)
    store.save(make_identity("alice"))
    (tmp_path / ".bob.safetensors.xyz.tmp").write_bytes(b"half")
    assert store.names() == ["alice"]


def test_rename_and_remove(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    alice = make_identity("alice")
    alice.thumbnail_png = b"png"
    store.save(alice)
    store.save(make_identity("bob", seed=3))
    with pytest.raises(IdentityExists):
        store.rename("alice", "BOB")
    store.rename("alice", "carol")
    assert store.names() == ["bob", "carol"]
    assert store.get("carol").name == "carol" and store.thumbnail("carol") == b"png"
    store.remove("carol")
    assert store.names() == ["bob"] and not list(tmp_path.glob("*.png"))


def test_list_rows_give_slots_vector_count_and_method_as_plain_data(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    store.save(make_identity("alice", width=768, k=2))
    (row,) = store.list().identities
    assert row["slots"] == {"clip_l": 768} and row["num_vectors"] == 2 and row["method"] == "stableidentity"
    json.dumps(row)  # plain data


WRITER = """
import sys, numpy as np
from sid.store import Identity, IdentityStore
name = sys.argv[1]
for i in range(20):
    ident = Identity(name=name, vectors={"clip_h": np.full((2, 1024), i, np.float32)}, method="x")
    IdentityStore().save(ident, overwrite=True)
"""


def test_two_processes_save_at_once(isolated_home: Path) -> None:
    env = {**os.environ}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, name], env=env, stderr=subprocess.PIPE)
        for name in ("alice", "bob")
    ]
    for p in procs:
        _, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr.decode()
    out = subprocess.run(
        [sys.executable, "-m", "sid", "ls", "--json"], env=env, capture_output=True, text=True, check=True
    )
    rows = json.loads(out.stdout)["identities"]
    assert [r["name"] for r in rows] == ["alice", "bob"]
    store = IdentityStore()
    assert float(store.get("alice").vectors["clip_h"][0, 0]) == 19.0
