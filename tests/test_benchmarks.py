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
    "cli": {
        "help_s_median",
        "ls_s_median",
        "ls_cold_s_median",
        "import_torch_s_median",
        "identities",
        "date",
    },
    "video": {"device", "arch", "frames", "size", "steps", "total_s_median", "step_ms_median", "peak_mem_gb"},
    "3d": {"device", "arch", "iters", "iter_ms_median", "projected_default_s", "total_s", "peak_mem_gb"},
    "faces": {"device", "arch", "vit_ms_median", "parser_ms_median", "vit_first_s", "parser_first_s", "date"},
    "bank": {"device", "arch", "method", "resolution", "chunk", "entry_ms", "date"},
    "serve": {
        "device",
        "arch",
        "steps",
        "cold_cli_s_median",
        "warm_cli_s_median",
        "warm_api_s_median",
        "date",
    },
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
    "serve": ("cold_cli_s_median", "warm_cli_s_median", "warm_api_s_median", "server_render_s_median"),
    "cli": ("help_s_median", "ls_s_median", "ls_cold_s_median", "import_torch_s_median", "identities"),
    "video": ("total_s_median", "step_ms_median", "peak_mem_gb"),
    "3d": ("iter_ms_median", "projected_default_s", "total_s", "peak_mem_gb"),
    "faces": ("vit_ms_median", "parser_ms_median", "vit_first_s", "parser_first_s"),
    "bank": ("augment_ms_per_entry", "encode_ms_per_entry", "entry_ms"),
    "learn-parallel": ("s_per_identity", "identities_per_hour", "step_ms_median", "projected_default_s"),
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
            "--bank-sizes",
            "4,8",
            "--photo",
            str(face_photos / "obama_1.jpg"),
            "--face-models",
            str(facepack),
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["method"] == "both"
    assert set(result["bank_build_s"]) == {"4", "8"} and all(v > 0 for v in result["bank_build_s"].values())
    assert json.loads(capsys.readouterr().out)["runs"][0]["method"] == "stableidentity"
    assert [r["method"] for r in result["runs"]] == ["stableidentity", "celebbasis"]
    for run in result["runs"]:
        assert LEARN_KEYS <= set(run), LEARN_KEYS - set(run)
        assert run["benchmark"] == "learn" and run["arch"] == "tiny" and run["dtype"] == "fp32"
        assert run["steps_run"] == 3 and run["bank_size"] == 4
        assert run["bank_size_default"] == {"stableidentity": 451, "celebbasis": 800}[run["method"]]
        check_numbers(run, "learn")


def test_learn_parallel(facepack, face_photos, capsys):
    """`--parallel 1,2`: `sid learn --from`'s loop at each K, seconds per identity and its cost vs K = 1."""
    from benchmarks import learn

    photo = ("--photo", str(face_photos / "obama_1.jpg"), "--face-models", str(facepack))
    args = [*TINY, "--parallel", "1,2", "--steps", "3", "--warmup", "1", "--bank-size", "4", *photo]
    result = learn.main(args)
    assert json.loads(capsys.readouterr().out)["benchmark"] == "learn-parallel"
    assert [r["parallel"] for r in result["by_parallel"]] == [1, 2]
    for run in result["by_parallel"]:
        k = run["parallel"]
        assert run["steps_run"] == 3 and run["bank_size"] == 4 * k  # every identity's own bank
        assert run["identities_per_hour"] == pytest.approx(3600 / run["s_per_identity"])
        assert result[f"s_per_identity_at_{k}"] == run["s_per_identity"] > 0
        assert run["cost_vs_k1"] == pytest.approx(run["s_per_identity"] / result["s_per_identity_at_1"])
        check_numbers(run, "learn-parallel")
        assert 0 < run["loop_peak_mem_gb"] <= run["peak_mem_gb"]
    model = result["memory_model"]  # sid.budget's cost model, fitted in its own terms (not measured on CPU)
    assert set(model["bytes_beyond_model_gib"]) == {"1", "2"}
    assert model["fitted"]["measured"] is False and model["sid_uses"]["measured"] is False
    assert "estimate" in model["sid_uses"]["source"] and model["free_after_load_gib"] is None
    assert result["identities_per_hour_best"] == max(r["identities_per_hour"] for r in result["by_parallel"])


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


def test_serve(capsys):
    """Cold `sid render --local`, warm `sid render` and the API through a real `sid serve`."""
    from benchmarks import serve

    result = serve.main([*TINY, "--steps", "2", "--runs", "1", "--warmup", "0"])
    check(result, "serve", capsys)
    assert result["resident_models"] == 1  # every warm render used the one loaded model


def test_cli(capsys):
    from benchmarks import cli

    result = cli.main(["--runs", "1", "--identities", "20"])
    check(result, "cli", capsys)
    assert result["identities"] == 20


