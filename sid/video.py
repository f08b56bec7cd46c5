"""``sid video``: short clips of stored identities.

The backend follows the text encoder the prompt's identities were learned for:

* SD 2.x identities (OpenCLIP ViT-H, 1024-d): diffusers' ``TextToVideoSDPipeline`` with ModelScope's
  text-to-video-ms-1.7b (or zeroscope), whose text encoder is the same OpenCLIP ViT-H.
* SD 1.x identities (CLIP ViT-L, 768-d): ``AnimateDiffPipeline``, an AnimateDiff motion adapter on an
  SD 1.5 base model (``--model``); ``--video-model`` then names the motion adapter.
* SDXL identities (both encoders): ``AnimateDiffSDXLPipeline``, AnimateDiff's SDXL motion adapter on
  an SDXL base model; the base model's family picks the pipeline.
* FLUX.1 identities: ``LTXPipeline`` (LTX-Video), whose T5-v1.1-XXL takes the identity's T5 half
  (``sid.video_t5``: why LTX-Video, and the fingerprint check).

Identities are loaded into the video pipeline's text encoder exactly as ``sid render`` loads them
(``sid.render.prepare``). Frames are written by ``sid.videofile.write_video`` (mp4, webm or gif, whole
or not at all), ``sid 3d``'s turntable writer too.

One concern, making a clip (plan, checks, loading, generation), hence one file past 450 lines.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sid import limits
from sid.errors import BadInput, IncompatibleIdentity, Interrupted, OutOfMemory, first_line
from sid.families import (
    ANIMATEDIFF,
    ANIMATEDIFF_SDXL,
    FAMILIES,
    LTX,
    SD2,
    SDXL,
    T2V,
    Family,
    family_of_pipeline,
    family_of_video,
    prompt_family,
)
from sid.files import is_folder, output_file
from sid.pipelines import ModelSpec, component_spec, model_for_identities, native_size
from sid.prompts import check_compatible, parse_prompt
from sid.render import StepProgress, parse_size, slug
from sid.store import Identity, IdentityStore
from sid.video_t5 import LTX_GUIDANCE, LTX_PIPELINE, LTX_SIZE, expand_tokens, load_t5_identities
from sid.videofile import FORMATS, write_video

DEFAULT_BASE = {ANIMATEDIFF: "sd15", ANIMATEDIFF_SDXL: "sdxl"}  # AnimateDiff's base without --model


@dataclass(frozen=True)
class VideoPreset:
    """A video model: a text-to-video pipeline, or an AnimateDiff motion adapter."""

    name: str
    backend: str  # T2V | ANIMATEDIFF | ANIMATEDIFF_SDXL
    candidates: tuple[str, ...]  # hub ids, tried in order
    size: tuple[int, int]  # native (width, height)
    max_frames: int | None = None  # frames the model handles at most, if it has a limit


# Every hub id `sid video` knows, in one place.
VIDEO_PRESETS: dict[str, VideoPreset] = {
    "text-to-video-ms": VideoPreset(
        "text-to-video-ms",
        T2V,
        ("ali-vilab/text-to-video-ms-1.7b", "damo-vilab/text-to-video-ms-1.7b"),
        (256, 256),
    ),
    "zeroscope": VideoPreset("zeroscope", T2V, ("cerspense/zeroscope_v2_576w",), (576, 320)),
    "animatediff": VideoPreset(
        "animatediff", ANIMATEDIFF, ("guoyww/animatediff-motion-adapter-v1-5-2",), (512, 512), 32
    ),
    "animatediff-v3": VideoPreset(
        "animatediff-v3", ANIMATEDIFF, ("guoyww/animatediff-motion-adapter-v1-5-3",), (512, 512), 32
    ),
    "ltx-video": VideoPreset("ltx-video", LTX, ("Lightricks/LTX-Video",), LTX_SIZE, 257),
    "animatediff-sdxl": VideoPreset(
        "animatediff-sdxl",
        ANIMATEDIFF_SDXL,
        ("guoyww/animatediff-motion-adapter-sdxl-beta",),
        (1024, 1024),
        32,
    ),
}
DEFAULT_VIDEO = {
    T2V: "text-to-video-ms",
    ANIMATEDIFF: "animatediff",
    ANIMATEDIFF_SDXL: "animatediff-sdxl",
    LTX: "ltx-video",
}
WHOLE = (T2V, LTX)  # backends whose video model is a whole pipeline (not a motion adapter on a base)

DEFAULT_FORMAT = "mp4"
DEFAULT_FRAMES = 16
DEFAULT_FPS = 8.0
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = {T2V: 9.0, ANIMATEDIFF: 7.5, ANIMATEDIFF_SDXL: 8.0, LTX: LTX_GUIDANCE}  # models' cards


@dataclass
class VideoConfig:
    prompt: str
    frames: int = DEFAULT_FRAMES
    fps: float = DEFAULT_FPS
    size: str | None = None  # "WxH"; None: the model's native size
    steps: int = DEFAULT_STEPS
    guidance: float | None = None  # None: the backend's default
    seed: int | None = None  # None: random
    negative: str = ""
    model: str | None = None  # AnimateDiff's SD 1.5 base (preset, hub id or folder)
    video_model: str | None = None  # preset, hub id or folder of a t2v pipeline or a motion adapter
    device: str = "auto"
    dtype: str = "auto"
    output: str | Path | None = None  # file or folder (a str ending in "/" is one); None: here
    format: str | None = None  # mp4 | gif | webm; None: from the output's suffix, else mp4
    force: bool = False
    low_vram: bool = False


@dataclass(frozen=True)
class VideoPlan:
    """Which backend and which models, decided before anything loads."""

    backend: str
    video: ModelSpec  # the t2v pipeline, or the motion adapter
    base: str | None = None  # AnimateDiff: the base model for resolve_model
    size: tuple[int, int] | None = None  # the preset's native size, if known
    max_frames: int | None = None  # the preset's frame limit, if known


@dataclass
class VideoResult:
    path: Path
    frames: int
    fps: float
    seed: int
    size: tuple[int, int]
    backend: str
    model: str
    identities: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "frames": self.frames,
            "fps": self.fps,
            "seed": self.seed,
            "size": f"{self.size[0]}x{self.size[1]}",
            "backend": self.backend,
            "model": self.model,
            "identities": self.identities,
        }


# -- checks before loading --------------------------------------------------------------------------


def output_format(cfg: VideoConfig) -> str:
    """--format, else the output file's suffix, else mp4."""
    given = None if cfg.output is None or is_folder(cfg.output) else Path(cfg.output)
    suffix = given.suffix.lower().lstrip(".") if given is not None else ""
    fmt = (cfg.format or suffix or DEFAULT_FORMAT).lower().lstrip(".")
    if fmt not in FORMATS:
        raise BadInput(f"unknown video format {fmt!r}", f"use --format {' | '.join(FORMATS)}")
    if cfg.format and suffix and suffix != fmt:
        raise BadInput(f"-o {cfg.output} does not end in .{fmt} (--format {fmt})", f"name the file *.{fmt}")
    return fmt


