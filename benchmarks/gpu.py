"""Every GPU figure in one command: learn, speed knobs, render, video, 3D, each in its own process.

    python -m benchmarks.gpu                        # on a CUDA machine: results into benchmarks/results/
    python -m benchmarks.gpu --dry-run              # the same parts on CPU with tiny models, into a temp dir
    python -m benchmarks.gpu --parts learn,render   # only some parts

Each part is one child process (``python -m benchmarks.<module> ...``) with a time limit; one that fails
or runs out of time is recorded as such and the next one starts. Each ``torch.compile`` variant and
the CUDA-graphs variant run in processes of their own, so a compile cache or a broken CUDA context never
leaks into the next measurement. A part writes ``<name>-<arch>-<cuda|cpu>.json`` into ``--out-dir``;
the parts of the speed comparison are merged into one ``speed-<arch>-*.json``. At the end a summary
table goes to stdout, ``gpu-run-*.json`` records every part's status, and ``--archive FILE.tgz``
packs the results and logs into one file (the GPU machine returns few files). Start with
``python -m benchmarks.bundle`` here; docs/performance.md ("GPU run") has the exact commands.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, today

# the speed comparison's learn runs: one method, short, a small bank (the setup is not what differs)
SPEED = (
    "--method",
    "stableidentity",
    "--dtype",
    "bf16",
    "--steps",
    "20",
    "--warmup",
    "5",
    "--bank-size",
    "16",
)
TINY = ("--steps", "3", "--warmup", "1", "--bank-size", "4", "--floor-iters", "2")
ON_GPU_ONLY = "attention=efficient", "attention=cudnn"  # no CPU kernels: left out of the dry run
NO_CPU_COMPILE = "torch.compile of a UNet takes minutes on a CPU (4 min for the tiny one): GPU run only"


@dataclass(frozen=True)
class Part:
    """One child process: a benchmark module with its arguments on the GPU and in the dry run."""

    name: str  # unique; --parts picks by full name or by the prefix before the first '-'
    module: str  # benchmarks.<module>
    arch: str  # the model on the GPU; the dry run uses the matching tiny one
    args: tuple[str, ...]  # on the GPU
    dry_args: tuple[str, ...] | None  # on the CPU with tiny models; None: left out, for ``skip_dry``
    limit_s: int  # wall-clock limit of the process
    file: str = ""  # result file stem (default: the name's prefix); parts sharing a stem are merged
    skip_dry: str = ""

    def arch_for(self, dry: bool) -> str:
        tiny = {"ms": "tiny-t2v", "sdxl": "tiny-sdxl", "flux": "tiny-flux"}
        return tiny.get(self.arch, "tiny") if dry else self.arch

    def stem(self, dry: bool) -> str:
        return f"{self.file or self.name.split('-')[0]}-{self.arch_for(dry)}-{'cpu' if dry else 'cuda'}"


def speeds(*labels: str) -> tuple[str, ...]:
    return tuple(arg for label in labels for arg in ("--speed", label))


def speed_part(name: str, labels: tuple[str, ...], limit_s: int, skip_dry: str = "") -> Part:
    """A speed-comparison process: each label one learn run (UNet knobs of ``sid.speed``)."""
    dry_labels = tuple(label for label in labels if label not in ON_GPU_ONLY)
    dry = None if skip_dry else ("--method", "stableidentity", *TINY, *speeds(*dry_labels))
    return Part(name, "learn", "sd21", (*SPEED, *speeds(*labels)), dry, limit_s, "speed", skip_dry)


# "eager" launches every kernel from Python; "default" replays the conditioned prediction as CUDA
# graphs on a GPU with a channels-last UNet, and the other labels are knobs on top of that default
EAGER = (
    "eager",
    "default",
    "channels_last=false",
    "attention=flash",
    *ON_GPU_ONLY,
    "attention=math",
    "attention=classic",
)
# in order of importance: when the time budget runs out, the last ones are skipped. First what no GPU
# has measured yet (together within the 8-minute budget), then what the H100 runs measured, the
# compile variants last (on an H100 they lost, taking minutes to compile)
PARTS = (
    Part(  # K identities per step: step time, peak memory and the cost model (sid.budget) at each K
        "learn-parallel",
        "learn",
        "sd21",
        ("--parallel", "1,2,4,8,16", "--dtype", "bf16", "--steps", "8", "--warmup", "3", "--bank-size", "16"),
        ("--parallel", "1,2", "--steps", "3", "--warmup", "1", "--bank-size", "4"),
        140,
        "learn-parallel",
    ),
    Part(  # 1024², a few steps of one method: building and loading full-size SDXL is most of it
        "learn-sdxl",
        "learn",
        "sdxl",
        ("--dtype", "bf16", "--steps", "8", "--warmup", "3", "--bank-size", "8", "--floor-iters", "5"),
        ("--method", "both", *TINY),  # the dry run checks both methods on the tiny SDXL
        90,
    ),
    Part(  # the bank's VAE encodes at 512² in chunks of 4 to 64: time and peak memory per chunk size
        "bank",
        "bank",
        "sd21",
        (
            "--dtype",
            "bf16",
            "--resolution",
            "512",
            "--chunk",
            "4,16,64",
            "--chunks",
            "3",
            "--formats",
            "contiguous,channels_last",
        ),
        ("--resolution", "64", "--chunk", "4,8", "--chunks", "1"),
        35,
    ),
    Part(  # FLUX.1-dev built on the GPU in bf16 (no download): the default step and --low-vram's, 512²
        "learn-flux",
        "flux",
        "flux",
        ("--part", "learn", "--dtype", "bf16", "--steps", "8", "--warmup", "3", "--bank-size", "8"),
        (
            "--part",
            "learn",
            "--resolution",
            "64",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--bank-size",
            "2",
            "--floor-iters",
            "2",
        ),
        135,
    ),
    Part(
        "render-flux",
        "flux",
        "flux",
        ("--part", "render", "--dtype", "bf16", "--resolution", "1024", "--runs", "2", "--warmup", "1"),
        ("--part", "render", "--resolution", "64", "--render-steps", "2", "--runs", "1", "--warmup", "0"),
        55,
    ),
    Part("imports", "imports", "tiny", (), (), 25),  # where sid learn's import time goes on that machine
    Part(
        "learn-sd21",
        "learn",
        "sd21",
        (
            "--method",
            "both",
            "--dtype",
            "bf16",
            "--steps",
            "30",
            "--warmup",
            "3",
            "--bank-sizes",
            "32,128,512",
        ),
        ("--method", "both", *TINY, "--bank-sizes", "4,8"),
        150,
    ),
    Part(
        "render-sd21",
        "render",
        "sd21",
        ("--steps", "30", "--runs", "7"),  # 3 runs on an H100 spread more than the gap: 7 tell 1.02x apart
        ("--steps", "2", "--runs", "1"),
        150,
    ),
    speed_part("speed-eager", EAGER, 150),
    speed_part(  # the whole step graphed (mapper, loss, clipping, AdamW): step / floor <= 1.15?
        "speed-graphs", ("cuda_graphs=step", "cuda_graphs=unet"), 120, "CUDA graphs need a CUDA device"
    ),
    Part(
        "learn-sd15",
        "learn",
        "sd15",
        ("--method", "both", "--dtype", "bf16", "--steps", "30", "--warmup", "3"),
        None,
        150,
        skip_dry="on the tiny model it is learn-sd21's run",
    ),
    Part(
        "video-ms", "video", "ms", ("--frames", "8", "--steps", "10"), ("--frames", "2", "--steps", "2"), 150
    ),
    Part(
        "3d-sd21",
        "threed",
        "sd21",
        ("--iters", "30"),
        ("--iters", "4", "--warmup", "1", "--resolution", "16"),
        120,
    ),
    Part(
        "naive-sd21",
        "naive",
        "sd21",
        ("--steps", "12"),
        None,
        120,
        skip_dry="tests/test_benchmarks.py runs it",
    ),
    speed_part("speed-compile", ("compile=default",), 180, NO_CPU_COMPILE),
    speed_part("speed-compile-graphs", ("compile=reduce-overhead",), 180, NO_CPU_COMPILE),
    speed_part("speed-autotune", ("compile=max-autotune-no-cudagraphs",), 240, NO_CPU_COMPILE),
)
NEVER_MEASURED = (
    "learn-parallel",
    "learn-sdxl",
    "bank",
    "learn-flux",
    "render-flux",
    "imports",
)  # first, in budget
STABLEIDENTITY = {"method": "stableidentity"}  # the runs of sid's default method
# (result stem prefix, the run's fields that pick it, key, limit): the issue's targets (27, and 23's
# FLUX), checked on the GPU
TARGETS = (
    ("learn-parallel", STABLEIDENTITY, "s_per_identity_best", 3.6),  # >= 1,000 identities per hour
    ("learn-parallel", STABLEIDENTITY, "cost_vs_k1_at_4", 0.6),
    ("learn-parallel", STABLEIDENTITY, "loop_peak_mem_gb_at_8", 40.0),  # the bank's chunk is free memory's
    ("learn-sd21", STABLEIDENTITY, "projected_default_s", 12.0),  # one identity inside learn(), warm
    ("learn-sd21", STABLEIDENTITY, "projected_cli_s", 20.0),  # the sid learn command, imports included
    ("learn-sd21", STABLEIDENTITY, "step_over_floor", 1.15),
    # fits an 8 GB card: the loop's own peak (the bank's chunk grows with free memory, by design)
    ("learn-sd21", STABLEIDENTITY, "loop_peak_mem_gb", 8.0),
    ("bank", {}, "bank_s_default", 1.0),  # 451 entries at the fastest chunk
    ("render-sd21", {}, "ratio", 1.02),
    ("learn-flux", {"low_vram": False}, "projected_default_s", 180.0),  # issue 23
    ("learn-flux", {"low_vram": False}, "peak_mem_gb", 40.0),
    ("learn-flux", {"low_vram": True}, "peak_mem_gb", 24.0),  # float8 weights + recompute
)
# the numbers the summary table shows, when a result has them
HEADLINE = (
    "step_ms_median",
    "step_over_floor",
    "projected_cli_s",
    "peak_mem_gb",
    "ratio",
    "generate_ratio",
    "total_s_median",
    "iter_ms_median",
    "naive_step_ms_median",
    "bank_build_s",
    "entry_ms",
    "bank_s_default",
    "identities_per_hour_best",
    "import_s",
    "sid_s",
)
MIN_PART_S = 20  # a part is not started with less of the budget left


@dataclass
class Outcome:
    part: str
    status: str  # ok | failed | timeout | skipped
    seconds: float = 0.0
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    p.add_argument(
        "--dry-run", action="store_true", help="CPU and tiny models: checks the suite, times nothing"
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="results folder (default: benchmarks/results, or a new temporary folder with --dry-run)",
    )
    p.add_argument("--parts", default="", help="comma-separated part names or prefixes (default: all)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all parts together")
    p.add_argument("--archive", type=Path, default=None, help="also pack results and logs into this .tgz")
    p.add_argument("--list", action="store_true", help="list the parts and exit")
    return p


def child_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(REPO)) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def run_child(cmd: list[str], log: Path, limit_s: float) -> tuple[str, float]:
    """Run ``cmd`` with its output into ``log``; kill its whole process group at ``limit_s``."""
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "timeout", time.perf_counter() - start
    return ("ok" if code == 0 else f"failed (exit {code})"), time.perf_counter() - start


def tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


def run_part(part: Part, dry: bool, work: Path, limit_s: float) -> Outcome:
    args = part.dry_args if dry else part.args
    if args is None:
        return Outcome(part.name, "skipped", reason=part.skip_dry)
    if limit_s < MIN_PART_S:
        return Outcome(part.name, "skipped", reason=f"out of the time budget ({limit_s:.0f} s left)")
    out, log = work / f"{part.name}.json", work / "logs" / f"{part.name}.log"
    cmd = [
        sys.executable,
        "-m",
        f"benchmarks.{part.module}",
        "--arch",
        part.arch_for(dry),
        *args,
        "--out",
        str(out),
    ]
    cmd += ["--device", "cpu", "--threads", "1"] if dry else ["--device", "cuda"]
    print(f"[gpu] {part.name}: {' '.join(cmd[2:])} (limit {limit_s:.0f} s)", file=sys.stderr, flush=True)
    status, seconds = run_child(cmd, log, limit_s)
    if status != "ok" or not out.is_file():
        return Outcome(part.name, status if status != "ok" else "failed", seconds, tail(log))
    result = json.loads(out.read_text(encoding="utf-8"))
    if "skipped" in result:
        return Outcome(part.name, "skipped", seconds, result["skipped"], result)
    return Outcome(part.name, "ok", seconds, result=result)


def runs_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    return result.get("runs", [result])


def write_results(parts: list[Part], outcomes: list[Outcome], dry: bool, out_dir: Path) -> list[Path]:
    """One file per result stem (a merged ``variants`` list where several parts share it); failed
    parts write nothing, so an earlier good result is never overwritten by a failure."""
    by_stem: dict[str, list[tuple[Part, Outcome]]] = {}
    for part, outcome in zip(parts, outcomes, strict=True):
        by_stem.setdefault(part.stem(dry), []).append((part, outcome))
    written = []
    for stem, group in by_stem.items():
        done = [(p, o) for p, o in group if o.status == "ok"]
        if not done:
            continue
        if len(group) == 1:
            data = done[0][1].result
        else:
            variants = []
            for part, outcome in group:
                if outcome.status == "ok":
                    variants += [{"part": part.name, **run} for run in runs_of(outcome.result)]
                else:
                    variants.append({"part": part.name, "status": outcome.status, "reason": outcome.reason})
            first = done[0][1].result
            data = {
                "benchmark": stem.split("-")[0],
                "arch": first["arch"],
                "device": first.get("device"),
                "date": today(),
                "variants": variants,
                "versions": first.get("versions"),
            }
        path = out_dir / f"{stem}.json"
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        written.append(path)
    return written


def headline(run: dict[str, Any]) -> str:
    shown = []
    for key in HEADLINE:
        value = run.get(key)
        if isinstance(value, dict):
            shown.append(f"{key}=" + "/".join(f"{k}:{v:.2f}" for k, v in value.items()))
        elif isinstance(value, (int, float)):
            shown.append(f"{key}={value:.3g}")
    return " ".join(shown)


def summary(outcomes: list[Outcome], dry: bool) -> str:
    rows = [f"{'part':<22} {'status':<16} {'s':>6}  {'run':<32} numbers"]
    for o in outcomes:
        if o.status != "ok":
            rows.append(f"{o.part:<22} {o.status:<16} {o.seconds:>6.0f}  {'':<32} {o.reason[:150]}")
            continue
        for run in runs_of(o.result):
            what = ",".join(str(run[k]) for k in ("method", "speed") if k in run)
            rows.append(f"{o.part:<22} {o.status:<16} {o.seconds:>6.0f}  {what:<32} {headline(run)}")
        for run in o.result.get("by_parallel", []):  # learn-parallel: each K
            rows.append(f"{'':<46} K={run['parallel']:<29} {per_k(run)}")
    rows.append("")
    rows.append(identities_per_hour(outcomes))
    if dry:
        rows.append("dry run (CPU, tiny models): the targets below are for the GPU run")
    for prefix, where, key, limit in TARGETS:
        outcome = next((o for o in outcomes if o.part == prefix and o.status == "ok"), None)
        runs = runs_of(outcome.result) if outcome else []
        runs = [r for r in runs if all(r.get(k) == v for k, v in where.items())]
        value = runs[0].get(key) if runs and runs[0].get("speed", "default") == "default" else None
        verdict = "not measured" if value is None else ("met" if value <= limit else "MISSED")
        measured = "" if value is None else f"{value:.3g}, "
        picked = " ".join(f"{k}={v}" for k, v in where.items())
        rows.append(f"target {prefix} {picked} {key} <= {limit:g}: {measured}{verdict}")
    return "\n".join(rows)


def per_k(run: dict[str, Any]) -> str:
    """One K of learn-parallel: seconds and identities per hour, step time, peak memory."""
    return (
        f"s_per_identity={run['s_per_identity']:.3g} identities_per_hour={run['identities_per_hour']:.0f} "
        f"step_ms_median={run['step_ms_median']:.3g} peak_mem_gb={run['peak_mem_gb']:.3g} "
        f"loop_peak_mem_gb={run['loop_peak_mem_gb']:.3g}"
    )


def identities_per_hour(outcomes: list[Outcome]) -> str:
    """The headline: identities an hour one at a time (learn-sd21's projected learn()) and at the best
    K (learn-parallel, model load amortised)."""
    shown = []
    for o in outcomes:
        if o.status != "ok":
            continue
        if o.part == "learn-sd21":
            alone = [r for r in runs_of(o.result) if r.get("method") == "stableidentity"]
            if alone:
                shown.append(f"one at a time {3600 / alone[0]['projected_default_s']:.0f} (learn-sd21)")
        if o.part == "learn-parallel":
            best = max(o.result["by_parallel"], key=lambda r: r["identities_per_hour"])
            shown.append(f"{best['identities_per_hour']:.0f} at K = {best['parallel']} (learn-parallel)")
    return "identities per hour: " + ("; ".join(shown) or "not measured")


def selected(names: str) -> list[Part]:
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    parts = [p for p in PARTS if not wanted or p.name in wanted or p.name.split("-")[0] in wanted]
    unknown = wanted - {p.name for p in PARTS} - {p.name.split("-")[0] for p in PARTS}
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(sorted(unknown))}: see --list")
    return parts


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    parts = selected(args.parts)
    if args.list:
        for part in parts:
            print(f"{part.name:<22} {part.stem(False)}.json  {' '.join(part.args)}")
        return 0
    dry = args.dry_run
    out_dir = args.out_dir or (
        Path(tempfile.mkdtemp(prefix="sid-gpu-dry-")) if dry else REPO / "benchmarks" / "results"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sid-gpu-") as tmp:
        work = Path(tmp)
        (work / "logs").mkdir()
        status, _ = run_child(
            [sys.executable, "-m", "benchmarks.bundle", "check"], work / "logs" / "check.log", 300
        )
        print((work / "logs" / "check.log").read_text(encoding="utf-8"), file=sys.stderr)
        if status != "ok":
            print(
                "[gpu] the machine lacks what the benchmarks need (above): run python -m benchmarks.bundle "
                "here and carry .gpu-bundle (docs/performance.md, GPU run)",
                file=sys.stderr,
            )
            return 2
        deadline = time.perf_counter() + args.budget
        outcomes = []
        for part in parts:
            left = deadline - time.perf_counter()
            outcomes.append(run_part(part, dry, work, min(part.limit_s, left)))
            print(f"[gpu] {part.name}: {outcomes[-1].status} {outcomes[-1].reason[:200]}", file=sys.stderr)
        written = write_results(parts, outcomes, dry, out_dir)
        table = summary(outcomes, dry)
        record = {
            "benchmark": "gpu-run",
            "date": today(),
            "dry_run": dry,
            "budget_s": args.budget,
            "parts": [
                {"part": o.part, "status": o.status, "seconds": round(o.seconds, 1), "reason": o.reason}
                for o in outcomes
            ],
            "files": [p.name for p in written],
        }
        run_file = out_dir / f"gpu-run-{'cpu' if dry else 'cuda'}.json"
        run_file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if args.archive:
            args.archive.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(args.archive, "w:gz") as tar:
                for path in [*written, run_file]:
                    tar.add(path, arcname=f"results/{path.name}")
                tar.add(work / "logs", arcname="logs")
    print(table)
    print(f"results in {out_dir}")
    return 0 if all(o.status in ("ok", "skipped") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