@pytest.mark.parametrize("method", ["stableidentity", "celebbasis"])
def test_bank(capsys, method):
    from benchmarks import bank

    args = [*TINY, "--method", method, "--resolution", "64", "--chunks", "1", "--chunk", "2,8"]
    args += ["--formats", "contiguous,channels_last"]
    result = bank.main(args)
    check(result, "bank", capsys)
    assert result["method"] == method and result["resolution"] == 64 and result["chunk"] == 2
    assert [r["chunk"] for r in result["by_chunk"]] == [2, 8, 2, 8] and result["sid_chunk"] == 4  # CPU: 4
    assert [r["memory_format"] for r in result["by_chunk"]] == ["contiguous"] * 2 + ["channels_last"] * 2
    assert set(result["entry_ms_vs_first_chunk"]) == {"2", "8", "2,channels_last", "8,channels_last"}
    assert result["entry_ms_vs_first_chunk"]["2"] == 1.0 and result["bank_s_default"] > 0
    for row in result["by_chunk"]:
        assert row["entry_ms"] > 0 and row["peak_mem_gb"] > 0


def test_missing_photo_fails_clearly(tmp_path):
    from benchmarks import learn

    with pytest.raises(SystemExit, match="photo .* not found"):
        learn.main(["--arch", "tiny", "--photo", str(tmp_path / "nope.jpg")])


def test_video(capsys):
    from benchmarks import video

    result = video.main(
        ["--arch", "tiny-t2v", "--device", "cpu", "--threads", "1", "--frames", "2", "--steps", "2"]
    )
    check(result, "video", capsys)
    assert (
        result["frames"] == 2 and result["identities"] == ["alice"] and result["backend"] == "text-to-video"
    )


def test_threed(capsys):
    from benchmarks import threed

    result = threed.main([*TINY, "--iters", "3", "--warmup", "1", "--resolution", "16"])
    check(result, "3d", capsys)
    assert result["identities"] == ["alice"] and result["mesh_faces"] > 0
    assert result["projected_default_s"] == pytest.approx(
        result["default_iters"] * result["iter_ms_median"] / 1e3
    )


def test_gpu_dry_run(facepack, face_photos, tmp_path, capsys):
    """The one-command GPU suite on CPU: every part of a selection runs as its own process, the speed
    variants are merged into one file, GPU-only parts are skipped with a reason, SDXL learns (tiny)."""
    import tarfile

    from benchmarks import gpu

    archive = tmp_path / "run.tgz"
    code = gpu.main(
        [
            "--dry-run",
            "--parts",
            "speed,learn-sdxl",
            "--out-dir",
            str(tmp_path / "out"),
            "--archive",
            str(archive),
            "--budget",
            "900",
        ]
    )
    table = capsys.readouterr().out
    assert code == 0, table
    out = tmp_path / "out"
    names = ["gpu-run-cpu.json", "learn-tiny-sdxl-cpu.json", "speed-tiny-cpu.json"]
    assert sorted(p.name for p in out.iterdir()) == names
    record = {p["part"]: p for p in json.loads((out / "gpu-run-cpu.json").read_text())["parts"]}
    assert record["speed-eager"]["status"] == "ok" and "learn-sd21" not in record
    assert record["speed-graphs"]["status"] == "skipped" and "CUDA" in record["speed-graphs"]["reason"]
    assert record["speed-compile"]["status"] == "skipped" and "compile" in record["speed-compile"]["reason"]
    assert record["learn-sdxl"]["status"] == "ok"
    sdxl = json.loads((out / "learn-tiny-sdxl-cpu.json").read_text())
    assert [r["method"] for r in sdxl["runs"]] == ["stableidentity", "celebbasis"]
    for run in sdxl["runs"]:
        check_numbers(run, "learn")
    speed = json.loads((out / "speed-tiny-cpu.json").read_text())
    labels = [v.get("speed") for v in speed["variants"] if "speed" in v]
    from benchmarks.gpu import EAGER, ON_GPU_ONLY

    # every knob set of the part ran, in order, as the label it was given (the GPU-only ones left out)
    assert labels == [label for label in EAGER if label not in ON_GPU_ONLY] and "eager" in labels
    for run in (v for v in speed["variants"] if "speed" in v):
        check_numbers(run, "learn")
    skipped = {v["part"] for v in speed["variants"] if v.get("status") == "skipped"}
    assert skipped == {"speed-graphs", "speed-compile", "speed-compile-graphs", "speed-autotune"}
    assert "step_over_floor" in table and "speed-eager" in table and "target learn-sd21" in table
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"results/speed-tiny-cpu.json", "logs/speed-eager.log", "logs/check.log"} <= names