def output_path(cfg: VideoConfig, fmt: str, seed: int) -> Path:
    """Where the clip goes (checked by ``sid.files.output_file``: an existing file needs --force)."""
    name = f"{slug(cfg.prompt)}-{seed}.{fmt}"
    return output_file(cfg.output if cfg.output is not None else Path.cwd(), name, cfg.force, f".{fmt}")


def check_inputs(cfg: VideoConfig) -> str:
    """Every option checked before a model loads; returns the output format."""
    if not cfg.prompt.strip():
        raise BadInput("the prompt is empty", 'pass a prompt like "alice dancing in the rain"')
    knobs = {"frames": cfg.frames, "fps": cfg.fps, "steps": cfg.steps, "seed": cfg.seed}
    limits.check_all("video", knobs)
    limits.check_guidance(cfg.guidance)
    check_budget(cfg.frames, parse_size(cfg.size, "video"))
    return output_format(cfg)


def check_budget(frames: int, size: tuple[int, int] | None) -> None:
    """Frames x pixels within the limit (clips are decoded as float32 in memory); None: size unknown yet."""
    if size is not None:
        limits.check("video", "pixels", frames * size[0] * size[1])


def check_frames(frames: int, most: int | None) -> None:
    """--frames within what the model handles (a motion adapter's sequence length), when it has a limit."""
    if most is not None and frames > most:
        raise BadInput(
            f"--frames {frames} is more than this video model handles ({most})",
            f"pass --frames {most} or fewer",
        )


