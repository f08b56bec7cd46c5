"""The CLI surface: store commands driven in-process, and the fast-start promise checked in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sid.cli import app
from sid.store import IdentityStore
from tests.test_store import make_identity

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_help_and_version() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("ls", "show", "rm", "mv", "export", "import", "doctor"):
        assert command in result.output
    assert invoke("--version").output.strip().startswith("sid ")
    assert "Example" in invoke("export", "--help").output


def test_ls_empty_and_json() -> None:
    assert "No identities yet" in invoke("ls").output
    IdentityStore().save(make_identity("alice"))
    IdentityStore().save(make_identity("bob", width=768))
    result = invoke("ls", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)["identities"]
    assert [(r["name"], r["slots"]) for r in rows] == [("alice", {"clip_h": 1024}), ("bob", {"clip_l": 768})]
    table = invoke("ls").output
    assert "alice" in table and "stableidentity" in table


def test_show_json_and_missing() -> None:
    IdentityStore().save(make_identity("alice"))
    info = json.loads(invoke("show", "ALICE", "--json").stdout)
    assert info["name"] == "alice" and info["settings"]["steps"] == 450 and info["final_loss"] == 0.125
    missing = invoke("show", "nobody")
    assert missing.exit_code == 1
    assert "no identity named 'nobody'" in missing.output and "Traceback" not in missing.output


def test_bad_name_is_one_line_error() -> None:
    result = invoke("show", "../etc/passwd")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: invalid identity name")
    assert len(result.output.strip().splitlines()) == 1


def test_an_error_quoting_brackets_stays_one_line() -> None:
    """User input (or a library's message) with '[/...]' in it is text, not rich markup."""
    for args in (["show", "[/x]"], ["learn", "--from", "[/a].csv"]):
        result = invoke(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith("error:") and ("[/x]" in line or "[/a].csv" in line)


def test_rm_asks_and_respects_answer() -> None:
    IdentityStore().save(make_identity("alice"))
    assert invoke("rm", "alice", input="n\n").exit_code == 1
    assert IdentityStore().names() == ["alice"]
    assert invoke("rm", "alice", input="y\n").exit_code == 0
    assert IdentityStore().names() == []


def test_mv() -> None:
    IdentityStore().save(make_identity("alice"))
    assert invoke("mv", "alice", "carol").exit_code == 0
    assert IdentityStore().names() == ["carol"]
    assert invoke("mv", "carol", "bad/name").exit_code == 1
    assert IdentityStore().names() == ["carol"]


def test_export_import_sid_round_trip(tmp_path: Path) -> None:
    original = make_identity("alice")
    IdentityStore().save(original)
    target = tmp_path / "a.safetensors"
    assert invoke("export", "alice", "-o", str(target)).exit_code == 0
    refused = invoke("export", "alice", "-o", str(target))
    assert refused.exit_code == 1 and "already exists" in refused.output
    result = invoke("import", str(target), "--name", "alice2")
    assert result.exit_code == 0, result.output
    copy = IdentityStore().get("alice2")
    np.testing.assert_array_equal(copy.vectors["clip_h"], original.vectors["clip_h"])
    assert copy.method == "stableidentity" and copy.settings == original.settings
    clash = invoke("import", str(target))
    assert clash.exit_code == 1 and "already exists" in clash.output


def test_import_rejects_unknown_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "unsupported file type" in invoke("import", str(text)).output
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not a safetensors file at all")
    result = invoke("import", str(fake))
    assert result.exit_code == 1 and "not a valid safetensors" in result.output
    assert IdentityStore().names() == []


def test_sid_debug_shows_traceback(monkeypatch) -> None:
    monkeypatch.setenv("SID_DEBUG", "1")
    result = invoke("show", "nobody")
    assert result.exit_code != 0 and result.exception is not None


def test_doctor_json(isolated_home: Path) -> None:
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["store"]["path"].startswith(str(isolated_home))
    assert info["hf_offline"] is True and info["packages"]["torch"] != "not installed"
    assert info["default_model"]["label"] == "sd21"
    assert info["vit_model"] == "jayanta/vit-base-patch16-224-in21k-face-recognition"
    assert info["face_parser"] == "jonathandinu/face-parsing"


def test_doctor_shows_the_configured_face_models(isolated_home: Path, monkeypatch, tmp_path: Path) -> None:
    (isolated_home / "config.toml").write_text(f'face_parser = "{tmp_path}"\n')
    monkeypatch.setenv("SID_VIT_MODEL", "me/my-vit")
    info = json.loads(invoke("doctor", "--json").stdout)
    assert info["vit_model"] == "me/my-vit" and info["face_parser"] == str(tmp_path)
    assert info["env"]["SID_VIT_MODEL"] == "me/my-vit"
    table = invoke("doctor")
    assert table.exit_code == 0 and "me/my-vit" in table.output and "face parser" in table.output


HEAVY = ("torch", "diffusers", "transformers", "huggingface_hub", "insightface", "onnxruntime", "cv2")
PROBE = """
import sys, runpy
sys.argv = ["sid"] + sys.argv[1:]
try:
    runpy.run_module("sid", run_name="__main__")
except SystemExit as e:
    code = e.code or 0
else:
    code = 0
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["ls"], ["ls", "--json"], ["show", "alice"], ["show", "alice", "--json"]]
)
def test_light_commands_do_not_import_heavy_libraries(args: list[str]) -> None:
    IdentityStore().save(make_identity("alice"))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stderr or proc.stderr.rstrip().endswith("HEAVY="), proc.stderr
