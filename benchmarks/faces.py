"""Time the face encoder and the face parser ``sid learn`` runs once per photo, at their real sizes.

    python -m benchmarks.faces --device cpu     # ViT-B/16 (the paper's encoder) and SegFormer-b5
    python -m benchmarks.faces --arch tiny      # the tiny test models (checks the benchmark runs)

Both are built from their configurations with random weights (a random network times like a trained
one), saved once to the benchmark cache and loaded through sid's own loading code. ``vit_ms`` is
one call of ``sid.face_transformers.vit_face_embeddings``: the photo and its mirror image, 2 images
in one batch; ``parser_ms`` one ``sid.face_transformers.parse_face`` of a 512² aligned face. The
first call (loading included) is reported apart and left out of the medians.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.common import (
    Clock,
    LoadMeter,
    add_common_args,
    device_name,
    emit,
    face_model_folders,
    log,
    median,
    set_threads,
    stdout_to_stderr,
    today,
    versions,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.faces", description=__doc__.splitlines()[0])
    add_common_args(p, arch="sd21")
    p.add_argument("--runs", type=int, default=5, help="timed calls of each, after the first")
    return p


def time_calls(clock: Clock, call: Any, runs: int) -> tuple[float, list[float]]:
    """(seconds of the first call, milliseconds of each of the next ``runs`` calls)."""
    t0 = clock.now()
    call()
    first = clock.now() - t0
    times = []
    for _ in range(runs):
        t0 = clock.now()
        call()
        times.append((clock.now() - t0) * 1e3)
    return first, times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    with stdout_to_stderr():
        import numpy as np
        from PIL import Image

        from sid import face_transformers
        from sid.pipelines import pick_device

        set_threads(args.threads)
        device = pick_device(args.device)
        vit, parser_dir = face_model_folders(args.arch)
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
        clock = Clock(device)
        log(f"faces: {'tiny' if args.arch == 'tiny' else 'full-size'} ViT and parser on {device}")
        with LoadMeter() as load:
            vit_first, vit_ms = time_calls(
                clock, lambda: face_transformers.vit_face_embeddings(image, str(vit), True, device), args.runs
            )
            loaded = face_transformers.load_face_parser(str(parser_dir), local_files_only=True)
            parser_first, parser_ms = time_calls(
                clock, lambda: face_transformers.parse_face(image, loaded, device), args.runs
            )
        result = {
            "benchmark": "faces",
            "device": device_name(device),
            "arch": args.arch,
            "vit": "tiny" if args.arch == "tiny" else "ViT-B/16 (86M parameters), 224²",
            "parser": "tiny" if args.arch == "tiny" else "SegFormer-b5 (85M parameters), 512²",
            "vit_ms_median": median(vit_ms),
            "vit_first_s": vit_first,
            "parser_ms_median": median(parser_ms),
            "parser_first_s": parser_first,
            "runs": args.runs,
            "other_load_cores": load.other_cores,
            "date": today(),
            "versions": versions(),
            "notes": "vit_ms: 2 images (photo and mirror) in one batch; parser_ms: one 512² image. "
            "*_first_s: the first call, loading from the saved folder included.",
        }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
