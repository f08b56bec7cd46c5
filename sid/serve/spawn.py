"""Start ``sid serve`` as a child process and wait until it listens (tests and benchmarks use it)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sid.serve import SERVER_FILE, Running, read_server_file


@dataclass
class Spawned:
    proc: subprocess.Popen
    running: Running
    login: str  # the one-time login link it printed

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(env: dict[str, str], device: str = "cpu", timeout: float = 180) -> Spawned:
    """``sid serve --port 0`` on ``env``'s SID_HOME; raises with its output if it cannot start."""
    store = Path(env["SID_HOME"]) / "identities"
    (store / SERVER_FILE).unlink(missing_ok=True)
    args = [sys.executable, "-m", "sid", "serve", "--port", "0", "--device", device]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline and proc.poll() is None:
        lines.append(proc.stdout.readline())
        if "login?token=" in lines[-1]:
            running = read_server_file(store)
            if running is not None:
                return Spawned(proc, running, lines[-1].strip())
    proc.kill()
    raise RuntimeError("sid serve did not start:\n" + "".join(lines) + (proc.stdout.read() or ""))
