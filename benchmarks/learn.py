"""Time sid's real training loop (``sid.train.learn``) on a random-weight model of a given size.

    python -m benchmarks.learn --arch sd21 --device cuda            # the default recipe's step, 512²
    python -m benchmarks.learn --arch tiny --method both --device cpu
    python -m benchmarks.learn --arch sd21 --speed eager --speed default --speed attention=flash

The model is saved to a folder and learned on with ``--model FOLDER`` semantics, so the timed code is
the code users run. Per-step times come from the loop's own ``progress`` callback, called every step
(``log_every=1``; each call follows the loop's host sync), with the first ``--warmup`` steps left out
of the median. ``floor_ms_median`` is a bare frozen UNet forward + backward with the gradient going
only into the text conditioning: what any method that trains through the UNet must pay per step.
Each ``--speed`` (``sid.speed.Speedups``, e.g. ``channels_last,compile=default``) is one more run in
this process, floor included; ``--bank-sizes`` also times building the latent bank (VAE encodes) at
those sizes. ``--arch sdxl`` learns on both text encoders at 1024² (``--resolution`` lowers it; the
floor then also feeds the UNet SDXL's pooled text embedding and size condition); ``tiny-sdxl`` is its
tiny counterpart for CPU checks.
"""

from __future__ import annotations

import argparse
import gc
import math
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

from benchmarks.common import (
    ARCHS,
    DEFAULT_FACE_MODELS,
    DEFAULT_PHOTO,
    Clock,
    LoadMeter,
    add_common_args,
    device_name,
    emit,
    face_model_folders,
    log,
    median,
    model_folder,
    peak_memory_gb,
    require_faces,
    reset_peak_memory,
    set_threads,
    stdout_to_stderr,
    today,
    versions,
)

if TYPE_CHECKING:
    from sid.speed import Speedups

METHODS = ("stableidentity", "celebbasis")
TARGET_KEYS = (
    "s_per_identity",
    "cost_vs_k1",
    "peak_mem_gb",
    "loop_peak_mem_gb",
)  # per K, at the top (benchmarks.gpu's targets)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.learn", description=__doc__.splitlines()[0])
    add_common_args(p, archs=(*ARCHS, "tiny-sdxl"))
    p.add_argument("--method", default="stableidentity", choices=(*METHODS, "both"))
    p.add_argument("--steps", type=int, default=30, help="steps to run (the projection uses the recipe's)")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    p.add_argument("--dtype", default="auto", help="GPU autocast: auto | bf16 | fp16 | fp32 (CPU is fp32)")
    p.add_argument("--resolution", type=int, default=None, help="training size (default: the model's native)")
    p.add_argument(
        "--bank-size", type=int, default=None, help="bank entries to build (default: sid's, one per sample)"
    )
    p.add_argument("--floor-iters", type=int, default=None, help="timed floor iterations (default: as steps)")
    p.add_argument(
        "--speed",
        action="append",
        default=None,
        help="speed knobs for one run, e.g. eager,channels_last (repeatable; default: sid's defaults)",
    )
    p.add_argument("--bank-sizes", default="", help="also time building banks of these sizes: 32,128,512")
    p.add_argument(
        "--parallel",
        default="",
        help="instead: time `sid learn --from` learning K identities per step, for each K of e.g. 1,2,4,8",
    )
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--face-models", type=Path, default=DEFAULT_FACE_MODELS)
    return p


def import_heavy() -> float:
    """Import what ``sid learn`` imports, so that model_load_s is loading only; returns the seconds."""
    start = time.perf_counter()
    import cv2  # noqa: F401
    import insightface  # noqa: F401
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    from diffusers import DiffusionPipeline  # noqa: F401
    from transformers import CLIPTextModel  # noqa: F401

    import sid.train  # noqa: F401

    return time.perf_counter() - start


