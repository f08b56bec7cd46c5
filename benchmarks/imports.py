"""Where ``sid learn``'s import time goes: the real command under ``python -X importtime``, by package.

    python -m benchmarks.imports --device cuda     # on the GPU machine: its image's import cost
    python -m benchmarks.imports --device cpu

Runs ``sid learn`` on the tiny model (a couple of steps: the imports are what is measured, and they
are the same at any model size) as a fresh process, with the same face models and photo as the learn
benchmark, and sums ``-X importtime``'s self times by top-level package. ``sid_s`` is sid's own
modules; for the heaviest packages, ``via`` names the chain that imported them (which sid module, or
which library pulled in which), so a cut can be aimed at what ``sid learn`` does not use.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_FACE_MODELS,
    DEFAULT_PHOTO,
    LoadMeter,
    add_common_args,
    device_name,
    emit,
    face_model_folders,
    log,
    model_folder,
    require_faces,
    stdout_to_stderr,
    today,
    versions,
)

TOP = 12  # packages whose importer chain is reported


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.imports", description=__doc__.splitlines()[0])
    add_common_args(p, archs=("tiny",))
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--face-models", type=Path, default=DEFAULT_FACE_MODELS)
    return p


def parse(stderr: str) -> list[tuple[int, int, str]]:
    """``-X importtime`` lines as (depth, self µs, module), in the order Python printed them (a module
    after everything it imported)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|", 2)
        rows.append(((len(name) - len(name.lstrip()) - 1) // 2, int(self_us), name.strip()))
    return rows


def importer(rows: list[tuple[int, int, str]], i: int) -> str:
    """The chain that imported row ``i``'s module: each enclosing import up to the top level."""
    depth, chain = rows[i][0], []
    for d, _, name in rows[i + 1 :]:
        if d < depth:
            chain.append(name)
            depth = d
        if depth == 0:
            break
    package = rows[i][2].split(".")[0]
    outside = [name for name in chain if name.split(".")[0] != package]  # who pulled the package in
    return " <- ".join(outside) or "(imported inside a function, as the command ran)"


def by_package(rows: list[tuple[int, int, str]]) -> tuple[dict[str, float], dict[str, str]]:
    """Seconds of self time per top-level package, heaviest first, and where each heavy one came from."""
    seconds: dict[str, float] = defaultdict(float)
    first: dict[str, int] = {}
    for i, (_, self_us, name) in enumerate(rows):
        package = name.split(".")[0]
        seconds[package] += self_us / 1e6
        first.setdefault(package, i)
    ordered = dict(sorted(seconds.items(), key=lambda kv: -kv[1]))
    via = {p: importer(rows, first[p]) for p in list(ordered)[:TOP] if p != "sid"}
    return ordered, via


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    with stdout_to_stderr():
        from sid.pipelines import pick_device

        photo, face_models = require_faces(args.photo, args.face_models)
        folder = model_folder("tiny")
        vit, face_parser = face_model_folders("tiny")
        with tempfile.TemporaryDirectory(prefix="sid-bench-imports-") as home, LoadMeter() as load:
            env = {
                **os.environ,
                "SID_HOME": home,
                "SID_VIT_MODEL": str(vit),
                "SID_FACE_PARSER": str(face_parser),
                "HF_HUB_OFFLINE": "1",
            }
            if args.threads:
                env["OMP_NUM_THREADS"] = str(args.threads)
            cmd = [sys.executable, "-X", "importtime", "-m", "sid", "learn", str(photo), "-n", "imports"]
            cmd += ["--model", str(folder), "--face-models", str(face_models), "--steps", "2", "--quiet"]
            cmd += ["--device", args.device]
            log(f"imports: {' '.join(cmd[1:])}")
            start = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            command_s = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"sid learn failed: {done.stderr.strip().splitlines()[-1:]}")
        rows = parse(done.stderr)
        seconds, via = by_package(rows)
    total = sum(seconds.values())
    return emit(
        {
            "benchmark": "imports",
            "device": device_name(pick_device(args.device)),
            "arch": "tiny",
            "import_s": total,
            "sid_s": seconds.get("sid", 0.0),
            "command_s": command_s,
            "modules": len(rows),
            "modules_sid": sorted({name for _, _, name in rows if name.split(".")[0] == "sid"}),
            "by_package_s": {p: round(s, 4) for p, s in seconds.items() if s >= 0.005},
            "via": via,
            "other_load_cores": load.other_cores,
            "notes": "import_s: the sum of -X importtime's self times of every module the command "
            "imported (the interpreter's own start-up excluded); command_s: the whole sid learn run on "
            "the tiny model, 2 steps.",
            "versions": versions(),
            "date": today(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
