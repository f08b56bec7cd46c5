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

LEARN_KEYS = {"benchmark", "device", "arch", "method", "dtype", "steps_default", "step_ms_median",
              "projected_default_s", "model_load_s", "floor_ms_median", "step_over_floor", "peak_mem_gb", "date"}
POSITIVE = {
    "learn": ("step_ms_median", "projected_default_s", "model_load_s", "floor_ms_median", "step_over_floor",
              "peak_mem_gb", "steps_default"),
    "naive": ("naive_step_ms_median", "sid_step_ms_median", "ratio"),
    "render": ("sid_s_median", "plain_s_median", "ratio", "sid_generate_s_median", "plain_generate_s_median"),
    "cli": ("help_s_median", "ls_s_median", "import_torch_s_median", "identities"),
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


def check(result: dict, name: str, keys: set[str], capsys) -> None:
    printed = capsys.readouterr().out
    assert json.loads(printed) == json.loads(json.dumps(result, default=str))  # stdout is that one object
    assert result["benchmark"] == name
    assert keys <= set(result), keys - set(result)
    for key in POSITIVE[name]:
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key]) and result[key] > 0, (key, result)
    assert result["date"] and result["device"]


def test_learn_both_methods(facepack, face_photos, tmp_path, capsys):
    from benchmarks import learn

    out = tmp_path / "learn.json"
    result = learn.main(["--arch", "tiny", "--device", "cpu", "--threads", "1", "--method", "both", "--steps", "3", "--warmup", "1",
                         "--bank-size", "4", "--floor-iters", "2", "--photo", str(face_photos / "obama_1.jpg"),
                         "--face-models", str(facepack), "--out", str(out)])
    assert json.loads(out.read_text())["method"] == "both"
    printed = capsys.readouterr().out
    assert json.loads(printed)["runs"][0]["method"] == "stableidentity"
    assert [r["method"] for r in result["runs"]] == ["stableidentity", "celebbasis"]
    for run in result["runs"]:
        assert LEARN_KEYS <= set(run), LEARN_KEYS - set(run)
        assert run["arch"] == "tiny" and run["dtype"] == "fp32" and run["steps_run"] == 3
        for key in POSITIVE["learn"]:
            assert math.isfinite(run[key]) and run[key] > 0, (key, run)


def test_naive(facepack, face_photos, capsys):
    from benchmarks import naive

    result = naive.main(["--arch", "tiny", "--device", "cpu", "--threads", "1", "--steps", "3", "--warmup", "1", "--bank-size", "4",
                         "--photo", str(face_photos / "obama_1.jpg"), "--face-models", str(facepack)])
    check(result, "naive", {"arch", "device", "date", "naive_step_ms_median", "sid_step_ms_median", "ratio"}, capsys)


def test_render(capsys):
    from benchmarks import render

    result = render.main(["--arch", "tiny", "--device", "cpu", "--threads", "1", "--steps", "2", "--runs", "1"])
    check(result, "render", {"device", "arch", "steps", "size", "sid_s_median", "plain_s_median", "ratio", "date"},
          capsys)
    assert result["size"] == "64x64" and "<sid-alice>" in result["identity_tokens"]


def test_cli(capsys):
    from benchmarks import cli

    result = cli.main(["--runs", "1", "--identities", "20"])
    check(result, "cli", {"help_s_median", "ls_s_median", "import_torch_s_median", "identities", "date", "device"},
          capsys)
    assert result["identities"] == 20


def test_missing_photo_fails_clearly(tmp_path):
    from benchmarks import learn

    with pytest.raises(SystemExit, match="photo .* not found"):
        learn.main(["--arch", "tiny", "--photo", str(tmp_path / "nope.jpg")])
