"""``sid doctor``: what sid sees on this machine, for bug reports and first runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sid import __version__
from sid.cli import app, out, print_json

PACKAGES = ("torch", "diffusers", "transformers", "insightface", "onnxruntime", "safetensors", "typer")


def _version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version  # ~20 ms: not at `sid --help` time

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _devices() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"cpu": True}
    cuda = torch.cuda.is_available()
    return {
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else False,
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cpu": True,
    }


def collect() -> dict[str, Any]:
    from huggingface_hub import constants

    from sid.config import config_path, home
    from sid.face_transformers import face_parser_source, vit_model_source
    from sid.faces import face_models_dir
    from sid.pipelines import offline, presets, resolve_model
    from sid.store import IdentityStore

    store = IdentityStore()
    faces = face_models_dir(None, download=False)
    model = resolve_model(None)
    return {
        "sid": __version__,
        "packages": {p: _version_of(p) for p in PACKAGES},
        "devices": _devices(),
        "home": str(home()),
        "store": {
            "path": str(store.root),
            "identities": len(store.names()),
            "bytes": _folder_size(store.root),
        },
        "config": {"path": str(config_path()), "exists": config_path().is_file()},
        "default_model": {"label": model.label, "candidates": list(model.candidates)},
        "licences": {
            name: p.licence for name, p in presets().items() if p.licence
        },  # FLUX.1-dev: non-commercial
        "hf_cache": str(constants.HF_HUB_CACHE),
        "hf_offline": offline(),
        "face_models": {
            "path": str(faces),
            "present": any(faces.glob("*.onnx")) if faces.is_dir() else False,
        },
        "vit_model": vit_model_source(),  # StableIdentity's face encoder
        "face_parser": face_parser_source(),  # the training mask's parser
        "env": {
            k: os.environ[k]
            for k in (
                "SID_HOME",
                "SID_MODEL",
                "SID_FACE_MODELS",
                "SID_VIT_MODEL",
                "SID_FACE_PARSER",
                "HF_HOME",
            )
            if k in os.environ
        },
    }


@app.command("doctor")
def doctor(json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show versions, devices, where identities, models and face models live, and offline status.

    [bold]Example[/bold]: sid doctor
    """
    info = collect()
    if json_:
        print_json(info)
        return
    table = Table("item", "value", show_header=False)
    table.add_row("sid", info["sid"])
    for pkg, ver in info["packages"].items():
        table.add_row(pkg, ver)
    devices = info["devices"]
    cuda = ", ".join(devices["cuda"]) if devices.get("cuda") else "no"
    table.add_row("devices", f"cuda: {cuda} · mps: {'yes' if devices.get('mps') else 'no'} · cpu: yes")
    st = info["store"]
    table.add_row("identities", f"{st['identities']} in {st['path']} ({st['bytes'] / 1e6:.2f} MB)")
    table.add_row(
        "config", f"{info['config']['path']} ({'present' if info['config']['exists'] else 'absent'})"
    )
    table.add_row(
        "default model", f"{info['default_model']['label']}: {', '.join(info['default_model']['candidates'])}"
    )
    for name, licence in info["licences"].items():
        table.add_row(f"preset {name}", licence)
    table.add_row("HF cache", info["hf_cache"])
    table.add_row("HF offline", "yes" if info["hf_offline"] else "no")
    fm = info["face_models"]
    table.add_row(
        "face models",
        f"{fm['path']} ({'found' if fm['present'] else 'missing: downloaded on first sid learn'})",
    )
    table.add_row("ViT face encoder", info["vit_model"])
    table.add_row("face parser", info["face_parser"])
    out.print(table)
