"""Start-up cost of the ``sid`` command: ``sid --help`` and ``sid ls`` against ``python -c "import torch"``.

    python -m benchmarks.cli --runs 10

Each command runs as a fresh subprocess (one warm-up, then ``--runs`` timed runs, median reported);
``sid ls`` lists ``--identities`` identities with random vectors in a temporary SID_HOME.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import LoadMeter, cpu_name, emit, log, median, stdout_to_stderr, today
from sid.store import LISTING_CACHE


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cli", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="timed runs of each command, after one warm-up")
    p.add_argument("--identities", type=int, default=100, help="identities in the store for `sid ls`")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    return p


def sid_command() -> list[str]:
    """The installed ``sid`` entry point beside this Python, else ``python -m sid``."""
    script = Path(sys.executable).parent / "sid"
    if script.is_file():
        return [str(script)]
    found = shutil.which("sid")
    return [found] if found else [sys.executable, "-m", "sid"]


def fill_store(home: Path, count: int) -> None:
    import numpy as np

    from sid.store import Identity, IdentityStore

    store = IdentityStore(home / "identities")
    rng = np.random.default_rng(0)
    for i in range(count):
        vectors = {"clip_h": rng.standard_normal((2, 1024)).astype(np.float32)}
        store.save(
            Identity(
                name=f"person{i:03d}",
                vectors=vectors,
                method="stableidentity",
                base_model="sd21",
                fingerprints={"clip_h": "1024:0000000000000000"},
                settings={"steps": 450, "lr": 5e-5},
                final_loss=0.1,
            )
        )


def wall(
    cmd: list[str], env: dict[str, str], runs: int, before: Callable[[], object] = lambda: None
) -> list[float]:
    times = []
    for i in range(runs + 1):
        before()
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
        if i:  # run 0 warms the file cache
            times.append(elapsed)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    with stdout_to_stderr(), tempfile.TemporaryDirectory(prefix="sid-bench-cli-") as tmp:
        home = Path(tmp)
        fill_store(home, args.identities)
        env = {**os.environ, "SID_HOME": str(home), "SID_CONFIG": str(home / "config.toml"), "NO_COLOR": "1"}
        sid = sid_command()
        log(f"cli: {' '.join(sid)} --help / ls with {args.identities} identities, {args.runs} runs each")
        with LoadMeter() as load:
            help_s = wall([*sid, "--help"], env, args.runs)
            ls_s = wall([*sid, "ls"], env, args.runs)  # the listing cache is warm after run 0
            cache = home / "identities" / LISTING_CACHE
            ls_cold_s = wall([*sid, "ls"], env, args.runs, before=lambda: cache.unlink(missing_ok=True))
            torch_s = wall([sys.executable, "-c", "import torch"], env, args.runs)
            python_s = wall([sys.executable, "-c", "pass"], env, args.runs)
        result = {
            "benchmark": "cli",
            "help_s_median": median(help_s),
            "ls_s_median": median(ls_s),
            "ls_cold_s_median": median(ls_cold_s),  # every header read (first ls after a change)
            "import_torch_s_median": median(torch_s),
            "identities": args.identities,
            "date": today(),
            "device": f"{cpu_name()} ({os.cpu_count()} cores)",
            "python_startup_s_median": median(python_s),
            "timed_runs": args.runs,
            "command": " ".join(sid),
            "other_load_cores": load.other_cores,
        }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
