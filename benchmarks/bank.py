"""What one entry of the augmented-latent bank costs: the papers' augmentation chain and one VAE encode.

    python -m benchmarks.bank --device cpu --resolution 512          # full-size SD VAE, random weights
    python -m benchmarks.bank --device cuda --dtype bf16 --chunk 4,8,16,32,64

Times ``sid.augment.augment_batch`` and ``vae.encode(...).latent_dist.sample`` on chunks of each
``--chunk`` size (default: the chunk ``sid.budget.bank_chunk`` picks on this device) and each
``--formats`` memory format of the VAE (channels-last is not sid's yet: measured here first), the way
``sid.bank.build_bank`` runs them, and reports milliseconds per bank entry and the peak memory of each
chunk size, with the VAE's bytes per input pixel in ``sid.budget.BANK_BYTES_PER_PIXEL``'s terms. A
bank of N entries costs about N times ``entry_ms``: compare it with the learn benchmark's step time.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks import common


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bank", description=__doc__.splitlines()[0])
    common.add_common_args(p, arch="sd21")
    p.add_argument("--method", default="stableidentity", choices=("stableidentity", "celebbasis"))
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--chunks", type=int, default=3, help="timed chunks per size (after one warm-up chunk)")
    p.add_argument(
        "--chunk", default="", help="entries per chunk, comma-separated sizes (default: sid.budget's choice)"
    )
    p.add_argument("--dtype", default="auto", help="VAE weights: auto (fp16 on GPU) | fp16 | bf16 | fp32")
    p.add_argument(
        "--formats",
        default="contiguous",
        help="VAE memory formats to time, comma-separated: contiguous (sid's), channels_last",
    )
    return p


def time_chunk(
    vae: Any, image: Any, mask: Any, chunk: int, fmt: str, args: argparse.Namespace, device: str
) -> dict:
    """Milliseconds per entry (augmentation, encode) and the peak memory at chunks of ``chunk``, the
    VAE and its input in memory format ``fmt``."""
    import torch

    from sid.augment import augment_batch

    generator = torch.Generator().manual_seed(0)
    clock = common.Clock(device)
    augment_ms, encode_ms = [], []
    common.reset_peak_memory(device)
    base = torch.cuda.memory_allocated() if device.startswith("cuda") else 0
    for i in range(args.chunks + 1):
        t0 = clock.now()
        images, _, _ = augment_batch(image, mask, chunk, generator, args.method)
        t1 = clock.now()
        memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        vae.encode(images.to(vae.dtype).contiguous(memory_format=memory_format)).latent_dist.sample(
            generator=generator
        )
        t2 = clock.now()
        if i:  # the first chunk warms up
            augment_ms.append((t1 - t0) * 1000 / chunk)
            encode_ms.append((t2 - t1) * 1000 / chunk)
    peak_gb = common.peak_memory_gb(device)[0]
    augment, encode = common.median(augment_ms), common.median(encode_ms)
    row = {
        "chunk": chunk,
        "memory_format": fmt,
        "augment_ms_per_entry": round(augment, 2),
        "encode_ms_per_entry": round(encode, 2),
        "entry_ms": round(augment + encode, 2),
        "peak_mem_gb": peak_gb,
    }
    if device.startswith("cuda"):  # the chunk's own memory, per input pixel (sid.budget's terms)
        row["bytes_per_pixel"] = (peak_gb * 1e9 - base) / (chunk * args.resolution**2)
    return row


def label(row: dict) -> str:
    """A row's chunk, with its memory format when it is not sid's."""
    return str(row["chunk"]) + ("" if row["memory_format"] == "contiguous" else f",{row['memory_format']}")


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    common.set_threads(args.threads)
    import torch
    from diffusers import AutoencoderKL

    from sid import budget
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
    chosen = budget.bank_chunk(budget.free_bytes(device), size)
    chunks = [int(c) for c in args.chunk.split(",") if c.strip()] or [chosen]
    rows = []
    with torch.no_grad(), common.LoadMeter() as load:
        for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
            memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
            vae.to(memory_format=memory_format)
            for chunk in chunks:
                common.log(f"bank entries on {device}: {args.arch} VAE at {size}², chunks of {chunk}, {fmt}")
                rows.append(time_chunk(vae, image, mask, chunk, fmt, args, device))
    first = rows[0]
    return common.emit(
        {
            "benchmark": "bank",
            "device": common.device_name(device),
            "arch": args.arch,
            "method": args.method,
            "dtype": str(dtype).removeprefix("torch."),
            "resolution": size,
            **first,
            "sid_chunk": chosen,
            "by_chunk": rows,
            "entry_ms_vs_first_chunk": {label(r): r["entry_ms"] / first["entry_ms"] for r in rows},
            "bank_s_default": min(r["entry_ms"] for r in rows) * 451 / 1e3,
            "sid_bytes_per_pixel": budget.BANK_BYTES_PER_PIXEL,
            "chunks_timed": args.chunks,
            "threads": torch.get_num_threads(),
            "other_load_cores": load.other_cores,
            "notes": "bank_s_default: 451 entries (StableIdentity's default bank) at the fastest chunk's "
            "entry_ms; sid_bytes_per_pixel is sid.budget's estimate, bytes_per_pixel (CUDA) the measured "
            "peak over the VAE's own memory per input pixel of a chunk.",
            "versions": common.versions(),
            "date": common.today(),
        },
        args.out if args.out is None else Path(args.out),
    )


if __name__ == "__main__":
    main()