def test_gpu_part_failure_and_timeout_are_recorded(tmp_path):
    from benchmarks import gpu

    (tmp_path / "logs").mkdir()
    broken = gpu.Part("broken-x", "no_such_benchmark", "sd21", (), (), 60)
    outcome = gpu.run_part(broken, True, tmp_path, 60)
    assert outcome.status.startswith("failed") and "no_such_benchmark" in outcome.reason
    status, seconds = gpu.run_child(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log", 1
    )
    assert status == "timeout" and seconds < 30
    late = gpu.run_part(broken, True, tmp_path, gpu.MIN_PART_S - 1)
    assert late.status == "skipped" and "budget" in late.reason


def test_faces(capsys):
    from benchmarks import faces

    result = faces.main([*TINY, "--runs", "2"])
    check(result, "faces", capsys)
    assert result["arch"] == "tiny" and result["runs"] == 2


def test_gpu_dry_run_covers_flux(facepack, face_photos, tmp_path, capsys):
    """learn-flux (the default step and --low-vram's) and render-flux run on the tiny FLUX in the dry
    run; on a GPU the same module builds full-size FLUX.1-dev on the device (not measured here)."""
    from benchmarks import gpu

    out = tmp_path / "out"
    code = gpu.main(
        ["--dry-run", "--parts", "learn-flux,render-flux", "--out-dir", str(out), "--budget", "600"]
    )
    table = capsys.readouterr().out
    assert code == 0, table
    learn = json.loads((out / "learn-tiny-flux-cpu.json").read_text())
    default, low = learn["runs"]
    assert (default["low_vram"], low["low_vram"]) == (False, True)
    both = ["transformer", "text_encoder_2"]
    assert (
        low["memory"] == {"gradient_checkpointing": both, "float8_e4m3fn": both} and default["memory"] == {}
    )
    assert 0 < low["weights_gb"] < default["weights_gb"]  # float8 at rest
    for run in (default, low):
        assert run["step_ms_median"] > 0 and run["floor_ms_median"] > 0 and run["peak_mem_gb"] > 0
        assert run["projected_default_s"] > run["setup_s"]
    render = json.loads((out / "render-tiny-flux-cpu.json").read_text())
    assert render["image_s_median"] > 0 and render["steps"] == 2
    assert "target learn-flux low_vram=False projected_default_s <= 180" in table
    low_target = next(line for line in table.splitlines() if "low_vram=True peak_mem_gb <= 24" in line)
    assert f"{low['peak_mem_gb']:.3g}, " in low_target  # the --low-vram run's peak, not the default's


def test_gpu_suite_runs_what_no_gpu_measured_first_within_the_budget():
    from benchmarks import gpu

    first = [p.name for p in gpu.PARTS[: len(gpu.NEVER_MEASURED)]]
    assert first == list(gpu.NEVER_MEASURED)
    default_budget = gpu.parser().parse_args([]).budget
    assert sum(p.limit_s for p in gpu.PARTS if p.name in gpu.NEVER_MEASURED) <= default_budget <= 600
    parallel = next(p for p in gpu.PARTS if p.name == "learn-parallel")
    assert parallel.args[parallel.args.index("--parallel") + 1] == "1,2,4,8,16"
    render = next(p for p in gpu.PARTS if p.name == "render-sd21")
    assert int(render.args[render.args.index("--runs") + 1]) >= 7


def test_gpu_dry_run_throughput(facepack, face_photos, tmp_path, capsys):
    """learn-parallel and bank in the dry run: each K's peak memory and the identities-per-hour line."""
    from benchmarks import gpu

    out = tmp_path / "out"
    parts = "learn-parallel,bank,imports"
    code = gpu.main(["--dry-run", "--parts", parts, "--out-dir", str(out), "--budget", "600"])
    table = capsys.readouterr().out
    assert code == 0, table
    parallel = json.loads((out / "learn-parallel-tiny-cpu.json").read_text())
    assert [r["parallel"] for r in parallel["by_parallel"]] == [1, 2]
    assert all(r["peak_mem_gb"] > 0 for r in parallel["by_parallel"])
    bank = json.loads((out / "bank-tiny-cpu.json").read_text())
    assert [r["chunk"] for r in bank["by_chunk"]] == [4, 8]
    assert "identities per hour: " in table and "(learn-parallel)" in table and "K=2" in table
    assert "target bank  bank_s_default <= 1" in table and "target learn-parallel" in table
    imports = json.loads((out / "imports-tiny-cpu.json").read_text())  # sid learn under -X importtime
    assert imports["import_s"] > imports["sid_s"] > 0 and imports["command_s"] > 0
    assert "torch" in imports["by_package_s"] and imports["via"]["torch"].endswith("sid.train")
    assert "sid.render" not in imports["modules_sid"]  # sid learn does not import what render needs
