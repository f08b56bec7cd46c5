"""The benchmarks still run and print their JSON (tiny settings; nothing here is timed)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

TINY = ["--arch", "tiny", "--device", "cpu", "--threads", "1"]
LEARN_KEYS = {
    "benchmark",
    "device",
    "arch",
    "method",
    "dtype",
    "steps_default",
    "step_ms_median",
    "projected_default_s",
    "model_load_s",
    "floor_ms_median",
    "step_over_floor",
    "peak_mem_gb",
    "date",
}
KEYS = {
    "naive": {"arch", "device", "date", "naive_step_ms_median", "sid_step_ms_median", "ratio"},
    "render": {"device", "arch", "steps", "size", "sid_s_median", "plain_s_median", "ratio", "date"},
    "cli": {"help_s_median", "ls_s_median", "import_torch_s_median", "identities", "date", "device"},
    "bank": {"device", "arch", "method", "resolution", "chunk", "entry_ms", "date"},
}
POSITIVE = {
    "learn": (
        "step_ms_median",
        "projected_default_s",
        "model_load_s",
        "floor_ms_median",
        "step_over_floor",
        "peak_mem_gb",
        "steps_default",
    ),
    "naive": ("naive_step_ms_median", "sid_step_ms_median", "ratio"),
    "render": ("sid_s_median", "plain_s_median", "ratio", "sid_generate_s_median", "plain_generate_s_median"),
    "cli": ("help_s_median", "ls_s_median", "import_torch_s_median", "identities"),
    "bank": ("augment_ms_per_entry", "encode_ms_per_entry", "entry_ms"),
}


@pytest.fixture(scope="module", autouse=True)
def bench_cache(tmp_path_factory):
    """Tiny models for the benchmarks built into this session's temp folder, not /tmp's shared cache.

    The benchmarks run with ``--threads 1`` (robust on a busy machine); torch's setting is restored after.
    """
    import torch

    from sid.testing import find_bpe_vocab

    if find_bpe_vocab() is None:
        pytest.skip("CLIP BPE vocabulary missing: pip install --no-deps open-clip-torch")
    old, threads = os.environ.get("SID_BENCH_CACHE"), torch.get_num_threads()
    os.environ["SID_BENCH_CACHE"] = str(tmp_path_factory.mktemp("bench-models"))
    yield
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("SID_BENCH_CACHE", None)
    else:
        os.environ["SID_BENCH_CACHE"] = old


def check_numbers(result: dict, name: str) -> None:
    for key in POSITIVE[name]:
        value = result[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, result)


def check(result: dict, name: str, capsys) -> None:
    printed = capsys.readouterr().out
    assert json.loads(printed) == json.loads(json.dumps(result, default=str))  # stdout is that one object
    assert result["benchmark"] == name
    assert KEYS[name] <= set(result), KEYS[name] - set(result)
    check_numbers(result, name)
    assert result["date"] and result["device"]


def test_learn_both_methods(facepack, face_photos, tmp_path, capsys):
    from benchmarks import learn

    out = tmp_path / "learn.json"
    result = learn.main(
        [
            *TINY,
            "--method",
            "both",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--bank-size",
            "4",
            "--floor-iters",
            "2",
            "--photo",
            str(face_photos / "obama_1.jpg"),
            "--face-models",
            str(facepack),
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["method"] == "both"
    assert json.loads(capsys.readouterr().out)["runs"][0]["method"] == "stableidentity"
    assert [r["method"] for r in result["runs"]] == ["stableidentity", "celebbasis"]
    for run in result["runs"]:
        assert LEARN_KEYS <= set(run), LEARN_KEYS - set(run)
        assert run["benchmark"] == "learn" and run["arch"] == "tiny" and run["dtype"] == "fp32"
        assert run["steps_run"] == 3 and run["bank_size"] == 4
        assert run["bank_size_default"] == {"stableidentity": 451, "celebbasis": 800}[run["method"]]
        check_numbers(run, "learn")


def test_naive(facepack, face_photos, capsys):
    from benchmarks import naive

    result = naive.main(
        [
            *TINY,
            "--steps",
            "3",
            "--warmup",
            "1",
            "--bank-size",
            "4",
            "--photo",
            str(face_photos / "obama_1.jpg"),
            "--face-models",
            str(facepack),
        ]
    )
    check(result, "naive", capsys)


def test_render(capsys):
    from benchmarks import render

    result = render.main([*TINY, "--steps", "2", "--runs", "1"])
    check(result, "render", capsys)
    assert result["size"] == "64x64" and "<sid-alice>" in result["identity_tokens"]
    assert result["warnings"] == []  # the identity's fingerprint matches the model


def test_cli(capsys):
    from benchmarks import cli

    result = cli.main(["--runs", "1", "--identities", "20"])
    check(result, "cli", capsys)
    assert result["identities"] == 20


@pytest.mark.parametrize("method", ["stableidentity", "celebbasis"])
def test_bank(capsys, method):
    from benchmarks import bank

    result = bank.main([*TINY, "--method", method, "--resolution", "64", "--chunks", "1", "--chunk", "2"])
    check(result, "bank", capsys)
    assert result["method"] == method and result["resolution"] == 64 and result["chunk"] == 2


def test_missing_photo_fails_clearly(tmp_path):
    from benchmarks import learn

    with pytest.raises(SystemExit, match="photo .* not found"):
        learn.main(["--arch", "tiny", "--photo", str(tmp_path / "nope.jpg")])
