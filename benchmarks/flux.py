"""FLUX.1 learn and render on a full-size random-weight FLUX.1-dev built on the device: no download, no disk.

    python -m benchmarks.flux --arch flux --part learn --device cuda     # learn-flux: default, --low-vram
    python -m benchmarks.flux --arch flux --part render --device cuda    # render-flux (dev: 28 steps)
    python -m benchmarks.flux --arch tiny-flux --part learn --device cpu # the GPU suite's dry run

The transformer (19 double + 38 single blocks, 3072 wide), T5-v1.1-XXL (24 layers, 4096 wide), CLIP-L
and the 16-channel VAE are built from FLUX.1-dev's published configs straight on the device in the
autocast dtype (bf16; the VAE and CLIP in fp32, as ``sid learn`` loads them), with the tests' offline T5
tokenizer (its ids are a subset of the real vocabulary's rows). Learning goes through
``sid.train.learn`` with that pipeline in its adapter (``frozen_model``), so the step is the one users
run. Each learn run reports the median step after the warm-up, the floor (the frozen transformer's
forward and backward alone, the gradient only into its text inputs), peak memory, and the default
recipe projected: setup (faces, bank) + the recipe's steps at the median. Render times sid's
``generate`` (what ``sid render`` calls) at FLUX.1-dev's defaults. Targets (issue 23, one H100/H200,
512²): the default recipe within 3 minutes and 40 GB; ``--low-vram`` within 24 GB. Not measured yet.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks.common import (
    DEFAULT_FACE_MODELS,
    DEFAULT_PHOTO,
    SD_VAE,
    Clock,
    add_common_args,
    device_name,
    emit,
    face_model_folders,
    log,
    median,
    peak_memory_gb,
    require_faces,
    reset_peak_memory,
    set_threads,
    stdout_to_stderr,
    today,
    versions,
)

ARCHS = ("tiny-flux", "flux")
# FLUX.1-dev's component configs (black-forest-labs/FLUX.1-dev, */config.json), minus the weights
TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
T5_XXL = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.1,
    "tie_word_embeddings": False,
}
CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}
VAE = {  # SD's VAE layout with FLUX's 16 latent channels, scale and shift
    **SD_VAE,
    "latent_channels": 16,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
SCHEDULER = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def build_flux(arch: str, device: str, amp: Any) -> Any:
    """A FluxPipeline with random weights on ``device``: the transformer and T5 in ``amp`` (None: fp32)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from sid.testing import clip_tokenizer, t5_tokenizer, tiny_flux_pipeline

    if arch == "tiny-flux":
        return tiny_flux_pipeline().to(device)
    torch.manual_seed(0)
    half = amp or torch.float32
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(half)  # built in the load dtype: no fp32 copy of 17B parameters
        try:
            transformer = FluxTransformer2DModel(**TRANSFORMER)
            t5 = T5EncoderModel(T5Config(**T5_XXL)).eval()
        finally:
            torch.set_default_dtype(previous)
        clip = CLIPTextModel(CLIPTextConfig(**CLIP_L)).eval()
        vae = AutoencoderKL(**VAE)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer(),
        transformer=transformer,
    )


def floor_ms(model: Any, batch: int, warmup: int, iters: int) -> list[float]:
    """Milliseconds of the frozen transformer's forward + backward alone at the training size, the
    gradient only into its text inputs (T5 sequence and pooled CLIP), as in the step."""
    import torch

    device, side = model.device, model.resolution // int(model.pipe.vae_scale_factor)
    g = torch.Generator().manual_seed(0)
    channels = model.denoiser.config.in_channels // 4
    z = torch.randn(batch, channels, side, side, generator=g).to(device)
    t = torch.rand(batch, generator=g).to(device)
    seq = torch.randn(batch, model.T5_LENGTH, model.denoiser.config.joint_attention_dim, generator=g)
    pooled = torch.randn(batch, model.denoiser.config.pooled_projection_dim, generator=g)
    seq, pooled = seq.to(device).requires_grad_(), pooled.to(device).requires_grad_()
    clock, times = Clock(device), []
    dtype = model.denoiser.dtype
    for _ in range(warmup + iters):
        t0 = clock.now()
        with model.autocast():
            out = model.denoise(z.to(dtype), t, seq.to(dtype), pooled.to(dtype)).float()
        out.square().mean().backward()
        seq.grad = pooled.grad = None
        times.append((clock.now() - t0) * 1e3)
    return times[warmup:]


