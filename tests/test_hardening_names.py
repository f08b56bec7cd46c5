"""Issue 24, names (point 5): a name is the whole string — a trailing newline or any control character
is refused wherever a name enters (--name, mv, --from file names, imported metadata and token names)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from sid.cli import app
from sid.store import IdentityStore
from tests.helpers import one_error
from tests.test_store import make_identity

runner = CliRunner()
BAD = ["alice\n", "ali\x1bce", "alice\r", "al\tice"]


def stored_files(home: Path) -> list[str]:
    folder = home / "identities"
    return sorted(p.name for p in folder.glob("*.safetensors")) if folder.is_dir() else []


@pytest.mark.parametrize("name", BAD)
def test_learn_name_with_a_control_character_is_refused(name: str, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"never decoded: the name is checked first")
    line = one_error(runner.invoke(app, ["learn", str(photo), "--name", name, "--device", "cpu"]), "name")
    assert "control characters" in line and "\n" not in line.strip() and "\x1b" not in line


@pytest.mark.parametrize("name", BAD)
def test_mv_to_a_name_with_a_control_character_is_refused(name: str, isolated_home: Path) -> None:
    IdentityStore().save(make_identity("bob", width=32))
    one_error(runner.invoke(app, ["mv", "bob", name]), "control characters")
    assert stored_files(isolated_home) == ["bob.safetensors"]


def test_a_folder_file_name_with_a_newline_fails_alone(tmp_path: Path, isolated_home: Path) -> None:
    folder = tmp_path / "people"
    folder.mkdir()
    (folder / "carol\n.jpg").write_bytes(b"not read: the name is refused first")
    result = runner.invoke(app, ["learn", "--from", str(folder), "--json", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    (row,) = json.loads(result.stdout)
    assert row["status"] == "failed" and "control characters" in row["reason"], row
    table = runner.invoke(app, ["learn", "--from", str(folder), "--device", "cpu"])
    assert "carol\\n" in table.stdout and "carol\n" not in table.stdout  # the table shows it escaped
    assert stored_files(isolated_home) == []


def test_imported_token_and_metadata_names_are_full_matches(tmp_path: Path, isolated_home: Path) -> None:
    vectors = np.ones((2, 32), np.float32)
    token = tmp_path / "dave.safetensors"  # a diffusers file whose token is "<dave\n>": the file name wins
    save_file({"<dave\n>": vectors}, str(token), metadata={"name": "dave\x1b[2J"})
    assert runner.invoke(app, ["import", str(token)]).exit_code == 0
    assert stored_files(isolated_home) == ["dave.safetensors"]
    sid_file = tmp_path / "e\x1b.safetensors"  # a sid file naming itself "eve\n", named unusably too
    identity = make_identity("eve", width=32)
    header = identity.header() | {"name": "eve\n"}
    save_file(identity.vectors, str(sid_file), metadata=header)
    line = one_error(runner.invoke(app, ["import", str(sid_file)]), "cannot infer an identity name")
    assert "\x1b" not in line
    assert stored_files(isolated_home) == ["dave.safetensors"]


def test_a_planted_file_with_a_newline_in_its_name_is_not_an_identity(isolated_home: Path) -> None:
    IdentityStore().save(make_identity("bob", width=32))
    planted = isolated_home / "identities" / "frank\n.safetensors"
    planted.write_bytes((isolated_home / "identities" / "bob.safetensors").read_bytes())
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0, result.output
    assert "not named like an identity" in result.output and "frank\\n.safetensors" in result.output
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["bob"]