# -- which backend ----------------------------------------------------------------------------------


def supported() -> str:
    t2v = ", ".join(n for n, p in VIDEO_PRESETS.items() if p.backend == T2V)
    sd2, sd1, xl = family_of_video(T2V), family_of_video(ANIMATEDIFF), family_of_video(ANIMATEDIFF_SDXL)
    return (
        f"{sd2.name} identities ({sd2.widths[0]}-d) use text-to-video ({t2v}); "
        f"{sd1.name} identities ({sd1.widths[0]}-d) use AnimateDiff on an SD 1.5 base; "
        f"{xl.name} identities use AnimateDiff-SDXL on an SDXL base; "
        f"{family_of_video(LTX).name} identities use LTX-Video"
    )


def check_family(identities: list[Identity], family: Family | None) -> None:
    """Before loading: a model family known from a preset must fit every identity (same error as later)."""
    if family is None:
        return
    for identity in identities:
        check_compatible(identity, family)


def video_model_backend(source: str) -> tuple[str, ModelSpec, tuple[int, int] | None]:
    """--video-model -> (backend, what to load, native size if known)."""
    if source in VIDEO_PRESETS:
        p = VIDEO_PRESETS[source]
        return p.backend, ModelSpec(source, p.candidates), p.size
    path = Path(source).expanduser()
    if path.exists():
        for index, backend, wanted in (
            ("model_index.json", T2V, "TextToVideoSDPipeline"),
            ("model_index.json", LTX, LTX_PIPELINE),
            ("config.json", ANIMATEDIFF, "MotionAdapter"),
        ):
            if (path / index).is_file():
                try:
                    cls = json.loads((path / index).read_text(encoding="utf-8")).get("_class_name", "")
                except (OSError, ValueError) as e:
                    raise BadInput(
                        f"{path / index} is not readable JSON: {first_line(e)}", "re-save the model"
                    ) from e
                if cls == wanted:
                    return backend, component_spec(source), LTX_SIZE if backend == LTX else None
                if index == "model_index.json" and backend == T2V:
                    continue  # perhaps the next pipeline class
                raise BadInput(
                    f"{path} holds a {cls or 'model of unknown class'}, "
                    f"not a TextToVideoSDPipeline, an {LTX_PIPELINE} or a MotionAdapter",
                    "for AnimateDiff pass the SD 1.5 folder as --model and the motion adapter as "
                    "--video-model",
                )
        raise BadInput(
            f"{path} is not a diffusers folder (no model_index.json or config.json)",
            "point --video-model at a folder saved with save_pretrained",
        )
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise BadInput(
            f"video model {source!r} is neither a preset ({', '.join(VIDEO_PRESETS)}), "
            "a hub id nor an existing folder",
            "check the spelling or the path",
        )
    lowered = source.lower()
    if "motion" in lowered or "animatediff" in lowered:
        return (ANIMATEDIFF_SDXL if "sdxl" in lowered else ANIMATEDIFF), component_spec(source), None
    backend = T2V
    return backend, component_spec(source), None


def base_family(model: str) -> Family | None:
    from sid.pipelines import presets

    table = presets()
    return table[model].family if model in table else None