def learn_run(args: argparse.Namespace, pipe: Any, device: str, low_vram: bool) -> dict[str, Any]:
    """One ``sid.train.learn`` run on the built pipeline: step times, floor, peak memory, projection."""
    import sid.train as train
    from sid.methods import RECIPES
    from sid.pipelines import ModelSpec
    from sid.store import IdentityStore

    vit, parser = face_model_folders(args.arch)
    cfg = train.LearnConfig(
        method=args.method,
        steps=args.steps,
        device=device,
        dtype=args.dtype,
        resolution=args.resolution,
        bank_size=args.bank_size,
        face_models=str(args.face_models),
        vit_model=str(vit),
        face_parser=str(parser),
        log_every=1,
        checkpoint_every=0,
        low_vram=low_vram,
    )
    model = train.frozen_model(pipe, ModelSpec(f"random {args.arch}", ()), cfg, device)
    stamps: list[float] = []
    clock = Clock(device)
    reset_peak_memory(device)
    # learn() loads its model by name; here it gets the pipeline built on the device instead
    with (
        tempfile.TemporaryDirectory(prefix="sid-bench-flux-") as home,
        mock.patch.object(train, "load_frozen", lambda _cfg, _device: model),
    ):
        start = clock.now()
        train.learn(
            [args.photo],
            ["bench"],
            cfg,
            store=IdentityStore(Path(home) / "identities"),
            force=True,
            progress=lambda *_: stamps.append(time.perf_counter()),
        )
        end = clock.now()
    peak_gb, peak_kind = peak_memory_gb(device)
    steps_ms = [(b - a) * 1e3 for a, b in zip(stamps[:-1], stamps[1:], strict=True)][args.warmup :]
    step = median(steps_ms)
    setup_s = stamps[0] - start - step / 1e3  # faces, prior, mapper, bank: everything before step 1
    floor = median(floor_ms(model, 1, 1, args.floor_iters))
    recipe = RECIPES[args.method].steps
    return {
        "low_vram": low_vram,
        "memory": model.memory,
        "weights_gb": weights_gb(model.pipe),  # the frozen weights at rest (float8 under --low-vram)
        "step_ms_median": step,
        "floor_ms_median": floor,
        "step_over_floor": step / floor,
        "peak_mem_gb": peak_gb,
        "peak_mem_kind": peak_kind,
        "setup_s": setup_s,
        "finish_s": end - stamps[-1],
        "steps_default": recipe,
        "projected_default_s": setup_s + recipe * step / 1e3,
        "resolution": model.resolution,
    }


def weights_gb(pipe: Any) -> float:
    """Gigabytes of every module's weights and buffers in the pipeline, in the dtypes they rest in."""
    modules = [m for m in pipe.components.values() if hasattr(m, "parameters")]
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    return sum(t.numel() * t.element_size() for t in tensors) / 1e9


def render_run(args: argparse.Namespace, pipe: Any, device: str) -> dict[str, Any]:
    """Seconds per image of sid's ``generate`` at FLUX.1-dev's defaults (28 steps, guidance 3.5)."""
    from sid.render import generate

    steps, size = args.render_steps, (args.resolution, args.resolution)
    clock = Clock(device)
    reset_peak_memory(device)
    times = []
    for seed in range(args.warmup + args.runs):
        t0 = clock.now()
        generate(pipe, "a photo of a person as a knight", [seed], steps, 3.5, size=size)
        times.append(clock.now() - t0)
    peak_gb, peak_kind = peak_memory_gb(device)
    return {
        "image_s_median": median(times[args.warmup :]),
        "steps": steps,
        "size": list(size),
        "peak_mem_gb": peak_gb,
        "peak_mem_kind": peak_kind,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flux", description=__doc__.splitlines()[0])
    add_common_args(p, "tiny-flux", ARCHS)
    p.add_argument("--part", choices=("learn", "render"), default="learn")
    p.add_argument("--method", default="stableidentity", choices=("stableidentity", "celebbasis"))
    p.add_argument("--dtype", default="auto", help="autocast dtype: auto | bf16 | fp16 | fp32")
    p.add_argument("--resolution", type=int, default=512, help="training / render side")
    p.add_argument("--steps", type=int, default=8, help="learn steps timed (warm-up included)")
    p.add_argument("--warmup", type=int, default=3, help="steps (or renders) left out of the medians")
    p.add_argument("--bank-size", type=int, default=8)
    p.add_argument("--floor-iters", type=int, default=5)
    p.add_argument("--low-vram", default="both", choices=("both", "on", "off"), help="learn runs to time")
    p.add_argument("--render-steps", type=int, default=28, help="FLUX.1-dev's default")
    p.add_argument("--runs", type=int, default=2, help="renders timed after the warm-up")
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--face-models", type=Path, default=DEFAULT_FACE_MODELS)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    with stdout_to_stderr():
        from sid.pipelines import autocast_dtype, pick_device

        set_threads(args.threads)
        device = pick_device(args.device)
        amp = autocast_dtype(device, args.dtype)
        log(f"flux {args.part}: building a random-weight {args.arch} on {device} ...")
        pipe = build_flux(args.arch, device, amp)
        result: dict[str, Any] = {
            "benchmark": f"{args.part}-flux",
            "device": device_name(device),
            "arch": args.arch,
            "dtype": str(amp or "fp32"),
            "date": today(),
        }
        if args.part == "render":
            result.update(render_run(args, pipe, device))
        else:
            args.photo, args.face_models = require_faces(args.photo, args.face_models)
            # the default run first: --low-vram stores the shared pipeline's weights in float8 for good
            modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.low_vram]
            result["method"] = args.method
            result["runs"] = [learn_run(args, pipe, device, low) for low in modes]
        result["versions"] = versions()
    return emit(result, args.out)


if __name__ == "__main__":
    main()
