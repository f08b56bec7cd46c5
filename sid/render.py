"""``sid render``: text-to-image with identities, optionally guided by a ControlNet.

Sampler, steps and guidance come from ``with_recipe``: the flag, else the config's ``[render]`` table,
else the recipe: a family that samples its own way (FLUX.1: its flow-matching scheduler, dev 28 steps
at guidance 3.5, schnell 4) has its own; otherwise the test recipe of the paper whose method learned
every identity in the prompt, else sid's default (``config.RENDER_RECIPES``); the size is the model's
native one. Each image i uses seed + i with its own generator, so one image of a batch can be
reproduced alone, and is written as soon as it is decoded (Ctrl-C keeps the finished ones; nothing
holds all of them). Every PNG carries an AUTOMATIC1111 ``parameters`` chunk and a ``sid`` chunk with
the full settings as JSON.
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
from sid.config import RENDER_RECIPES, RenderRecipe, config_value
from sid.errors import BadInput, Interrupted
from sid.families import Family, family_of_pipeline, prompt_family
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

StepProgress = Callable[..., None]  # (steps done, total=...): once per denoising step, and (0, total=N)


@dataclass
class RenderConfig:
    prompt: str
    count: int = 1  # images to render
    seed: int | None = None  # first seed (None: random); image i uses seed + i
    steps: int | None = None  # None: with_recipe decides (as guidance and scheduler)
    guidance: float | None = None
    negative: str = ""
    size: str | None = None  # "WxH"; None: the model's native size
    scheduler: str | None = None  # None after with_recipe: the family's own sampler (FLUX)
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


def recipe_for(identities: list[Identity]) -> RenderRecipe:
    """The paper's test recipe when every identity was learned with its method, else the default."""
    methods = {i.method for i in identities}
    return RENDER_RECIPES.get(methods.pop() if len(methods) == 1 else "", RENDER_RECIPES["default"])


RECIPE_KEYS = {"scheduler": str, "steps": int, "guidance": (int, float)}  # and their types in [render]


def with_recipe(
    cfg: RenderConfig, identities: list[Identity], family: Family | None = None, guided: bool = True
) -> RenderConfig:
    """``cfg`` with scheduler, steps and guidance filled in, first found wins: the flag, the config
    file's ``[render]`` table (``steps``, ``guidance``, ``scheduler``), the recipe. A ``family`` that
    samples its own way (FLUX.1) has its own recipe (not ``guided``: FLUX.1-schnell's 4 steps) and keeps
    its scheduler (None; ``--scheduler`` is refused); else ``recipe_for(identities)``. ``--negative``
    is refused on a family whose pipelines ignore it. ``family`` is None before the model loads."""
    own = family is not None and family.own_sampler
    if own and cfg.scheduler is not None:
        raise BadInput(
            f"--scheduler {cfg.scheduler}: {family.name} samples with its own flow-matching scheduler",
            "drop --scheduler",
        )
    if family is not None and cfg.negative and not family.takes_negative:
        raise BadInput(
            f"--negative: {family.name} ignores a negative prompt (its guidance is distilled into the model)",
            "drop --negative and say what you want in the prompt",
        )
    recipe = family_recipe(family, guided) if own else recipe_for(identities)
    filled: dict[str, Any] = {"scheduler": None}  # stays None for a family with its own sampler
    for key, kind in RECIPE_KEYS.items():
        if own and key == "scheduler":
            continue
        value = getattr(cfg, key)
        value = config_value(f"render.{key}", kind) if value is None else value
        filled[key] = getattr(recipe, key) if value is None else value
    filled["guidance"] = float(filled["guidance"])
    return replace(cfg, **filled)


def family_recipe(family: Family, guided: bool = True) -> RenderRecipe:
    """The recipe of a family that samples its own way: its steps and guidance, sid's default where it
    has none; a model distilled to sample without guidance (not ``guided``: FLUX.1-schnell, whatever
    ``--model`` named it) takes the family's few unguided steps and guidance 0. The scheduler is the
    model's own."""
    default = RENDER_RECIPES["default"]
    if not guided:
        return RenderRecipe(default.scheduler, family.unguided_steps or default.steps, 0.0)
    steps = family.render_steps or default.steps
    guidance = default.guidance if family.render_guidance is None else family.render_guidance
    return RenderRecipe(default.scheduler, steps, guidance)


def settings_for(cfg: RenderConfig, store: IdentityStore) -> RenderConfig:
    """``with_recipe`` for the identities ``cfg.prompt`` names (the CLI asks, to size its progress bar)."""
    identities = [store.get(name) for name in parse_prompt(cfg.prompt, store).names]
    return with_recipe(cfg, identities, prompt_family(identities) if identities else None)


def check_inputs(cfg: RenderConfig) -> None:
    """Every option checked before the model loads (after ``with_recipe`` filled the sampling ones)."""
    if not cfg.prompt.strip():
        raise BadInput("the prompt is empty", 'pass a prompt like "alice as a knight"')
    limits.check_all("render", {"count": cfg.count, "steps": cfg.steps, "seed": cfg.seed})
    limits.check_guidance(cfg.guidance, cfg.control_scale)
    if cfg.scheduler is not None and cfg.scheduler not in SCHEDULERS:
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
        from sid.photos import load_photo  # numpy: not imported by `sid ls`, which imports this module

        load_photo(cfg.control)  # a photo format, readable: refused now, not after the model loads


def set_scheduler(pipe: Any, name: str | None) -> None:
    """``name``'s sampler on ``pipe``; None keeps the model's own (FLUX's flow-matching Euler)."""
    import diffusers

    if name is None:
        return
    cls_name, extra, _ = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **extra)


