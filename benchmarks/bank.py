"""What one entry of the augmented-latent bank costs: the papers' augmentation chain and one VAE encode.

    python -m benchmarks.bank --device cpu --resolution 512          # full-size SD VAE, random weights
    python -m benchmarks.bank --device cuda --dtype bf16

Times ``sid.augment.augment_batch`` and ``vae.encode(...).latent_dist.sample`` on chunks of
``sid.bank.BANK_CHUNK`` photos, the way ``sid.bank.build_bank`` runs them, and reports milliseconds
per bank entry. A bank of N entries costs about N times ``entry_ms``: compare it with the learn
benchmark's step time to see what a bigger bank adds to a run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import common


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bank", description=__doc__.splitlines()[0])
    common.add_common_args(p, arch="sd21")
    p.add_argument("--method", default="stableidentity", choices=("stableidentity", "celebbasis"))
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--chunks", type=int, default=3, help="timed chunks (after one warm-up chunk)")
    p.add_argument("--chunk", type=int, default=None, help="entries per chunk (default: sid.bank.BANK_CHUNK)")
    p.add_argument("--dtype", default="auto", help="VAE weights: auto (fp16 on GPU) | fp16 | bf16 | fp32")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    common.set_threads(args.threads)
    import torch
    from diffusers import AutoencoderKL

    from sid.augment import augment_batch
    from sid.bank import BANK_CHUNK
    from sid.pipelines import pick_device, pick_dtype
    from sid.testing import tiny_vae

    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    torch.manual_seed(0)
    vae = tiny_vae() if args.arch == "tiny" else AutoencoderKL(**common.SD_VAE)  # the SD 1.x / 2.x VAE
    vae = vae.to(device, dtype).eval().requires_grad_(False)
    size = args.resolution
    image = (torch.rand(3, size, size) * 2 - 1).to(device)
    mask = torch.ones(2, size, size, device=device)  # face and hair
    generator = torch.Generator().manual_seed(0)
    chunk_size = args.chunk or BANK_CHUNK
    clock = common.Clock(device)
    augment_ms, encode_ms = [], []
    common.log(f"bank entries on {device}: {args.arch} VAE at {size}², chunks of {chunk_size}")
    with torch.no_grad(), common.LoadMeter() as load:
        for chunk in range(args.chunks + 1):
            t0 = clock.now()
            images, _, _ = augment_batch(image, mask, chunk_size, generator, args.method)
            t1 = clock.now()
            vae.encode(images.to(dtype)).latent_dist.sample(generator=generator)
            t2 = clock.now()
            if chunk:  # the first chunk warms up
                augment_ms.append((t1 - t0) * 1000 / chunk_size)
                encode_ms.append((t2 - t1) * 1000 / chunk_size)
    augment, encode = common.median(augment_ms), common.median(encode_ms)
    return common.emit(
        {
            "benchmark": "bank",
            "device": common.device_name(device),
            "arch": args.arch,
            "method": args.method,
            "dtype": str(dtype).removeprefix("torch."),
            "resolution": size,
            "chunk": chunk_size,
            "augment_ms_per_entry": round(augment, 2),
            "encode_ms_per_entry": round(encode, 2),
            "entry_ms": round(augment + encode, 2),
            "chunks_timed": args.chunks,
            "threads": torch.get_num_threads(),
            "other_load_cores": load.other_cores,
            "versions": common.versions(),
            "date": common.today(),
        },
        args.out if args.out is None else Path(args.out),
    )


if __name__ == "__main__":
    main()