def time_learn(
    folder: Path,
    method: str,
    device: str,
    photo: Path,
    face_models: Path,
    steps: int,
    warmup: int = 2,
    dtype: str = "auto",
    resolution: int | None = None,
    bank_size: int | None = None,
    speed: Speedups | None = None,
    vit_model: Path | None = None,
    face_parser: Path | None = None,
    parallel: int = 0,
) -> dict[str, Any]:
    """Run ``sid.train.learn`` once and time its phases and every step.

    Phases are timed by wrapping the functions ``learn`` calls (extract_face and face_embeddings:
    faces_s, load_pipeline, build_bank), each followed by a device sync; steps by the ``progress``
    callback. ``vit_model`` and ``face_parser`` are folders (None: sid's own resolution). With
    ``parallel`` K, ``sid learn --from``'s loop (``sid.many.learn_many``) learns K copies of the photo
    together instead, and the times are those of the batch of K.
    """
    import sid.many as many
    import sid.train as train
    from sid.manifest import Row
    from sid.pipelines import autocast_dtype
    from sid.speed import Speedups
    from sid.store import IdentityStore

    if steps < warmup + 1:
        raise SystemExit(f"--steps {steps} leaves no step to time after --warmup {warmup}")
    clock = Clock(device)
    phases: dict[str, float] = {"faces_s": 0.0, "model_load_s": 0.0, "bank_s": 0.0}
    marks: dict[str, float] = {}

    peaks: dict[str, float] = {}  # the run's peak memory so far, at the end of each phase

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = clock.now()
            result = fn(*args, **kwargs)
            t1 = clock.now()
            phases[name] += t1 - t0
            marks[f"{name}_end"] = t1
            key = f"after_{name.removesuffix('_s')}"
            peaks[key] = max(peaks.get(key, 0.0), peak_memory_gb(device)[0])
            if name == "bank_s":  # from here on the peak is the loop's own (every bank precedes the loop)
                reset_peak_memory(device)
            return result

        return wrapper

    stamps: list[float] = []

    def progress(step: int, total: int, loss: float) -> None:
        stamps.append(time.perf_counter())  # the loop synced (moved losses to the host) just before

    cfg = train.LearnConfig(
        method=method,
        model=str(folder),
        steps=steps,
        seed=0,
        device=device,
        dtype=dtype,
        resolution=resolution,
        bank_size=bank_size,
        face_models=str(face_models),
        vit_model=str(vit_model) if vit_model else None,
        face_parser=str(face_parser) if face_parser else None,
        log_every=1,
        checkpoint_every=0,
        speed=speed or Speedups(),
    )
    with tempfile.TemporaryDirectory(prefix="sid-bench-learn-") as home, ExitStack() as stack:
        phases_of = {
            "extract_face": "faces_s",
            "face_embeddings": "faces_s",
            "load_pipeline": "model_load_s",
            "build_bank": "bank_s",
        }
        for name, phase in phases_of.items():  # sid.many learns through sid.train's loop too
            stack.enter_context(mock.patch.object(train, name, timed(phase, getattr(train, name))))
        reset_peak_memory(device)
        start = clock.now()
        store = IdentityStore(Path(home) / "identities")
        if parallel:
            rows = [Row(i, photo, f"bench{i}") for i in range(1, parallel + 1)]
            many.learn_many(rows, cfg, parallel, store=store, force=True, progress=progress)
            identity = store.get("bench1")
        else:
            identity = train.learn(
                [photo], ["bench"], cfg, store=store, force=True, progress=progress
            ).identities[0]
        end = clock.now()
        loop_peak_gb, peak_kind = peak_memory_gb(device)
        peak_gb = max(loop_peak_gb, *peaks.values())
    if len(stamps) != steps:
        raise RuntimeError(f"expected {steps} progress calls, got {len(stamps)}")
    setup_end = marks["bank_s_end"]
    times = [b - a for a, b in zip([setup_end, *stamps[:-1]], stamps, strict=True)]
    step_s = median(times[warmup:])
    recipe = train.RECIPES[method]
    setup_s = setup_end - start  # faces, model, prior, mapper, bank
    warmup_s = stamps[warmup - 1] - setup_end if warmup else 0.0  # first steps, optimizer creation included
    finish_s = end - stamps[-1]  # final vectors and the store write
    amp = autocast_dtype(device, dtype)
    entries = identity.settings["bank_size"] * max(1, parallel)  # of all the identities learned
    default_entries = train.default_bank_size(recipe.steps, recipe.batch_size, 1) * max(1, parallel)
    default_setup_s = setup_s + (default_entries - entries) * phases["bank_s"] / entries  # the default bank
    return {
        "method": method,
        "dtype": dtype_name(amp),
        "steps_default": recipe.steps,
        "steps_run": steps,
        "batch_size": recipe.batch_size,
        "resolution": identity.settings["resolution"],
        "bank_size": entries,
        "bank_size_default": default_entries,
        "bank_ms_per_entry": phases["bank_s"] / entries * 1e3,
        "step_ms_median": step_s * 1e3,
        "step_ms_min": min(times[warmup:]) * 1e3,
        "step_ms_max": max(times[warmup:]) * 1e3,
        "warmup_steps": warmup,
        "projected_default_s": default_setup_s + warmup_s + (recipe.steps - warmup) * step_s + finish_s,
        "setup_s": setup_s,
        "faces_s": phases["faces_s"],
        "model_load_s": phases["model_load_s"],
        "bank_s": phases["bank_s"],
        "warmup_s": warmup_s,
        "finish_s": finish_s,
        "total_s": end - start,
        "final_loss": identity.final_loss,
        "peak_mem_gb": peak_gb,
        "loop_peak_mem_gb": loop_peak_gb,
        "peak_mem_kind": peak_kind,
        "peak_mem_gb_so_far": peaks,
    }


