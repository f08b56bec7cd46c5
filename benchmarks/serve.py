"""A warm render through ``sid serve`` against a cold ``sid render --local`` and the pipeline's own time.

    python -m benchmarks.serve --arch tiny --device cpu --threads 1
    python -m benchmarks.serve --arch sd21 --device cuda

One stored identity, one image per render, the same prompt, seed and steps throughout; medians of
``--runs`` runs after one warm-up each:
- ``cold_cli_s``: ``sid render --local`` as a new process (imports, model load, generation, PNG);
- ``warm_cli_s``: ``sid render`` as a new process that submits to the running server (the model stays
  loaded there; the CLI imports no torch) and writes the same PNG;
- ``warm_api_s``: the HTTP API alone (submit, follow the events, download the PNG), in this process;
- ``server_render_s``: the job's own run inside the server (``sid.render.render`` on the resident model);
- ``generate_s``: ``sid.render.generate`` on an already loaded pipeline in this process: the pipeline's
  own generation time.
``api_overhead`` = warm_api_s / generate_s - 1 is what the server adds to generation (target ≤ 0.05).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    add_common_args,
    device_name,
    emit,
    log,
    median,
    model_folder,
    stdout_to_stderr,
    today,
    versions,
)

PROMPT = "a photo of alice as a knight"
TARGET = 0.05  # a warm render adds at most 5 % to the pipeline's own generation time


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--steps", type=int, default=30, help="denoising steps (sid's default 30)")
    p.add_argument("--runs", type=int, default=5, help="timed runs of each, after the warm-up")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each first")
    return p


def timed_runs(fn: Any, runs: int, warmup: int) -> list[float]:
    """``runs`` wall times of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def api_render(client: Any, steps: int) -> float:
    """One render through the API, to the PNG's bytes; the job's own run time inside the server."""
    params = {"prompt": PROMPT, "count": 1, "seed": 0, "steps": steps}
    job = client.post("/api/jobs", json={"kind": "render", "params": params}).json()
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as events:
        for line in events.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:]).get("type") == "image":
                name = json.loads(line[6:])["file"]
    assert client.get(f"/api/jobs/{job['id']}/files/{name}").content[:4] == b"\x89PNG"
    done = client.get(f"/api/jobs/{job['id']}").json()
    return done["finished"] - done["started"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import httpx

    from benchmarks.render import store_identity
    from sid.serve.spawn import spawn

    args = parser().parse_args(argv)
    with stdout_to_stderr(), tempfile.TemporaryDirectory(prefix="sid-bench-serve-") as tmp:
        folder = model_folder(args.arch)
        home = Path(tmp)
        store_identity(home, folder)
        env = {**os.environ, "SID_HOME": str(home), "SID_CONFIG": str(home / "config.toml")}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
        )
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        from sid.pipelines import pick_device

        device = pick_device(args.device)
        cli = [sys.executable, "-m", "sid", "render", PROMPT, "--seed", "0", "--steps", str(args.steps)]
        cli += ["--device", device, "-o", str(home / "out"), "--force", "-q"]

        def run_cli(*extra: str) -> None:
            subprocess.run([*cli, *extra], env=env, check=True, capture_output=True)

        log(f"serve: cold `sid render --local` on {args.arch} ({device}), {args.steps} steps")
        cold = timed_runs(lambda: run_cli("--local"), args.runs, args.warmup)
        server = spawn(env, device)
        try:
            log("serve: warm `sid render` through the server")
            warm_cli = timed_runs(run_cli, args.runs, args.warmup)
            log("serve: warm render through the HTTP API")
            headers = {"authorization": f"Bearer {server.running.token}"}
            with httpx.Client(base_url=server.running.url, headers=headers, timeout=600) as client:
                inside: list[float] = []
                warm_api = timed_runs(
                    lambda: inside.append(api_render(client, args.steps)), args.runs, args.warmup
                )
                info = client.get("/api/server").json()
        finally:
            server.stop()
        log("serve: the pipeline's own generation, in this process")
        generate_s = own_generation(folder, device, args, home / "identities")
    result = {
        "benchmark": "serve",
        "device": device_name(device),
        "arch": args.arch,
        "steps": args.steps,
        "cold_cli_s_median": median(cold),
        "warm_cli_s_median": median(warm_cli),
        "warm_api_s_median": median(warm_api),
        "server_render_s_median": median(inside[args.warmup :]),
        "generate_s_median": median(generate_s),
        "api_overhead": median(warm_api) / median(generate_s) - 1,
        "cli_overhead": median(warm_cli) / median(generate_s) - 1,
        "target_api_overhead": TARGET,
        "cold_over_warm_cli": median(cold) / median(warm_cli),
        "resident_models": sum(len(d["models"]) for d in info["devices"].values()),
        "timed_runs": args.runs,
        "date": today(),
        "versions": versions(),
    }
    return emit(result, args.out)


def own_generation(folder: Path, device: str, args: argparse.Namespace, store: Path) -> list[float]:
    """``generate`` on a loaded pipeline with the identity in the prompt, as the server's job runs it."""
    from benchmarks.common import set_threads
    from sid.render import RenderConfig, generate, load_render_pipeline, prepare
    from sid.store import IdentityStore

    set_threads(args.threads)
    cfg = RenderConfig(PROMPT, model=str(folder), device=device, steps=args.steps)
    pipe, _, cfg = load_render_pipeline(cfg)  # the sampler and guidance sid render would use
    parsed, _ = prepare(PROMPT, IdentityStore(store), pipe)
    return timed_runs(
        lambda: generate(pipe, parsed.text, [0], args.steps, cfg.guidance), args.runs, args.warmup
    )


if __name__ == "__main__":
    main()
