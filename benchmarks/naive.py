"""sid's training step against the same step done the naive way, side by side in one run.

    python -m benchmarks.naive --arch tiny --device cpu
    python -m benchmarks.naive --arch sd21 --device cuda

"Naive" is textual inversion as diffusers' ``examples/textual_inversion`` trains it: the whole
token-embedding matrix requires grad and goes to AdamW, every row but the placeholders' is copied
back after each step, the photo is VAE-encoded at every step, everything stays fp32, and the loss is
read back (a host sync) every step. sid's step is timed in its real loop (``sid.train.learn``, see
benchmarks/learn.py) on the same model, photo, resolution and batch size.
"""

from __future__ import annotations

import argparse
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
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
    require_faces,
    set_threads,
    stdout_to_stderr,
    today,
    versions,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.naive", description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument(
        "--method",
        default="stableidentity",
        choices=("stableidentity", "celebbasis"),
        help="sid's recipe to compare with (its batch size is used for both)",
    )
    p.add_argument("--steps", type=int, default=12, help="steps of each, warm-up included")
    p.add_argument("--warmup", type=int, default=2, help="first steps of each left out of the median")
    p.add_argument("--resolution", type=int, default=None, help="training size (default: the model's native)")
    p.add_argument("--bank-size", type=int, default=32, help="sid's augmented latents, encoded once")
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--face-models", type=Path, default=DEFAULT_FACE_MODELS)
    return p


@dataclass
class Naive:
    """What a textual-inversion step touches."""

    unet: Any
    vae: Any
    text_encoder: Any
    scheduler: Any
    optimizer: Any
    images: Any  # (N, 3, R, R) augmented photos in [-1, 1], on the device
    ids: Any  # (T, 77) tokenized templates with the placeholder
    frozen_rows: Any  # (V,) bool: every token but the placeholders
    original: Any  # (V, d) the embedding matrix before training
    batch: int


def setup_naive(
    folder: Path,
    device: str,
    photo: Path,
    face_models: Path,
    resolution: int,
    batch: int,
    templates: tuple[str, ...],
) -> Naive:
    """Load the model in fp32 and set up textual inversion of two placeholder tokens."""
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    from sid.adapters import tokenize_templates
    from sid.augment import augment_batch
    from sid.faces import extract_face

    pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True).to(device)
    tokenizer, text_encoder = pipe.tokenizer, pipe.text_encoder
    placeholders = ["<naive>", "<naive>_1"]
    tokenizer.add_tokens(placeholders)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = tokenizer.convert_tokens_to_ids(placeholders)
    init = tokenizer.encode("person", add_special_tokens=False)[0]
    embedding = text_encoder.get_input_embeddings()
    with torch.no_grad():
        embedding.weight[ids] = embedding.weight[init].clone()
    # as the TI script: only the token embedding trains, the rest of the text encoder is frozen
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    text_encoder.requires_grad_(False)  # layers, final norm and position embedding
    embedding.weight.requires_grad_(True)
    text_encoder.train()
    frozen_rows = torch.ones(len(tokenizer), dtype=torch.bool, device=device)
    frozen_rows[ids] = False

    crop = extract_face(photo, face_models=face_models)
    image = torch.from_numpy(np.asarray(crop.image.resize((resolution, resolution)), np.float32) / 127.5 - 1)
    mask = torch.ones(1, resolution, resolution)
    generator = torch.Generator().manual_seed(0)
    images, _, _ = augment_batch(image.permute(2, 0, 1), mask, 8, generator, "stableidentity")
    return Naive(
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=text_encoder,
        scheduler=pipe.scheduler,
        optimizer=torch.optim.AdamW(embedding.parameters(), lr=5e-4),
        images=images.to(device),
        ids=tokenize_templates(pipe, tokenizer, templates, "<naive>").to(device),
        frozen_rows=frozen_rows,
        original=embedding.weight.detach().clone(),
        batch=batch,
    )


def naive_step(m: Naive) -> float:
    """One textual-inversion step: VAE encode, noise, UNet, backward into the whole embedding matrix."""
    import torch
    import torch.nn.functional as F

    device = m.images.device
    pick = torch.randint(0, len(m.images), (m.batch,), device=device)
    latents = m.vae.encode(m.images[pick]).latent_dist.sample().detach() * m.vae.config.scaling_factor
    noise = torch.randn_like(latents)
    t = torch.randint(0, m.scheduler.config.num_train_timesteps, (m.batch,), device=device)
    noisy = m.scheduler.add_noise(latents, noise, t)
    cond = m.text_encoder(m.ids[torch.randint(0, len(m.ids), (m.batch,), device=device)])[0]
    pred = m.unet(noisy, t, cond).sample
    loss = F.mse_loss(pred.float(), noise.float())
    loss.backward()
    m.optimizer.step()
    m.optimizer.zero_grad()
    weight = m.text_encoder.get_input_embeddings().weight
    with torch.no_grad():  # only the placeholders may change: copy every other row back
        weight[m.frozen_rows] = m.original[m.frozen_rows]
    return loss.item()  # logged every step, as the script does: a host sync


def time_naive(m: Naive, steps: int, device: str, warmup: int) -> list[float]:
    import torch

    torch.manual_seed(0)
    clock = Clock(device)
    times = []
    for _ in range(steps):
        t0 = clock.now()
        naive_step(m)
        times.append((clock.now() - t0) * 1e3)
    return times[warmup:]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    with stdout_to_stderr():
        from benchmarks.learn import time_learn
        from sid.methods import RECIPES
        from sid.pipelines import pick_device

        args.photo, args.face_models = require_faces(args.photo, args.face_models)
        if args.arch == "sdxl":
            raise SystemExit("the naive baseline conditions one text encoder; use --arch sd15 or sd21")
        if args.steps < args.warmup + 1:
            raise SystemExit(f"--steps {args.steps} leaves no step to time after --warmup {args.warmup}")
        set_threads(args.threads)
        device = pick_device(args.device)
        folder = model_folder(args.arch)
        vit, face_parser = face_model_folders(args.arch)  # the paper's ViT and parser sizes
        recipe = RECIPES[args.method]
        with LoadMeter() as load:
            log(f"naive: sid's {args.method} step on {args.arch} ({device}), {args.steps} steps")
            sid = time_learn(
                folder,
                args.method,
                device,
                args.photo,
                args.face_models,
                args.steps,
                args.warmup,
                resolution=args.resolution,
                bank_size=args.bank_size,
                vit_model=vit,
                face_parser=face_parser,
            )
            gc.collect()
            log(f"naive: textual-inversion step, {args.steps} steps")
            naive = setup_naive(
                folder,
                device,
                args.photo,
                args.face_models,
                sid["resolution"],
                recipe.batch_size,
                recipe.templates,
            )
            naive_ms = median(time_naive(naive, args.steps, device, args.warmup))
        result = {
            "benchmark": "naive",
            "device": device_name(device),
            "arch": args.arch,
            "naive_step_ms_median": naive_ms,
            "sid_step_ms_median": sid["step_ms_median"],
            "ratio": naive_ms / sid["step_ms_median"],
            "date": today(),
            "method": args.method,
            "sid_dtype": sid["dtype"],
            "naive_dtype": "fp32",
            "resolution": sid["resolution"],
            "batch_size": recipe.batch_size,
            "steps": args.steps,
            "warmup_steps": args.warmup,
            "other_load_cores": load.other_cores,
            "versions": versions(),
        }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