def dtype_name(amp: Any) -> str:
    """The loop's autocast dtype as sid spells it (None: no autocast, fp32)."""
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(amp), "fp32")


def floor_ms(
    folder: Path,
    device: str,
    dtype: str,
    batch: int,
    resolution: int,
    iters: int,
    warmup: int = 2,
    speed: Speedups | None = None,
) -> list[float]:
    """Milliseconds of bare frozen-UNet forward + backward, the gradient only into the text conditioning.

    Same device, weight dtype, autocast, latent size, batch and speed knobs as the loop's step.
    """
    import torch
    from diffusers import UNet2DConditionModel

    from sid.adapters import size_condition
    from sid.pipelines import autocast_dtype
    from sid.speed import Speedups, unet_step

    amp = autocast_dtype(device, dtype)
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet").to(device)
    unet.requires_grad_(False).eval()
    if amp is not None:
        unet.to(amp)
    speed = speed or Speedups()
    if speed.graphs(device) in ("predict", "step"):  # the floor is the UNet alone, graphed as in the step
        speed = replace(speed, cuda_graphs="unet")
    denoise = unet_step(unet, speed, device, amp)
    side = resolution // 8
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, unet.config.in_channels, side, side, generator=g).to(device, unet.dtype)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    cond = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g).to(device).requires_grad_()
    added: tuple[Any, ...] = ()  # SD 1.x/2.x: the text conditioning only
    if unet.config.addition_embed_type == "text_time":  # SDXL: also the pooled text embedding, time_ids
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        text_embeds = torch.randn(batch, pooled, generator=g).to(device).requires_grad_()
        added = (text_embeds, size_condition(resolution, device).expand(batch, -1))
    clock = Clock(device)
    times = []
    for _ in range(warmup + iters):
        t0 = clock.now()
        with torch.autocast(device.split(":")[0], dtype=amp or torch.float32, enabled=amp is not None):
            out = denoise(z, t, cond.to(unet.dtype), *(a.to(unet.dtype) for a in added)).float()
        out.square().mean().backward()
        cond.grad = None
        times.append((clock.now() - t0) * 1e3)
    del unet, denoise
    return times[warmup:]


def bank_build_s(
    folder: Path, device: str, dtype: str, photo: Path, face_models: Path, resolution: int, sizes: list[int]
) -> dict[str, float]:
    """Seconds to build the latent bank (augment + VAE-encode) at each size, after one warm-up build."""
    import torch
    from diffusers import AutoencoderKL

    from sid.bank import build_bank
    from sid.faces import extract_face
    from sid.pipelines import autocast_dtype

    vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae").to(device)  # fp32, as learn loads it
    vae.requires_grad_(False).eval()
    crop = extract_face(photo, face_models=str(face_models))
    clock = Clock(device)
    seconds = {}
    for size in [min(sizes), *sizes]:  # the first build warms up
        t0 = clock.now()
        gen = torch.Generator().manual_seed(0)
        build_bank(crop, vae, resolution, size, gen, "stableidentity", device, autocast_dtype(device, dtype))
        seconds[str(size)] = clock.now() - t0
    return seconds


def time_args(
    args: argparse.Namespace,
    method: str,
    folder: Path,
    device: str,
    speed: Speedups | None,
    parallel: int = 0,
) -> dict[str, Any]:
    """``time_learn`` with this command line's settings."""
    return time_learn(
        folder,
        method,
        device,
        args.photo,
        args.face_models,
        args.steps,
        args.warmup,
        args.dtype,
        args.resolution,
        args.bank_size,
        speed,
        *face_model_folders(args.arch),  # the paper's ViT and parser sizes (tiny ones for tiny)
        parallel=parallel,
    )


