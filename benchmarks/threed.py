"""``sid 3d`` for a few iterations on a random-weight model: iteration time, peak memory, projection.

    python -m benchmarks.threed --arch sd21 --device cuda --iters 30
    python -m benchmarks.threed --arch tiny --device cpu

Runs ``sid.threed.generate.generate_3d`` (the code ``sid 3d`` runs) with a stored identity in the
prompt, a small mesh lattice and no turntable (a GPU machine has no ffmpeg); per-iteration times come
from its progress callback with a device sync at each call. ``projected_default_s`` is the default
2500 iterations at the median iteration time.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Clock,
    LoadMeter,
    StepTimer,
    add_common_args,
    device_name,
    emit,
    log,
    median,
    model_folder,
    peak_memory_gb,
    reset_peak_memory,
    set_threads,
    stdout_to_stderr,
    today,
    versions,
)
from benchmarks.render import store_identity


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.threed", description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--iters", type=int, default=30, help="score-distillation iterations")
    p.add_argument("--warmup", type=int, default=3, help="first iterations left out of the median")
    p.add_argument("--resolution", type=int, default=64, help="rendered view size (sid's default 64)")
    p.add_argument("--dtype", default="auto", help="auto | fp16 | bf16 | fp32 (as sid 3d --dtype)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.iters < args.warmup + 1:
        raise SystemExit(f"--iters {args.iters} leaves no iteration to time after --warmup {args.warmup}")
    with stdout_to_stderr(), tempfile.TemporaryDirectory(prefix="sid-bench-3d-") as tmp:
        from sid.pipelines import pick_device
        from sid.threed.generate import ThreeDConfig, generate_3d

        set_threads(args.threads)
        device = pick_device(args.device)
        folder = model_folder(args.arch)
        store = store_identity(Path(tmp), folder)
        cfg = ThreeDConfig(
            "alice bust, marble",
            iters=args.iters,
            resolution=args.resolution,
            model=str(folder),
            device=device,
            dtype=args.dtype,
            output=Path(tmp) / "bust.ply",
            make_turntable=False,
            checkpoint_every=0,
            mesh_resolution=32,
        )
        default_iters = ThreeDConfig("x").iters
        log(f"3d: {args.arch} ({device}), {args.iters} iterations at {args.resolution}²")
        clock, timer = Clock(device), StepTimer(device)
        with LoadMeter() as load:
            reset_peak_memory(device)
            start = clock.now()
            result = generate_3d(cfg, store=store, progress=timer)
            end = clock.now()
            peak_gb, peak_kind = peak_memory_gb(device)
        iter_ms = median(timer.step_ms(timer.stamps[0], args.warmup - 1))
        out = {
            "benchmark": "3d",
            "device": device_name(device),
            "arch": args.arch,
            "iters": args.iters,
            "iter_ms_median": iter_ms,
            "projected_default_s": default_iters * iter_ms / 1e3,
            "total_s": end - start,
            "peak_mem_gb": peak_gb,
            "date": today(),
            "peak_mem_kind": peak_kind,
            "resolution": args.resolution,
            "default_iters": default_iters,
            "warmup_iters": args.warmup,
            "identities": result.identities,
            "mesh_faces": result.faces,
            "other_load_cores": load.other_cores,
            "versions": versions(),
            "notes": "total_s includes loading the model and extracting a 32³ mesh; projected_default_s "
            "is the default iteration count at iter_ms_median (iterations only)",
        }
    return emit(out, args.out)


if __name__ == "__main__":
    main()
