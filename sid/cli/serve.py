"""``sid serve``: keep models loaded and run jobs for the CLI, the HTTP API and the web page."""

from __future__ import annotations

import typer

from sid.cli import app, out
from sid.serve import DEFAULT_PORT


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address (default: this machine only)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="Port (0: any free one)."),
    device: list[str] = typer.Option(
        None, "--device", help="Device(s) to run jobs on, one queue each: auto | cuda | cuda:N | mps | cpu."
    ),
) -> None:
    """Serve this store: models stay loaded between jobs, `sid learn/render/video/3d/eval` submit
    here, and a web page shows the identities and the images as they finish.

    [bold]Examples[/bold]

      sid serve

      sid serve --device cuda:0 --device cuda:1

    Open the login link it prints (once) in a browser; run `sid render ... --local` to bypass it.
    """
    from sid.serve.server import run

    def announce(url: str, login: str, devices: list[str]) -> None:
        out.print(f"sid serve: {url}/ on {', '.join(devices)} — sign in once at:\n  {login}", highlight=False)
        out.print(
            "Ctrl-C stops it. `sid learn/render/video/3d/eval` on this store now run here.", highlight=False
        )

    run(host, port, list(device or []), announce)