def run(
    args: argparse.Namespace, method: str, speed: Speedups, folder: Path, device: str, import_s: float
) -> dict[str, Any]:
    log(f"learn: {method} on {args.arch} ({device}), {args.steps} steps, speed {speed.label()}")
    with LoadMeter() as load:
        timing = time_args(args, method, folder, device, speed)
        gc.collect()
        floor = floor_ms(
            folder,
            device,
            args.dtype,
            timing["batch_size"],
            timing["resolution"],
            args.floor_iters or max(3, args.steps - args.warmup),
            args.warmup,
            speed,
        )
    floor_median = median(floor)
    result = {
        "benchmark": "learn",
        "device": device_name(device),
        "arch": args.arch,
        "method": method,
        "speed": speed.label(),
        "dtype": timing.pop("dtype"),
        "steps_default": timing.pop("steps_default"),
        "step_ms_median": timing.pop("step_ms_median"),
        "projected_default_s": timing.pop("projected_default_s"),
        "model_load_s": timing.pop("model_load_s"),
        "floor_ms_median": floor_median,
        "step_over_floor": None,
        "peak_mem_gb": timing.pop("peak_mem_gb"),
        "date": today(),
    }
    result["step_over_floor"] = result["step_ms_median"] / floor_median
    result.update(timing)
    result["import_s"] = import_s
    result["other_load_cores"] = load.other_cores
    result["projected_cli_s"] = import_s + result["projected_default_s"]
    result["notes"] = (
        "projected_default_s = setup_s (with the bank rescaled to bank_size_default entries at "
        "bank_ms_per_entry) + warmup_s + (steps_default - warmup_steps) x step_ms_median + finish_s, "
        "inside learn(); projected_cli_s adds import_s. Steps are "
        "timed with a host sync every step (log_every=1), without checkpoints "
        "(checkpoint_every=0)."
    )
    return result


def run_parallel(
    args: argparse.Namespace, ks: list[int], folder: Path, device: str, import_s: float
) -> dict[str, Any]:
    """Identities per hour and seconds per identity at each K (the default recipe, model load amortised:
    a batch loads its model once), and each K's cost per identity relative to K = 1."""
    log(f"learn --parallel {ks[0]}: a warm-up run, not recorded (the first run pays one-off initialisation)")
    time_args(args, args.method, folder, device, None, parallel=ks[0])
    runs = []
    for k in ks:
        log(f"learn --parallel {k}: {args.method} on {args.arch} ({device}), {args.steps} steps")
        with LoadMeter() as load:
            timing = time_args(args, args.method, folder, device, None, parallel=k)
        per_identity = (timing["projected_default_s"] - timing["model_load_s"]) / k
        runs.append(
            {"parallel": k, "s_per_identity": per_identity, "identities_per_hour": 3600 / per_identity}
        )
        runs[-1].update(timing, other_load_cores=load.other_cores)
        gc.collect()
    base = runs[0]["s_per_identity"] if ks[0] == 1 else None
    for r in runs:
        r["cost_vs_k1"] = r["s_per_identity"] / base if base else None
    return {
        "benchmark": "learn-parallel",
        "device": device_name(device),
        "arch": args.arch,
        "method": args.method,
        "dtype": runs[0]["dtype"],
        "date": today(),
        "summary": {
            str(r["parallel"]): {
                k: r[k] for k in ("s_per_identity", "identities_per_hour", "cost_vs_k1", "step_ms_median")
            }
            | {"peak_mem_gb": r["peak_mem_gb"], "loop_peak_mem_gb": r["loop_peak_mem_gb"]}
            for r in runs
        },
        **{f"{key}_at_{r['parallel']}": r[key] for r in runs for key in TARGET_KEYS},
        "s_per_identity_best": min(r["s_per_identity"] for r in runs),
        "identities_per_hour_best": max(r["identities_per_hour"] for r in runs),
        "memory_model": memory_model(runs, args.arch, device),
        "by_parallel": runs,
        "import_s": import_s,
        "notes": "s_per_identity = (projected_default_s - model_load_s) / K: one batch of K identities "
        "at the recipe's steps, faces, banks (at the default size) and stores included, the model "
        "load left out (a manifest loads it once). projected_default_s as in the learn benchmark.",
    }