def plan_video(
    cfg: VideoConfig, identities: list[Identity], warn: Callable[[str], None] | None = None
) -> VideoPlan:
    """Pick the backend and models from --video-model, or else from the identities' family."""
    if cfg.video_model:
        backend, spec, size = video_model_backend(cfg.video_model)
    elif not identities:
        family = base_family(cfg.model) if cfg.model else None
        if family is not None and family.denoiser:  # AnimateDiff takes no FLUX base: the family's video model
            backend = family.video
        else:
            backend = (ANIMATEDIFF_SDXL if family == SDXL else ANIMATEDIFF) if cfg.model else T2V
        preset = VIDEO_PRESETS[DEFAULT_VIDEO[backend]]
        spec, size = ModelSpec(preset.name, preset.candidates), preset.size
    else:
        family = prompt_family(identities)
        backend = family.video
        if backend is None:
            presets = " or ".join(p for f in FAMILIES if f.video for p in f.presets)
            raise IncompatibleIdentity(
                f"sid video has no video model for identity {identities[0].name!r}, "
                f"learned for {family.label}; {supported()}",
                f"learn the identity on {presets}, or pass --video-model with a model of its text encoder",
            )
        preset = VIDEO_PRESETS[DEFAULT_VIDEO[backend]]
        spec, size = ModelSpec(preset.name, preset.candidates), preset.size

    if backend in WHOLE:
        if cfg.model and warn is not None:
            warn(
                f"--model is only used with AnimateDiff; "
                f"the text-to-video model {spec.label} is used as a whole"
            )
        if identities and spec.label in VIDEO_PRESETS:
            check_family(identities, family_of_video(backend))
        return VideoPlan(backend, spec, None, size, preset_max_frames(spec))

    base = cfg.model or model_for_identities(identities, warn) or DEFAULT_BASE[backend]
    family = base_family(base)
    check_motion_base(family, base)
    motion = family.video if family is not None and family.video in DEFAULT_BASE else None
    if motion is not None and motion != backend:  # an SD 1.5 adapter on SDXL, or the other way round
        if spec.label in VIDEO_PRESETS:
            adapter_family = family_of_video(backend)
            raise BadInput(
                f"motion adapter {spec.label} is made for {adapter_family.name} base models, "
                f"and the base model {base} is {family.name}",
                f"pass --video-model {DEFAULT_VIDEO[motion]} (or a {adapter_family.name} --model)",
            )
        backend = motion  # an adapter without a preset: the base model's family tells which
    check_family(identities, family)
    return VideoPlan(backend, spec, base, size, preset_max_frames(spec))


def preset_max_frames(spec: ModelSpec) -> int | None:
    preset = VIDEO_PRESETS.get(spec.label)
    return preset.max_frames if preset is not None else None


# -- loading ----------------------------------------------------------------------------------------


