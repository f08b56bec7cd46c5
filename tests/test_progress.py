"""Class 7 of issue 13: a long first run names each set-up phase and shows the Hub's download bars."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import sid.train
from sid.cli import app

runner = CliRunner()
PHASES = [
    "finding and parsing the face",
    "loading the model",
    "parsing the celebrity-name prior",
    "encoding the latent bank",
]


@pytest.mark.parametrize("quiet", [False, True])
def test_learn_names_each_phase_and_keeps_download_bars_unless_quiet(
    face_photos: Path, learn_args: list[str], monkeypatch, quiet: bool
) -> None:
    from huggingface_hub.utils import are_progress_bars_disabled

    seen: list[bool] = []
    real = sid.train.build_bank

    def recording(*args, **kwargs):
        seen.append(are_progress_bars_disabled())  # the Hub's bars once the model has loaded
        return real(*args, **kwargs)

    monkeypatch.setattr(sid.train, "build_bank", recording)
    args = ["learn", str(face_photos / "obama_1.jpg"), "--name", "alice", *learn_args]
    args += ["--steps", "10", "--bank-size", "2"]
    result = runner.invoke(app, [*args, *(["-q"] if quiet else [])])
    assert result.exit_code == 0, result.output
    assert seen == [quiet]
    assert not are_progress_bars_disabled()  # and back on afterwards
    err = result.stderr
    if quiet:
        assert err.strip() == ""
        return
    positions = [err.find(p) for p in PHASES]
    assert -1 not in positions and positions == sorted(positions), err
    assert err.find("training 10 steps") < err.find("10/10") and "0/None" not in err
    assert "Loading" not in err  # the libraries' own loading chatter stays hidden


def test_loading_a_model_hides_library_bars_but_not_downloads(tiny_model: Path) -> None:
    import diffusers
    from huggingface_hub.utils import are_progress_bars_disabled

    from sid.pipelines import load_pipeline

    load_pipeline(str(tiny_model), device="cpu")
    assert not diffusers.utils.logging.is_progress_bar_enabled()
    assert not are_progress_bars_disabled()
