"""``sid video`` end to end on a random-weight text-to-video model: ModelScope's layout, or a tiny one.

    python -m benchmarks.video --arch ms --device cuda          # text-to-video-ms-1.7b's UNet3D, 256²
    python -m benchmarks.video --arch tiny-t2v --device cpu

Runs ``sid.video.plan_job`` + ``run_job`` (the code ``sid video`` runs: load, inject a stored identity,
denoise, decode, write an animated gif) ``--runs`` times after one warm-up run; per-step times come from its
``on_step`` callback with a device sync at each call. gif, not mp4: a GPU machine has no ffmpeg.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    VIDEO_ARCHS,
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
    p = argparse.ArgumentParser(prog="python -m benchmarks.video", description=__doc__.splitlines()[0])
    add_common_args(p, "tiny-t2v", VIDEO_ARCHS)
    p.add_argument("--frames", type=int, default=8, help="frames per clip")
    p.add_argument("--steps", type=int, default=10, help="denoising steps")
    p.add_argument("--runs", type=int, default=1, help="timed runs, after one warm-up run")
    p.add_argument("--dtype", default="auto", help="auto | fp16 | bf16 | fp32 (as sid video --dtype)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    with stdout_to_stderr(), tempfile.TemporaryDirectory(prefix="sid-bench-video-") as tmp:
        from sid.pipelines import pick_device
        from sid.video import VideoConfig, plan_job, run_job

        set_threads(args.threads)
        device = pick_device(args.device)
        folder = model_folder(args.arch)
        store = store_identity(Path(tmp), folder)
        clock = Clock(device)
        totals, steps_ms, peak = [], [], (0.0, "")
        with LoadMeter() as load:
            for run in range(args.runs + 1):
                log(f"video: {args.arch} ({device}), {args.frames} frames, {args.steps} steps, run {run}")
                cfg = VideoConfig(
                    "alice dancing in the rain",
                    frames=args.frames,
                    steps=args.steps,
                    seed=0,
                    video_model=str(folder),
                    device=device,
                    dtype=args.dtype,
                    output=Path(tmp) / f"clip-{run}.gif",
                )
                timer = StepTimer(device)
                reset_peak_memory(device)
                start = clock.now()
                result = run_job(plan_job(cfg, store), on_step=timer)
                end = clock.now()
                if run:  # run 0 warms up
                    totals.append(end - start)
                    steps_ms.extend(timer.step_ms(timer.stamps[0], 0))  # from the first step's end
                    peak = peak_memory_gb(device)
        result_json = {
            "benchmark": "video",
            "device": device_name(device),
            "arch": args.arch,
            "frames": result.frames,
            "size": f"{result.size[0]}x{result.size[1]}",
            "steps": args.steps,
            "total_s_median": median(totals),
            "step_ms_median": median(steps_ms),
            "peak_mem_gb": peak[0],
            "peak_mem_kind": peak[1],
            "date": today(),
            "backend": result.backend,
            "identities": result.identities,
            "timed_runs": args.runs,
            "other_load_cores": load.other_cores,
            "versions": versions(),
            "notes": "total = sid.video plan_job + run_job (load, identity, denoise, decode, gif); "
            "steps timed from the end of the first step, with a device sync per step",
        }
    return emit(result_json, args.out)


if __name__ == "__main__":
    main()
