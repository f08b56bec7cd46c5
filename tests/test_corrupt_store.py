"""Class 4 of issue 13: one bad file in the store never hides the good ones, and is named where it matters."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sid.cli import app
from sid.store import IdentityStore
from tests.test_store import make_identity

runner = CliRunner()


def raw_safetensors(path: Path, header: object, data: bytes = b"") -> Path:
    """A file with exactly this JSON header: safetensors' layout, whatever the header says."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


F32 = {"dtype": "F32", "data_offsets": [0, 4]}
BAD_FILES = {
    "garbage": lambda p: p.write_bytes(b"\x00\x01 not safetensors"),
    "jsonlist": lambda p: raw_safetensors(p, [1, 2, 3]),
    "badentry": lambda p: raw_safetensors(p, {"clip_h": {"dtype": "F32"}}),
    "zerod": lambda p: raw_safetensors(p, {"clip_h": {**F32, "shape": []}}, b"\0" * 4),
    "intmeta": lambda p: raw_safetensors(
        p, {"__metadata__": {"name": 5}, "clip_h": {**F32, "shape": [1, 1]}}
    ),
}


def nan_identity(path: Path) -> None:
    """A well-formed sid file whose vectors are NaN (written past the store's own check)."""
    from safetensors.numpy import save

    ident = make_identity("nanny")
    path.write_bytes(save({"clip_h": np.full((2, 1024), np.nan, np.float32)}, metadata=ident.header()))


@pytest.fixture
def messy_store(isolated_home: Path) -> Path:
    store = IdentityStore()
    store.save(make_identity("alice"))
    for name, write in BAD_FILES.items():
        write(store.root / f"{name}.safetensors")
    nan_identity(store.root / "nanny.safetensors")
    (store.root / "not a name.safetensors").write_bytes(b"x")
    return store.root


def test_ls_lists_the_good_and_names_every_bad_file(messy_store: Path) -> None:
    table = runner.invoke(app, ["ls"])
    assert table.exit_code == 0, table.output
    assert "alice" in table.stdout and "Traceback" not in table.output
    for name in [*BAD_FILES, "not a name"]:
        assert f"{name}.safetensors" in table.stderr, name
    listing = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
    assert [r["name"] for r in listing["identities"]] == ["alice", "nanny"]  # ls reads headers only
    bad = {Path(e["file"]).stem: e["error"] for e in listing["errors"]}
    assert set(bad) == {*BAD_FILES, "not a name"}
    assert all("not a readable safetensors file" in bad[n] for n in ("garbage", "jsonlist", "badentry"))
    assert "sequence" in bad["jsonlist"] and "missing field `shape`" in bad["badentry"]  # safetensors' words
    assert "expected a string" in bad["intmeta"] and "(vectors, width)" in bad["zerod"]


@pytest.mark.parametrize("name", [*BAD_FILES, "nanny"])
def test_show_and_render_name_the_bad_file(messy_store: Path, name: str) -> None:
    commands = [["render", f"{name} at the beach"]]
    if name != "nanny":  # show reads the header only, and nanny's header is fine
        commands.append(["show", name])
    for args in commands:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"{name}.safetensors" in errors[0], result.output
        assert "Traceback" not in result.output
        assert name != "nanny" or "NaN" in errors[0]


def test_nan_identity_is_never_exported(messy_store: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "nanny", "-o", str(tmp_path / "out.safetensors")])
    assert result.exit_code == 1 and "NaN" in result.output
    assert not list(tmp_path.glob("*.safetensors"))


def test_names_differing_only_in_case_are_reported(isolated_home: Path) -> None:
    store = IdentityStore()
    store.save(make_identity("alice"))
    (store.root / "Alice.safetensors").write_bytes((store.root / "alice.safetensors").read_bytes())
    if len(list(store.root.glob("*.safetensors"))) < 2:
        pytest.skip("case-insensitive file system: two such files cannot exist")
    listing = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
    assert listing["identities"] == []
    assert sorted(Path(e["file"]).name for e in listing["errors"]) == [
        "Alice.safetensors",
        "alice.safetensors",
    ]
    assert all("differ only in case" in e["error"] for e in listing["errors"])
    table = runner.invoke(app, ["ls"])
    clashes = [line for line in table.stderr.splitlines() if "differ only in case" in line]
    assert len(clashes) == 1 and "Alice.safetensors" in clashes[0] and "alice.safetensors" in clashes[0]
    for args in (["show", "ALICE"], ["render", "alice smiling"], ["rm", "alice", "-y"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "differ only in case" in result.output, result.output
    assert len(list(store.root.glob("*.safetensors"))) == 2  # nothing was removed