def memory_model(runs: list[dict[str, Any]], arch: str, device: str) -> dict[str, Any]:
    """Each K's peak beyond the loaded model, fitted to ``sid.budget``'s cost model (fixed + per
    sample) and set beside the model sid uses now, in the same terms (GiB; per sample at the run's
    resolution), with the K each would choose on this device."""
    from sid.budget import GIB, fit_parallel, free_bytes, parallel_cost

    batch, resolution = runs[0]["batch_size"], runs[0]["resolution"]
    beyond = [  # the loop's peak: the bank's chunk, sized from free memory, is freed before the loop
        (r["parallel"], (r["loop_peak_mem_gb"] - r["peak_mem_gb_so_far"]["after_model_load"]) * 1e9)
        for r in runs
    ]
    on_gpu = device.startswith("cuda")
    source = f"{arch} on {device_name(device)}: loop_peak_mem_gb - the peak after loading the model, at K = "
    fitted = fit_parallel(beyond, batch, resolution, source + ",".join(str(k) for k, _ in beyond), on_gpu)
    used = parallel_cost("sdxl" if "sdxl" in arch else "sd")
    if device.startswith("cuda"):  # hand the runs' cached blocks back, so free is what a fresh run sees
        import torch

        gc.collect()
        torch.cuda.empty_cache()
    free = free_bytes(device)
    if free is not None:  # what a run sees when it asks: after loading the model
        free -= runs[0]["peak_mem_gb_so_far"]["after_model_load"] * 1e9
    return {
        "bytes_beyond_model_gib": {str(k): b / GIB for k, b in beyond},
        "fitted": {
            "fixed_gib": fitted.fixed / GIB,
            "sample_gib": fitted.sample / GIB,
            "resolution": resolution,
            "measured": on_gpu,
            "source": fitted.source,
        },
        "sid_uses": {
            "fixed_gib": used.fixed / GIB,
            "sample_gib": used.per_identity(1, resolution) / GIB,
            "resolution": resolution,
            "measured": used.measured,
            "source": used.source,
        },
        "free_after_load_gib": None if free is None else free / GIB,
        "k_fitted_would_choose": None if free is None else fitted.parallel(free, batch, resolution),
        "k_sid_chooses": None if free is None else used.parallel(free, batch, resolution),
        "notes": "on CPU the bytes are the process's peak RSS: allocator noise, not a cost model "
        "(measured: false); on CUDA torch.cuda.max_memory_allocated. sample_gib is per training sample "
        "at this resolution (sid.budget.ParallelCost scales it by the pixel count).",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    with stdout_to_stderr():
        from sid.pipelines import pick_device
        from sid.speed import parse_speedups

        args.photo, args.face_models = require_faces(args.photo, args.face_models)
        speeds = [parse_speedups(s) for s in args.speed or ["default"]]
        sizes = [int(s) for s in args.bank_sizes.split(",") if s.strip()]
        import_s = import_heavy()
        set_threads(args.threads)
        device = pick_device(args.device)
        folder = model_folder(args.arch)
        if args.parallel:
            if args.method not in METHODS:
                raise SystemExit("--parallel times one --method")
            ks = [int(k) for k in args.parallel.split(",")]
            result = run_parallel(args, ks, folder, device, import_s) | {"versions": versions()}
    if args.parallel:
        return emit(result, args.out)
    with stdout_to_stderr():
        methods = METHODS if args.method == "both" else (args.method,)
        runs = [run(args, m, s, folder, device, import_s) for m in methods for s in speeds]
        if len(runs) == 1:
            result = runs[0]
        else:
            result = {
                "benchmark": "learn",
                "device": runs[0]["device"],
                "arch": args.arch,
                "method": args.method,
                "date": today(),
                "runs": runs,
            }
        if sizes:
            resolution = runs[0]["resolution"]
            result["bank_build_s"] = bank_build_s(
                folder, device, args.dtype, args.photo, args.face_models, resolution, sizes
            )
        result["versions"] = versions()
    for r in result.get("runs", [result]):
        assert all(math.isfinite(r[k]) for k in ("step_ms_median", "floor_ms_median")), r
    return emit(result, args.out)


if __name__ == "__main__":
    main()
