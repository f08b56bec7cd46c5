"""``sid 3d``: optimise a radiance field of an identity by score distillation, then export it.

The run reads top to bottom: check inputs -> model and identities -> view embeddings -> field and
optimiser (or a checkpoint) -> steps -> mesh -> turntable. A checkpoint (field, background, optimiser
and RNG state, as safetensors) is written beside the output every ``checkpoint_every`` steps and
removed once the mesh is written; ``resume=True`` continues from it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sid import limits
from sid.checkpoints import load_state, result_settings, save_state
from sid.errors import BadInput, Interrupted, OutOfMemory
from sid.files import check_output_target, is_folder, output_file
from sid.losslog import LossLog
from sid.pipelines import check_dtype
from sid.store import IdentityStore
from sid.threed.cameras import OrbitRanges, sample_cameras
from sid.threed.export import MESH_FORMATS, extract_mesh, render_turntable, write_mesh
from sid.threed.field import FieldConfig, Scene
from sid.threed.render import render
from sid.threed.sds import DEFAULT_GUIDANCE, Guide, encode_views, gradient_loss

Progress = Callable[[int, int, float], None]  # (steps done, total, recent SDS loss)
METHODS = ("sds", "ism")
TURNTABLE_FPS = 24


@dataclass
class ThreeDConfig:
    """Every knob of a run."""

    prompt: str
    iters: int = 2500  # optimisation steps
    resolution: int = 64  # rendered view size; resized to the model's native size before the VAE
    guidance: float | None = None  # classifier-free guidance (None: 100 for SDS, 7.5 for ISM)
    seed: int = 0  # same seed, same device -> same asset
    lr: float = 1e-2  # feature-grid learning rate (MLP and background: lr / 10)
    method: str = "sds"  # sds | ism
    negative: str = ""  # extra negative prompt (anti-Janus terms are added per view)
    model: str | None = None  # preset, hub id or diffusers folder
    device: str = "auto"
    dtype: str = "auto"  # frozen UNet/VAE dtype (auto: fp16 on GPU, fp32 on CPU)
    output: str | Path | None = None  # mesh file or folder (default: ./<prompt slug>.<format>)
    format: str | None = None  # glb | ply | obj (default: output's suffix, else glb)
    turntable: str | Path | None = None  # mp4 path or folder (default: the mesh path with .mp4)
    make_turntable: bool = True
    force: bool = False  # overwrite an existing mesh or turntable
    samples: int = 96  # samples per ray
    batch: int = 1  # views per step
    checkpoint_every: int = 200  # steps between resumable checkpoints (0: never)
    mesh_resolution: int = 128  # marching-cubes lattice size
    mesh_threshold: float = 10.0  # density of the exported surface
    frames: int = 72  # turntable frames (24 fps: 3 s)
    turntable_size: int | None = None  # default: 4 * resolution, clamped to 64..512
    shading_warmup: float = 0.2  # share of the first steps rendered albedo-only
    orient_weight: float = 1e-2  # DreamFusion's orientation penalty
    random_background: float = 0.5  # chance per step of a random background colour instead of the learned one
    log_every: int = 10  # steps between host syncs for the logged loss
    grid: FieldConfig = field(default_factory=FieldConfig)  # the field's grids and MLP
    orbit: OrbitRanges = field(default_factory=OrbitRanges)

    @property
    def guidance_scale(self) -> float:
        return DEFAULT_GUIDANCE[self.method] if self.guidance is None else self.guidance


@dataclass
class Outputs:
    mesh: Path
    format: str
    turntable: Path | None
    checkpoint: Path


@dataclass
class ThreeDResult:
    mesh: Path
    turntable: Path | None
    iterations: int
    start_iteration: int  # > 0 when resumed
    seconds: float
    final_loss: float
    vertices: int
    faces: int
    identities: list[str]
    prompt: str  # as encoded, identity tokens in place
    model: str
    device: str

    def summary(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


# -- inputs ------------------------------------------------------------------------------------------
def outputs_for(cfg: ThreeDConfig) -> Outputs:
    """Mesh path and format, turntable path and checkpoint path, from the options."""
    from sid.render import slug

    given = None if cfg.output is None or is_folder(cfg.output) else Path(cfg.output)
    suffix = given.suffix.lower().lstrip(".") if given is not None else ""
    fmt = (cfg.format or suffix or "glb").lower()
    if fmt not in MESH_FORMATS:
        raise BadInput(f"unknown mesh format {fmt!r}", f"use one of: {', '.join(MESH_FORMATS)}")
    if given is not None and suffix and suffix != fmt:
        raise BadInput(f"-o {cfg.output} does not end in .{fmt}", f"name it .{fmt} or drop --format")
    mesh = output_file(cfg.output, f"{slug(cfg.prompt)}.{fmt}", cfg.force, f".{fmt}")
    turntable = None
    if cfg.make_turntable:
        if cfg.turntable:
            turntable = output_file(cfg.turntable, f"{mesh.stem}.mp4", cfg.force)
        else:  # beside the mesh, in a folder that may be made with it (as `-o newdir/` asks)
            turntable = check_output_target(mesh.with_suffix(".mp4"), cfg.force)
    return Outputs(mesh, fmt, turntable, mesh.with_name(f"{mesh.stem}.partial.safetensors"))


def check_inputs(cfg: ThreeDConfig) -> Outputs:
    """Every option checked before the model loads."""
    if not cfg.prompt.strip():
        raise BadInput("the prompt is empty", 'pass a prompt like "a bust of alice, marble"')
    knobs = (
        "iters",
        "resolution",
        "samples",
        "batch",
        "checkpoint_every",
        "mesh_resolution",
        "frames",
        "seed",
        "lr",
    )
    limits.check_all("3d", {knob: getattr(cfg, knob) for knob in knobs})
    limits.check_guidance(cfg.guidance)
    check_dtype(cfg.dtype)
    if cfg.method not in METHODS:
        raise BadInput(f"unknown method {cfg.method!r}", f"use one of: {', '.join(METHODS)}")
    outputs = outputs_for(cfg)
    if outputs.turntable is not None and outputs.turntable.suffix.lower() != ".mp4":
        raise BadInput(f"--turntable {outputs.turntable} is not an .mp4 file", "name it something.mp4")
    if outputs.turntable is not None and outputs.turntable.resolve() == outputs.mesh.resolve():
        raise BadInput("--turntable and -o name the same file", "pick another name for one of them")
    return outputs


def run_key(cfg: ThreeDConfig, model_label: str) -> str:
    """Settings a checkpoint shares with the run resuming it (not --iters: a run can be extended)."""
    keep = {k: v for k, v in result_settings(asdict(cfg)).items() if k not in ("iters", "model")}
    keep["model"] = model_label
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- checkpoints -------------------------------------------------------------------------------------
def check_checkpoint(path: Path, key: str) -> int:
    """The step a checkpoint reached; BadInput when it is unreadable or from other settings (header only)."""
    from sid.errors import StoreError
    from sid.store import read_header

    try:
        meta, _ = read_header(path)
    except StoreError as e:
        raise BadInput(f"checkpoint {path} is unreadable", "delete it and run without --resume") from e
    if meta.get("format") != "sid-3d" or meta.get("key") != key:
        raise BadInput(
            f"checkpoint {path} was made with other settings",
            "run with the same prompt and options, or drop --resume to start over",
        )
    step = meta.get("step", "0")
    if not step.isdigit():
        raise BadInput(f"checkpoint {path} is damaged (step {step!r})", "delete it and run without --resume")
    return int(step)


# -- one step's random choices -------------------------------------------------------------------------
def step_choices(
    cfg: ThreeDConfig, step: int, batch: int, generator: torch.Generator
) -> tuple[str, torch.Tensor, torch.Tensor, bool]:
    """(shading, light jitter (B, 3), random background (B, 3), use the random background?).

    The same number of draws every step, so a resumed run replays exactly."""
    u_shade, u_bg = torch.rand(2, generator=generator).tolist()
    jitter = torch.randn(batch, 3, generator=generator)
    colour = torch.rand(batch, 3, generator=generator)
    if step < cfg.shading_warmup * cfg.iters:
        shading = "albedo"
    else:
        shading = "albedo" if u_shade < 0.25 else "lambertian" if u_shade < 0.75 else "textureless"
    return shading, jitter, colour, u_bg < cfg.random_background


# -- the run -----------------------------------------------------------------------------------------
def refuse_transformer_identities(identities: list[Any]) -> None:
    """A FLUX.1 identity is refused before any model loads: score distillation here drives an SD
    1.x/2.x UNet, whose text encoder a FLUX identity was not learned for."""
    from sid.errors import IncompatibleIdentity
    from sid.families import family_of_identity

    for identity in identities:
        family = family_of_identity(identity.widths)
        if family.denoiser:
            raise IncompatibleIdentity(
                f"sid 3d works with SD 1.x/2.x identities; {identity.name} was learned for {family.name}",
                "render it with `sid render`, or learn the person on sd21 for 3D",
            )


def generate_3d(
    cfg: ThreeDConfig,
    store: IdentityStore | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    stage: Callable[[str], None] | None = None,
) -> ThreeDResult:
    from sid.adapters import adapter_for
    from sid.pipelines import load_pipeline, pick_device, resolve_model
    from sid.prompts import parse_prompt
    from sid.render import prepare
    from sid.videofile import write_video

    # 1. check inputs and the prompt's identities before loading anything heavy
    outputs = check_inputs(cfg)
    store = store or IdentityStore()
    parsed = parse_prompt(cfg.prompt, store, warn)  # unknown @names fail fast
    refuse_transformer_identities([store.get(n) for n in parsed.names])
    key = run_key(cfg, resolve_model(cfg.model).label)
    resuming = resume and outputs.checkpoint.is_file()
    if resuming:
        check_checkpoint(outputs.checkpoint, key)  # a foreign checkpoint fails before the model loads
    started = time.perf_counter()

    # 2. frozen model with the identities loaded, and one text embedding per view direction
    device = pick_device(cfg.device)
    pipe, spec = load_pipeline(cfg.model, device=device, dtype=cfg.dtype)
    if not adapter_for(pipe).threed:
        raise BadInput(
            f"sid 3d needs an SD 1.x/2.x model, not {spec.label}", "use --model sd21 (default) or sd15"
        )
    parsed, identities = prepare(cfg.prompt, store, pipe, warn)
    if not identities and warn is not None:
        warn("the prompt names no stored identity: making a plain text-to-3D asset")
    guide = Guide(pipe, encode_views(pipe, parsed.text, cfg.negative, device))

    # 3. field, optimiser and resumable state
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    scene = Scene(cfg.grid, generator).to(device)
    # fused Adam: one kernel over the 8M+ grid values instead of a loop of small ones
    fused = {"fused": True} if device.split(":")[0] in ("cpu", "cuda") else {}
    optimizer = torch.optim.Adam(scene.param_groups(cfg.lr), betas=(0.9, 0.99), eps=1e-15, **fused)
    first, log = 0, LossLog()
    if resuming:
        first, log.values = load_state(outputs.checkpoint, scene, optimizer, generator)
    elif resume and warn is not None:
        warn(f"no checkpoint at {outputs.checkpoint}: starting from the beginning")
    bound, guidance = cfg.grid.bound, cfg.guidance_scale

    # 4. score distillation
    mesh_written = False
    try:
        for step in range(first, cfg.iters):
            cams = sample_cameras(cfg.batch, generator, cfg.orbit)
            views = cams.labels
            shading, jitter, colour, random_bg = step_choices(cfg, step, cfg.batch, generator)
            cams = cams.to(device)
            light = torch.nn.functional.normalize(
                cams.eye / cams.radius[:, None] + 0.3 * jitter.to(device), dim=-1
            )
            background = colour.to(device) if random_bg else scene.background().expand(cfg.batch, 3)
            out = render(
                scene.field, cams, cfg.resolution, cfg.samples, background, bound, generator, shading, light
            )
            latents = guide.encode(out.image)  # (B, 4, n/8, n/8)
            grad, _ = guide.gradient(latents, views, generator, guidance, cfg.method)
            loss = gradient_loss(latents, grad) + cfg.orient_weight * out.orientation
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for p in scene.parameters():  # a rare fp16 overflow in the frozen VAE must not poison the field
                if p.grad is not None:
                    p.grad.nan_to_num_(0.0, 0.0, 0.0)
            optimizer.step()
            log.add((grad.detach() ** 2).mean())
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.iters:
                log.flush()
            if progress is not None:
                progress(step + 1, cfg.iters, log.smoothed())
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.iters:
                save_state(
                    outputs.checkpoint,
                    scene,
                    optimizer,
                    generator,
                    step + 1,
                    log.flush(),
                    {"format": "sid-3d", "key": key},
                )
        log.flush()

        # 5. mesh and turntable, both made before either is written (Ctrl-C in between writes neither)
        scene.eval()
        if stage is not None:
            stage("extracting the mesh")
        mesh = extract_mesh(scene.field, cfg.mesh_resolution, cfg.mesh_threshold, warn)
        frames = None
        if outputs.turntable is not None:
            if stage is not None:
                stage("rendering the turntable")
            size = cfg.turntable_size or min(512, max(64, 4 * cfg.resolution))
            frames = render_turntable(scene.field, cfg.frames, size, cfg.samples, cfg.orbit)
        write_mesh(mesh, outputs.mesh, outputs.format)
        mesh_written = True
        if outputs.turntable is not None:
            write_video(frames, outputs.turntable, TURNTABLE_FPS, "mp4")
    except KeyboardInterrupt:
        if mesh_written:
            raise Interrupted(
                f"interrupted after writing {outputs.mesh}; the turntable was not written",
                "run the same command with --resume --force to finish it",
            ) from None
        raise Interrupted(
            "interrupted; nothing was written",
            "run the same command with --resume to continue from the last checkpoint",
        ) from None
    except torch.OutOfMemoryError as e:
        raise OutOfMemory(
            f"out of memory on {device} while making the 3D asset",
            "lower --resolution, --samples or --mesh-resolution",
        ) from e
    outputs.checkpoint.unlink(missing_ok=True)
    return ThreeDResult(
        mesh=outputs.mesh,
        turntable=outputs.turntable,
        iterations=cfg.iters,
        start_iteration=first,
        seconds=round(time.perf_counter() - started, 2),
        final_loss=log.smoothed(),
        vertices=len(mesh.vertices),
        faces=len(mesh.faces),
        identities=[i.name for i in identities],
        prompt=parsed.text,
        model=spec.label,
        device=device,
    )
