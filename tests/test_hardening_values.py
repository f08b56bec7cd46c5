"""Issue 24, values (point 8): JSON output is valid JSON, vectors are bounded by the text encoder's own
token-embedding scale, and an absurd learning rate is refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from sid.cli import app
from tests.helpers import one_error
from tests.test_store import make_identity

runner = CliRunner()


def strict_json(text: str):
    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_never_holds_nan_or_infinity(tmp_path: Path) -> None:
    identity = make_identity("nina", width=32)
    header = identity.header() | {"final_loss": "nan", "settings": '{"lr": Infinity, "steps": 3}'}
    path = tmp_path / "nina.safetensors"
    save_file(identity.vectors, str(path), metadata=header)
    imported = runner.invoke(app, ["import", str(path), "--json"])
    assert imported.exit_code == 0, imported.output
    assert strict_json(imported.stdout)["final_loss"] is None
    listing = strict_json(runner.invoke(app, ["ls", "--json"]).stdout)["identities"]
    assert [(r["name"], r["final_loss"], r["settings"]) for r in listing] == [
        ("nina", None, {"lr": None, "steps": 3})
    ]
    assert strict_json(runner.invoke(app, ["show", "nina", "--json"]).stdout)["settings"]["lr"] is None


def test_vectors_are_bounded_by_the_encoders_own_scale(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(tiny_model / "text_encoder" / "model.safetensors"))
    table = next(v for k, v in weights.items() if k.endswith("token_embedding.weight")).numpy()
    cases = {  # finite values, so the store takes them all; only the model knows their scale
        "huge": np.full((2, 32), 3e38, np.float32),
        "large": np.full((2, 32), 1e6, np.float32),
        "fine": table[:2] * 5,  # five times a real token's length: learned vectors come nowhere near
    }
    for name, vectors in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file({f"<{name}>": vectors}, str(path))
        assert runner.invoke(app, ["import", str(path)]).exit_code == 0
        args = ["render", f"{name} at the beach", "--model", str(tiny_model), "--steps", "1", "-q"]
        out = tmp_path / f"out-{name}"
        result = runner.invoke(app, [*args, "--device", "cpu", "--size", "64x64", "-o", str(out)])
        if name == "fine":
            assert result.exit_code == 0 and len(list(out.glob("*.png"))) == 1, result.output
        else:
            one_error(result, "far beyond this text encoder's token embeddings")
            assert not out.exists()


@pytest.mark.parametrize(
    "command", [["learn", "photo.jpg", "--name", "alice"], ["3d", "a bust of alice", "--iters", "2"]]
)
@pytest.mark.parametrize("lr", ["1e308", "2", "1e-30"])
def test_an_absurd_learning_rate_is_refused_before_any_work(
    command: list[str], lr: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("photo.jpg").write_bytes(b"never decoded: the options are checked first")
    result = runner.invoke(app, [*command, "--lr", lr, "--model", "/nonexistent/model", "--device", "cpu"])
    one_error(result, f"--lr must be between 1e-08 and 1, not {float(lr):g}")
