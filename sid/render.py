"""``sid render``: text-to-image with identities, optionally guided by a ControlNet.

Defaults follow StableIdentity's inference (DPM-Solver multistep, guidance 8.5), at 30 steps and
the model's native size. Each image i uses seed + i with its own generator, so one image of a
batch can be reproduced alone, and is written as soon as it is decoded (Ctrl-C keeps the finished
ones; nothing holds all of them). Every PNG carries an AUTOMATIC1111 ``parameters`` chunk and a
``sid`` chunk with the full settings as JSON.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sid import limits
from sid.config import RENDER_GUIDANCE, RENDER_SCHEDULER, RENDER_STEPS
from sid.errors import BadInput, Interrupted
from sid.files import atomic_path, check_output_target, output_folder
from sid.pipelines import model_for_identities, native_size
from sid.prompts import ParsedPrompt, load_identities, parse_prompt
from sid.store import Identity, IdentityStore

# sid name -> (diffusers scheduler class, extra config, A1111 sampler name)
SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "dpm++": ("DPMSolverMultistepScheduler", {}, "DPM++ 2M"),
    "dpm++-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
    "pndm": ("PNDMScheduler", {}, "PLMS"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
}
CONTROL_TYPES = ("canny", "pose", "depth")

StepProgress = Callable[[int], None]  # called once per denoising step


@dataclass
class RenderConfig:
    prompt: str
    count: int = 1  # images to render
    seed: int | None = None  # first seed (None: random); image i uses seed + i
    steps: int = RENDER_STEPS
    guidance: float = RENDER_GUIDANCE
    negative: str = ""
    size: str | None = None  # "WxH"; None: the model's native size
    scheduler: str = RENDER_SCHEDULER
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    out_dir: Path = field(default_factory=lambda: Path("sid-renders"))
    control: Path | None = None
    control_type: str = "canny"
    controlnet: str | None = None  # hub id or folder (default: the preset's for control_type)
    control_scale: float = 1.0
    control_is_map: bool = False
    force: bool = False  # overwrite images of the same name in out_dir


@dataclass
class Rendered:
    path: Path
    seed: int
    index: int


def parse_size(size: str | None, command: str = "render") -> tuple[int, int] | None:
    """``WIDTHxHEIGHT`` -> (width, height) within ``command``'s size limit; None when not given."""
    if size is None:
        return None
    match = re.fullmatch(r"(\d+)[xX](\d+)", size.strip())
    if not match:
        raise BadInput(f"--size {size!r} is not WIDTHxHEIGHT", "write it like 512x512")
    width, height = int(match.group(1)), int(match.group(2))
    limit = limits.LIMITS[command]["side"]
    if not all(limit.low <= side <= limit.high and side % limit.multiple == 0 for side in (width, height)):
        raise BadInput(
            f"--size {width}x{height}: each side must be {limit.describe()}", f"try {limit.example}"
        )
    return width, height


def check_inputs(cfg: RenderConfig) -> None:
    """Every option checked before the model loads."""
    if not cfg.prompt.strip():
        raise BadInput("the prompt is empty", 'pass a prompt like "alice as a knight"')
    limits.check_all("render", {"count": cfg.count, "steps": cfg.steps, "seed": cfg.seed})
    limits.check_guidance(cfg.guidance, cfg.control_scale)
    if cfg.scheduler not in SCHEDULERS:
        raise BadInput(f"unknown scheduler {cfg.scheduler!r}", f"use one of: {', '.join(SCHEDULERS)}")
    parse_size(cfg.size)
    output_folder(cfg.out_dir)
    if cfg.control is not None:
        if cfg.control_type not in CONTROL_TYPES:
            raise BadInput(
                f"unknown control type {cfg.control_type!r}", f"use one of: {', '.join(CONTROL_TYPES)}"
            )
        if not cfg.control.is_file():
            raise BadInput(f"control image {cfg.control} not found", "check the path")


def set_scheduler(pipe: Any, name: str) -> None:
    import diffusers

    cls_name, extra, _ = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **extra)


def prepare(
    prompt: str, store: IdentityStore, pipe: Any, warn: Callable[[str], None] | None = None
) -> tuple[ParsedPrompt, list[Identity]]:
    """Parse the prompt and load the identities it names into ``pipe``."""
    parsed = parse_prompt(prompt, store)
    identities = [store.get(name) for name in parsed.names]
    load_identities(pipe, identities, warn)
    return parsed, identities


def generate(
    pipe: Any,
    prompt: str,
    seeds: list[int],
    steps: int,
    guidance: float,
    negative: str = "",
    size: tuple[int, int] | None = None,
    control_image: Any = None,
    control_scale: float = 1.0,
    on_step: StepProgress | None = None,
) -> list[Any]:
    """One PIL image per seed, each from its own CPU generator (reproducible one by one)."""
    import torch

    width, height = size or native_size(pipe)
    extra: dict[str, Any] = {}
    if control_image is not None:
        extra = {
            "image": control_image.resize((width, height)),
            "controlnet_conditioning_scale": control_scale,
        }
    if on_step is not None:
        extra["callback_on_step_end"] = lambda p, i, t, kw: (on_step(1), kw)[1]
    images = []
    for seed in seeds:
        result = pipe(
            prompt,
            negative_prompt=negative or None,
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=width,
            height=height,
            generator=torch.Generator("cpu").manual_seed(seed),
            **extra,
        )
        images.append(result.images[0])
    return images