def load_video_pipeline(
    plan: VideoPlan,
    device: str = "auto",
    dtype: str = "auto",
    low_vram: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Any:
    """The plan's pipeline on its device (or CPU-offloaded with --low-vram on CUDA)."""
    from sid.pipelines import load_from_candidates, pick_device, pick_dtype, quiet_libraries

    dev = pick_device(device)
    torch_dtype = pick_dtype(dev, dtype)
    quiet_libraries()  # no loading bars or chatter; the Hub's download bars stay
    if plan.backend in WHOLE:
        import diffusers

        cls = LTX_PIPELINE if plan.backend == LTX else "TextToVideoSDPipeline"
        pipe = load_from_candidates(plan.video, getattr(diffusers, cls), dtype=torch_dtype)
    else:
        pipe = _animatediff(plan, torch_dtype, warn)
    pipe.set_progress_bar_config(disable=True)
    if low_vram:
        if hasattr(pipe, "enable_vae_slicing"):
            pipe.enable_vae_slicing()
        elif hasattr(pipe.vae, "enable_slicing"):
            pipe.vae.enable_slicing()
        if dev.startswith("cuda"):
            pipe.enable_model_cpu_offload(device=dev)
            return pipe
        if warn is not None:
            warn(
                f"--low-vram offloads models to the CPU only on CUDA; "
                f"on {dev} it only decodes frames one by one"
            )
    return pipe.to(dev)


def check_motion_base(family: Family | None, base: str) -> None:
    """AnimateDiff's motion modules go into a UNet: refuse a base known by another denoiser (FLUX.1)."""
    if family is not None and family.denoiser:
        own = f"drop --model: sid video makes {family.name} clips with {family.video}" if family.video else ""
        raise BadInput(
            f"AnimateDiff animates UNet base models, and {base} is {family.name} ({family.denoiser})",
            own or "pass an SD 1.x or SDXL --model",
        )


def motion_backend(pipe: Any) -> str:
    """The AnimateDiff backend a loaded base model's layout takes: SDXL's (two text encoders) or SD
    1.x's. A folder or hub-id base is only known once loaded, so this, not the plan, has the last word."""
    return ANIMATEDIFF_SDXL if len(family_of_pipeline(pipe).widths) > 1 else ANIMATEDIFF


def _animatediff(plan: VideoPlan, torch_dtype: Any, warn: Callable[[str], None] | None) -> Any:
    """AnimateDiffPipeline (AnimateDiffSDXLPipeline on an SDXL-layout base) from the base model's
    components and the motion adapter."""
    from diffusers import AnimateDiffPipeline, AnimateDiffSDXLPipeline, DDIMScheduler, MotionAdapter

    from sid.pipelines import load_from_candidates, resolve_model

    base = load_from_candidates(resolve_model(plan.base), dtype=torch_dtype)
    family = family_of_pipeline(base)
    check_motion_base(family, plan.base)
    sdxl = motion_backend(base) == ANIMATEDIFF_SDXL
    if family == SD2 and warn is not None:
        warn(
            f"AnimateDiff motion adapters are trained on SD 1.5; the SD 2.x base {plan.base} may move poorly"
        )
    adapter = load_from_candidates(plan.video, MotionAdapter, dtype=torch_dtype)
    try:
        pipe = (AnimateDiffSDXLPipeline if sdxl else AnimateDiffPipeline).from_pipe(
            base, motion_adapter=adapter
        )
    except (ValueError, RuntimeError) as e:
        raise BadInput(
            f"motion adapter {plan.video.label!r} does not fit base model {plan.base!r}: {first_line(e)}",
            "use a motion adapter of the base model's family (SD 1.5 or SDXL)",
        ) from e
    # AnimateDiff's sampling setup (as in its reference code and diffusers' docs)
    pipe.scheduler = DDIMScheduler.from_config(
        base.scheduler.config,
        beta_schedule="linear",
        clip_sample=False,
        timestep_spacing="linspace",
        steps_offset=1,
    )
    return pipe


def max_frames(pipe: Any) -> int | None:
    adapter = getattr(pipe, "motion_adapter", None)
    return int(adapter.config.motion_max_seq_length) if adapter is not None else None


# -- generating and writing -------------------------------------------------------------------------


def video_frames(
    pipe: Any,
    prompt: str,
    seed: int,
    frames: int,
    steps: int,
    guidance: float,
    negative: str = "",
    size: tuple[int, int] | None = None,
    on_step: StepProgress | None = None,
) -> Any:
    """(frames, height, width, 3) uint8 array, from a CPU generator seeded with ``seed``."""
    import inspect

    import numpy as np
    import torch

    width, height = size or native_size(pipe)
    extra: dict[str, Any] = {}
    if on_step is not None:
        if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
            extra["callback_on_step_end"] = lambda p, i, t, kw: (on_step(1), kw)[1]
        else:  # TextToVideoSDPipeline only has the older per-step callback
            extra.update(callback=lambda i, t, latents: on_step(1), callback_steps=1)
    try:
        result = pipe(
            prompt,
            negative_prompt=negative or None,
            num_frames=frames,
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=width,
            height=height,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
            **extra,
        )
    except torch.OutOfMemoryError as e:
        raise OutOfMemory(
            f"out of memory making {frames} frames of {width}x{height}",
            "pass --low-vram, fewer --frames or a smaller --size",
        ) from e
    video = np.asarray(result.frames[0], dtype=np.float32)  # (F, H, W, 3) in [0, 1]
    return (video * 255).round().clip(0, 255).astype(np.uint8)


# -- the whole command ------------------------------------------------------------------------------


@dataclass
class VideoJob:
    """A checked request: everything decided before a model loads."""

    cfg: VideoConfig
    store: IdentityStore
    format: str
    path: Path
    seed: int
    plan: VideoPlan


def plan_job(
    cfg: VideoConfig, store: IdentityStore | None = None, warn: Callable[[str], None] | None = None
) -> VideoJob:
    """Options, output file, identities and backend, all checked without loading a model."""
    fmt = check_inputs(cfg)
    store = store or IdentityStore()
    parsed = parse_prompt(cfg.prompt, store, warn)  # unknown @names fail here
    identities = [store.get(name) for name in parsed.names]
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    path = output_path(cfg, fmt, seed)
    plan = plan_video(cfg, identities, warn)
    check_frames(cfg.frames, plan.max_frames)
    check_budget(cfg.frames, parse_size(cfg.size, "video") or plan.size)
    if not identities and warn is not None:
        warn("the prompt names no stored identity: making a plain text-to-video clip")
    return VideoJob(cfg, store, fmt, path, seed, plan)


def run_job(
    job: VideoJob, warn: Callable[[str], None] | None = None, on_step: StepProgress | None = None
) -> VideoResult:
    """Load the pipeline, inject the identities (as ``sid render`` does), generate and write."""
    from sid.render import prepare

    cfg, plan, seed = job.cfg, job.plan, job.seed
    pipe = load_video_pipeline(plan, cfg.device, cfg.dtype, cfg.low_vram, warn)
    if plan.backend not in WHOLE:  # an SDXL base given as a folder or hub id: its guidance, its name recorded
        plan = replace(plan, backend=motion_backend(pipe))
    if plan.backend == LTX:  # no textual-inversion loader: the T5 halves go in here
        parsed = parse_prompt(cfg.prompt, job.store, warn)
        identities = [job.store.get(name) for name in parsed.names]
        load_t5_identities(pipe, identities)
        parsed = replace(parsed, text=expand_tokens(parsed.text, pipe.tokenizer))
    else:
        parsed, identities = prepare(cfg.prompt, job.store, pipe, warn)
    check_frames(cfg.frames, max_frames(pipe))
    size = parse_size(cfg.size, "video") or plan.size or native_size(pipe)
    check_budget(cfg.frames, size)
    guidance = cfg.guidance if cfg.guidance is not None else DEFAULT_GUIDANCE[plan.backend]

    try:
        frames = video_frames(
            pipe, parsed.text, seed, cfg.frames, cfg.steps, guidance, cfg.negative, size, on_step
        )
    except KeyboardInterrupt:
        raise Interrupted("interrupted while making the clip; no file was written", "run it again") from None
    names = [i.name for i in identities]
    settings = {
        "prompt": cfg.prompt,
        "negative": cfg.negative,
        "seed": seed,
        "steps": cfg.steps,
        "guidance": guidance,
        "frames": cfg.frames,
        "fps": cfg.fps,
        "size": f"{size[0]}x{size[1]}",
        "backend": plan.backend,
        "model": plan.video.label,
        "base": plan.base,
        "identities": names,
    }
    comment = json.dumps({"sid": settings}, sort_keys=True)
    try:
        write_video(frames, job.path, cfg.fps, job.format, comment)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted while writing {job.path}; it was not written", "run it again"
        ) from None
    height, width = int(frames.shape[1]), int(frames.shape[2])
    return VideoResult(
        job.path, int(frames.shape[0]), cfg.fps, seed, (width, height), plan.backend, plan.video.label, names
    )
