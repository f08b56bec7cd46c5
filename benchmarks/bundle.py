"""Prepare (here) and check (there) what a bare GPU machine needs to run ``python -m benchmarks.gpu``.

    python -m benchmarks.bundle            # here: wheels + face pack + one photo into .gpu-bundle/
    python -m benchmarks.bundle check      # there: can sid's libraries be imported, are the data there

The GPU machine (Python 3.12, x86-64, torch with CUDA, no network) already has torch, transformers,
huggingface-hub, safetensors, tokenizers, accelerate, onnxruntime, OpenCV, scikit-image, imageio,
typer and rich (docs/performance.md, "GPU run"); CARRIED lists what it lacks. Each wheel is the
version installed here, the one the test suite ran with. ``.gpu-bundle/`` is git-ignored: the face
models and the photo are test data that must never be committed.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks.common import BUNDLE, DEFAULT_FACE_MODELS, DEFAULT_PHOTO, REPO, SHARED_FACES, SHARED_PHOTO

# distribution -> why it travels (all pure-Python wheels, so one file fits any platform)
CARRIED = {
    "diffusers": "pipelines, UNets, schedulers: not on the GPU image",
    "insightface": "face detection and recognition (pure Python since 2.x; runs on the image's onnxruntime)",
    "platformdirs": "sid's store location: not on the GPU image",
    "trimesh": "sid 3d's mesh export: not on the GPU image",
    "open_clip_torch": "only its CLIP BPE vocabulary file, from which sid.testing builds the real tokenizer",
}
# import name -> what needs it; `check` imports each on the GPU machine before any part runs
IMPORTS = {
    "torch": "everything",
    "diffusers": "models",
    "transformers": "text encoders",
    "insightface": "faces",
    "onnxruntime": "faces",
    "cv2": "faces",
    "skimage": "3d mesh",
    "trimesh": "3d mesh",
    "platformdirs": "store",
    "safetensors": "store",
    "PIL": "images",
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
LIMIT_MB = 48.0  # the device carries 64 MiB in all, the checkout included: leave it room
INSTALL = "python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site {}/wheels/*.whl"


def pinned(name: str) -> str:
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError as e:
        raise SystemExit(f"{name} is not installed here: pip install -e '.[test]' first") from e


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def prepare(target: Path) -> float:
    """Download the wheels, copy the face pack and the photo into ``target``; returns its size in MiB."""
    if not (any(SHARED_FACES.glob("*.onnx")) and SHARED_PHOTO.is_file()):
        raise SystemExit(f"the face pack and photo come from {SHARED_FACES.parent.parent}: not found here")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "wheels").mkdir(parents=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(staging / "wheels")]
    subprocess.run([*cmd, *(pinned(n) for n in CARRIED)], check=True)
    (staging / "facepack").mkdir()
    for model in SHARED_FACES.glob("*.onnx"):  # plain copies: ../shared's files are read-only
        shutil.copyfile(model, staging / "facepack" / model.name)
    shutil.copyfile(SHARED_PHOTO, staging / "photo.jpg")
    mb = size_mb(staging)
    if mb > LIMIT_MB:
        shutil.rmtree(staging)
        raise SystemExit(f"the bundle would be {mb:.1f} MiB, over {LIMIT_MB:.0f}: drop a wheel from CARRIED")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return mb


def check() -> list[str]:
    """What is missing for the benchmarks on this machine (empty: ready); prints every version."""
    from sid.testing import find_bpe_vocab

    problems = []
    for module, why in IMPORTS.items():
        try:
            found = importlib.import_module(module)
            print(f"  {module:<13} {getattr(found, '__version__', '?'):<14} {found.__file__}")
        except Exception as e:  # an import that breaks for any reason is a missing piece
            problems.append(f"cannot import {module} ({why}): {e}")
    if find_bpe_vocab() is None:
        problems.append("no CLIP BPE vocabulary (open_clip_torch wheel not installed)")
    if not any(DEFAULT_FACE_MODELS.glob("*.onnx")):
        problems.append(f"no face models in {DEFAULT_FACE_MODELS}")
    if not DEFAULT_PHOTO.is_file():
        problems.append(f"no photo at {DEFAULT_PHOTO}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bundle", description=__doc__.splitlines()[0])
    p.add_argument("command", nargs="?", default="prepare", choices=("prepare", "check"))
    p.add_argument("--dir", type=Path, default=BUNDLE, help="where to prepare the bundle")
    args = p.parse_args(argv)
    if args.command == "check":
        problems = check()
        for problem in problems:
            print(f"missing: {problem}", file=sys.stderr)
        return 1 if problems else 0
    mb = prepare(args.dir)
    rel = args.dir.relative_to(REPO) if args.dir.is_relative_to(REPO) else args.dir
    print(f"{rel}: {mb:.1f} MiB ({len(list((args.dir / 'wheels').glob('*.whl')))} wheels, face pack, photo)")
    run = "PYTHONPATH=/tmp/site:$PWD python3 -m benchmarks.gpu"
    print(f"on the GPU machine (carry {rel}): {INSTALL.format(rel)} && {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