def prepare(
    prompt: str, store: IdentityStore, pipe: Any, warn: Callable[[str], None] | None = None
) -> tuple[ParsedPrompt, list[Identity]]:
    """Parse the prompt and load the identities it names into ``pipe``."""
    parsed = parse_prompt(prompt, store)
    identities = [store.get(name) for name in parsed.names]
    load_identities(pipe, identities, warn)
    warn_if_cut(pipe, parsed.text, warn)
    return parsed, identities


def warn_if_cut(pipe: Any, text: str, warn: Callable[[str], None] | None) -> None:
    """Say so when the encoder that carries the prompt's token sequence will not read all of it:
    diffusers cuts it at that encoder's limit (CLIP's 77 tokens; FLUX's T5, 512), an identity counting
    as its vectors, with a log line sid keeps quiet. The adapter says which encoder that is."""
    if warn is None:
        return
    from sid.adapters import layout_of

    reader = layout_of(pipe).prompt_reader(pipe)
    if reader is None:
        return
    tokenizer, limit = reader
    if hasattr(pipe, "maybe_convert_prompt"):  # an identity's token -> its K vector tokens
        text = pipe.maybe_convert_prompt(text, tokenizer)
    count, special = len(tokenizer(text, verbose=False).input_ids), tokenizer.num_special_tokens_to_add()
    if count > limit:  # both count the special tokens (CLIP's start and end, T5's end)
        warn(
            f"the prompt is {count - special} tokens long: the text encoder reads the first "
            f"{limit - special}, the rest is cut"
        )


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
    control_type: str = "canny",
) -> list[Any]:
    """One PIL image per seed, each from its own CPU generator (reproducible one by one)."""
    import torch

    from sid.control import control_inputs

    width, height = size or native_size(pipe)
    extra: dict[str, Any] = {}
    if control_image is not None:
        extra = control_inputs(pipe, control_image.resize((width, height)), control_scale, control_type)
    if negative:
        extra["negative_prompt"] = negative
    if on_step is not None:
        extra["callback_on_step_end"] = lambda p, i, t, kw: (on_step(1), kw)[1]
    images = []
    for seed in seeds:
        result = pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=width,
            height=height,
            generator=torch.Generator("cpu").manual_seed(seed),
            **extra,
        )
        images.append(result.images[0])
    return images


def check_side_multiple(pipe: Any, size: tuple[int, int]) -> None:
    """A size the model draws as asked (FLUX's sides are multiples of 16), else BadInput before rendering."""
    from sid.adapters import adapter_for

    multiple = adapter_for(pipe).side_multiple(pipe)
    if any(side % multiple for side in size):
        fit = "x".join(str(max(multiple, side // multiple * multiple)) for side in size)
        raise BadInput(
            f"--size {size[0]}x{size[1]}: this model draws sides in multiples of {multiple}", f"try {fit}"
        )


def control_image_for(cfg: RenderConfig) -> Any:
    """The conditioning image: canny edges, or a pose/depth map (given, or detected)."""
    from sid.control import make_control_image

    return make_control_image(cfg.control, cfg.control_type, cfg.control_is_map, parse_size(cfg.size))


def load_render_pipeline(
    cfg: RenderConfig, identities: list[Identity] | None = None
) -> tuple[Any, Any, RenderConfig]:
    """The base pipeline (wrapped as a ControlNet pipeline when --control is given) with its sampler,
    and ``cfg`` with the recipe for the model's family and ``identities`` filled in."""
    from sid.adapters import adapter_for
    from sid.pipelines import load_pipeline

    pipe, spec = load_pipeline(cfg.model, device=cfg.device, dtype=cfg.dtype)
    if cfg.control is not None:
        from sid.control import with_controlnet

        pipe = with_controlnet(pipe, spec, cfg.control_type, cfg.controlnet)
    cfg = with_recipe(cfg, identities or [], family_of_pipeline(pipe), adapter_for(pipe).guided(pipe))
    limits.check_all("render", {"steps": cfg.steps})
    set_scheduler(pipe, cfg.scheduler)
    return pipe, spec, cfg


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
    # 1. check the prompt's identities, the sampling recipe they imply, inputs and output files before
    # loading anything heavy
    store = store or IdentityStore()
    parsed = parse_prompt(cfg.prompt, store, warn)  # unknown @names fail fast
    identities = [store.get(name) for name in parsed.names]
    check_inputs(with_recipe(cfg, identities, prompt_family(identities) if identities else None))
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    folder = output_folder(cfg.out_dir)
    targets = [
        check_output_target(folder / image_name(cfg.prompt, i, seed + i), cfg.force) for i in range(cfg.count)
    ]

    # 2. model (without --model: the one the identities were learned on), identities, control image
    if cfg.model is None:
        cfg = replace(cfg, model=model_for_identities(identities, warn))
    pipe, spec, cfg = load_render_pipeline(cfg, identities)
    if on_step is not None:
        on_step(0, total=cfg.count * cfg.steps)  # the bar's length, known once the model's family is
    load_identities(pipe, identities, warn)
    warn_if_cut(pipe, parsed.text, warn)
    if not identities and warn is not None:
        warn("the prompt names no stored identity: rendering plain text-to-image")
    control = control_image_for(cfg) if cfg.control is not None else None
    size = parse_size(cfg.size) or native_size(pipe)
    check_side_multiple(pipe, size)

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
                cfg.control_type,
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
        f"Sampler: {SCHEDULERS[cfg.scheduler][2] if cfg.scheduler else 'Euler (flow matching)'}",
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