def control_image_for(cfg: RenderConfig) -> Any:
    """The conditioning image: canny edges, or a pose/depth map (given, or detected)."""
    from sid.control import make_control_image

    return make_control_image(cfg.control, cfg.control_type, cfg.control_is_map, parse_size(cfg.size))


def load_render_pipeline(cfg: RenderConfig) -> tuple[Any, Any]:
    """The base pipeline, wrapped as a ControlNet pipeline when --control is given."""
    from sid.pipelines import load_pipeline

    pipe, spec = load_pipeline(cfg.model, device=cfg.device, dtype=cfg.dtype)
    if cfg.control is not None:
        from sid.control import with_controlnet

        pipe = with_controlnet(pipe, spec, cfg.control_type, cfg.controlnet)
    set_scheduler(pipe, cfg.scheduler)
    return pipe, spec


def render(
    cfg: RenderConfig,
    store: IdentityStore | None = None,
    warn: Callable[[str], None] | None = None,
    on_step: StepProgress | None = None,
    on_image: Callable[[Rendered], None] | None = None,
) -> list[Rendered]:
    """Render ``cfg.count`` images, writing each PNG (with metadata) as soon as it is decoded
    (``on_image`` hears of each then: `sid serve` shows it at once).

    Ctrl-C keeps the images already written and raises Interrupted saying how many."""
    # 1. check inputs, output files and the prompt's identities before loading anything heavy
    check_inputs(cfg)
    store = store or IdentityStore()
    parsed = parse_prompt(cfg.prompt, store, warn)  # unknown @names fail fast
    identities = [store.get(name) for name in parsed.names]
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    folder = output_folder(cfg.out_dir)
    targets = [
        check_output_target(folder / image_name(cfg.prompt, i, seed + i), cfg.force) for i in range(cfg.count)
    ]

    # 2. model (without --model: the one the identities were learned on), identities, control image
    if cfg.model is None:
        cfg = replace(cfg, model=model_for_identities(identities, warn))
    pipe, spec = load_render_pipeline(cfg)
    load_identities(pipe, identities, warn)
    if not identities and warn is not None:
        warn("the prompt names no stored identity: rendering plain text-to-image")
    control = control_image_for(cfg) if cfg.control is not None else None
    size = parse_size(cfg.size) or native_size(pipe)

    # 3. generate and write, one image at a time
    hashes = identity_hashes(identities)
    results: list[Rendered] = []
    try:
        for index, path in enumerate(targets):
            s = seed + index
            (image,) = generate(
                pipe,
                parsed.text,
                [s],
                cfg.steps,
                cfg.guidance,
                cfg.negative,
                size,
                control,
                cfg.control_scale,
                on_step,
            )
            save_png(image, path, png_metadata(cfg, s, size, spec.label, hashes))
            results.append(Rendered(path, s, index))
            if on_image is not None:
                on_image(results[-1])
    except KeyboardInterrupt:
        kept = f"the {len(results)} finished are in {folder}" if results else "no image was finished"
        raise Interrupted(f"interrupted after {len(results)} of {cfg.count} images", kept) from None
    return results


def image_name(prompt: str, index: int, seed: int) -> str:
    """``PROMPT-SLUG-INDEX-SEED.png``."""
    return f"{slug(prompt)}-{index:02d}-{seed}.png"


def slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "render"


def identity_hashes(identities: list[Identity]) -> dict[str, str]:
    """Short content hashes of the identities used, for A1111's ``TI hashes`` (computed once per render)."""
    from sid.store import identity_to_bytes

    return {i.name: _short_hash(identity_to_bytes(i)) for i in identities}


def png_metadata(
    cfg: RenderConfig, seed: int, size: tuple[int, int], model: str, hashes: dict[str, str]
) -> dict[str, str]:
    """The A1111 ``parameters`` text and sid's own JSON for one image; ``hashes`` from ``identity_hashes``."""
    fields = [
        f"Steps: {cfg.steps}",
        f"Sampler: {SCHEDULERS[cfg.scheduler][2]}",
        f"CFG scale: {cfg.guidance}",
        f"Seed: {seed}",
        f"Size: {size[0]}x{size[1]}",
        f"Model: {model}",
    ]
    if cfg.control is not None:
        fields.append(f'ControlNet: "{cfg.control_type}, weight: {cfg.control_scale}"')
    if hashes:
        fields.append('TI hashes: "' + ", ".join(f"{n}: {h}" for n, h in hashes.items()) + '"')
    fields.append("Version: sid")
    lines = [cfg.prompt]
    if cfg.negative:
        lines.append(f"Negative prompt: {cfg.negative}")
    lines.append(", ".join(fields))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k != "force"}
    sid_json = {
        "settings": {**settings, "seed": seed},
        "size": list(size),
        "model": model,
        "identities": hashes,
    }
    return {"parameters": "\n".join(lines), "sid": json.dumps(sid_json, sort_keys=True)}


def save_png(image: Any, path: Path, text: dict[str, str]) -> None:
    """A PNG with ``text`` chunks, whole or not at all (temporary name, fsync, rename)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    with atomic_path(path) as tmp:
        image.save(tmp, pnginfo=info)


def _short_hash(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:10]
