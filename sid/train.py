"""Learning identities: a frozen diffusion model, a small mapper from face embedding to two tokens.

The loop reads top to bottom: faces -> model -> prior and mapper -> a bank of augmented latents ->
steps. Only the mapper trains; UNet, VAE and text encoder are frozen. A checkpoint (mapper +
optimizer + RNG) is written beside the store every ``checkpoint_every`` steps, and the store itself
is only written once, at the end, so an interrupted run leaves it untouched.

One concern, a learn run and its parts (inputs, frozen model, bank, step, checkpoints), hence one
file past 450 lines: ``learn()`` keeps the numbered steps and the helpers below it the detail.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sid import __version__, limits
from sid.adapters import Adapter, adapter_for, load_dtypes
from sid.adapters import describe_schedule as describe_schedule  # re-exported: the tests' import path
from sid.adapters import tokenize_templates as tokenize_templates
from sid.adapters import training_scheduler as training_scheduler
from sid.augment import augment_batch
from sid.checkpoints import find_checkpoints, load_state, save_state
from sid.errors import BadInput, OutOfMemory
from sid.face_transformers import face_parser_source, load_face_parser, vit_face_embeddings, vit_model_source
from sid.faces import FaceCrop, arcface_embedding, extract_face, load_face_pack
from sid.files import leftover_temp_files
from sid.flow import to_latent
from sid.losslog import LossLog
from sid.methods import MASKED_METHODS, RECIPES, StackedMappers, build_mapper, split_widths
from sid.pipelines import check_dtype, load_pipeline, pick_device
from sid.priors import build_prior
from sid.prompts import add_placeholder_tokens, identity_token, inject_vectors
from sid.speed import Speedups
from sid.store import Identity, IdentityStore, now_iso, validate_name

Progress = Callable[[int, int, float], None]  # (step, total, smoothed loss)
# "auto" face encoder: each paper's own. StableIdentity's mapper (init, lr) was tuned on its ViT's
# features; Celeb Basis used an insightface-family recogniser.
FACE_ENCODERS = {"stableidentity": "vit", "celebbasis": "arcface"}
MASKS = ("parser", "landmarks")
Phase = Callable[[str], None]  # names each set-up phase as it starts (before the first step)
BANK_CHUNK = 4  # photos augmented and VAE-encoded at once: 8 at 512² was the run's peak memory (H100)


@dataclass
class LearnConfig:
    """Every knob of a run; all of it is saved in the identity's metadata."""

    method: str = "stableidentity"  # stableidentity | celebbasis
    model: str | None = None  # preset, hub id or folder (None: SID_MODEL / config / sd21)
    steps: int | None = None  # optimisation steps (None: the method's recipe)
    lr: float | None = None  # AdamW learning rate (None: recipe)
    batch_size: int | None = None  # images per step (None: recipe)
    seed: int = 0  # makes a run reproducible on one device
    device: str = "auto"  # auto | cuda | mps | cpu
    dtype: str = "auto"  # autocast dtype on GPU: auto (bf16 if supported) | fp16 | bf16 | fp32
    resolution: int | None = None  # training image size (None: the model's native size)
    bank_size: int | None = None  # augmented latents encoded per identity (None: one per sample drawn)
    overfit: bool = (
        False  # reuse one latent, noise, timestep and template every step: a check that loss can fall
    )
    face_index: int | None = None  # which face of a group photo (1-based, left to right)
    face_encoder: str = "auto"  # auto (by method, FACE_ENCODERS) | arcface | vit
    vit_model: str | None = None  # hub id or folder (None: SID_VIT_MODEL/config/VIT_FACE_MODEL)
    mask: str = "parser"  # parser | landmarks: where the loss mask comes from
    face_parser: str | None = None  # hub id or folder (None: SID_FACE_PARSER/config/FACE_PARSER)
    face_models: str | None = None  # folder of the insightface pack
    checkpoint_every: int = 50  # steps between resumable checkpoints
    log_every: int = 10  # steps between progress updates (each one syncs the GPU)
    speed: Speedups = field(default_factory=Speedups)  # frozen-UNet speed knobs (sid.speed)
    low_vram: bool = False  # recompute the denoiser's activations in the backward pass (less memory)


@dataclass
class LearnResult:
    identities: list[Identity]
    losses: list[float] = field(default_factory=list)  # every step's loss, resumed steps included
    seconds: float = 0.0
    resumed_from: int = 0  # the checkpoint step a --resume run continued from


# -- inputs ------------------------------------------------------------------------------------------
def check_inputs(
    photos: list[Path], names: list[str], cfg: LearnConfig, store: IdentityStore, force: bool
) -> None:
    """All validation before anything heavy loads, with messages that say the fix."""
    if cfg.method not in RECIPES:
        raise BadInput(f"unknown method {cfg.method!r}", f"use one of: {', '.join(RECIPES)}")
    if len(photos) != len(names):
        raise BadInput(f"{len(photos)} photo(s) but {len(names)} --name(s)", "give one --name per photo")
    if len(photos) > 1 and cfg.method != "celebbasis":
        raise BadInput("joint learning of several photos is a Celeb Basis feature", "add --method celebbasis")
    if len({n.lower() for n in names}) != len(names):
        raise BadInput("the same --name is given twice", "give each photo its own name")
    for photo in photos:
        if photo.is_dir():
            raise BadInput(f"{photo} is a folder, not a photo", "give the path of one image file")
        if not photo.is_file():
            raise BadInput(f"photo {photo} not found", "check the path")
    for name in names:
        validate_name(name)
        store.check_free(name, force, "pick another --name or pass --force")
    if cfg.face_encoder not in ("auto", "arcface", "vit"):
        raise BadInput(f"unknown face encoder {cfg.face_encoder!r}", "use auto, arcface or vit")
    if cfg.mask not in MASKS:
        raise BadInput(f"unknown mask {cfg.mask!r}", f"use {' or '.join(MASKS)}")
    # every bounded knob of the table, before any model loads
    limits.check_all("learn", {knob: getattr(cfg, knob) for knob in limits.LIMITS["learn"]})
    if cfg.lr is not None and not 0 < cfg.lr < math.inf:
        raise BadInput(f"--lr must be a positive number, not {cfg.lr}", "try the default")
    check_dtype(cfg.dtype)


def resolved(cfg: LearnConfig) -> LearnConfig:
    """``cfg`` with the face choices made concrete (encoder by method, model sources by flag > env >
    config > default), so the checkpoint key and the metadata name what was actually used."""
    encoder = FACE_ENCODERS[cfg.method] if cfg.face_encoder == "auto" else cfg.face_encoder
    parsed = cfg.mask == "parser" and cfg.method in MASKED_METHODS
    return replace(
        cfg,
        face_encoder=encoder,
        vit_model=vit_model_source(cfg.vit_model) if encoder == "vit" else None,
        face_parser=face_parser_source(cfg.face_parser) if parsed else None,
    )


def run_key(photos: list[Path], names: list[str], cfg: LearnConfig) -> str:
    """A stable id for one run's inputs and settings, naming its resumable checkpoint."""
    h = hashlib.sha256()
    for photo in photos:
        h.update(hashlib.sha256(photo.read_bytes()).digest())
    h.update(json.dumps([names, asdict(cfg)], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# -- the run -----------------------------------------------------------------------------------------
def learn(
    photos: list[Path],
    names: list[str],
    cfg: LearnConfig,
    store: IdentityStore | None = None,
    force: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    phase: Phase | None = None,
    model: Adapter | None = None,
    save: bool = True,
) -> LearnResult:
    """Learn ``photos`` as ``names`` and store them; ``model`` reuses a loaded one (a batch's group),
    ``save=False`` leaves storing to the caller (rank 0 of a multi-process batch) and checkpoints the
    finished run, which the caller drops once it has stored the identities."""
    store = store or IdentityStore()
    check_inputs(photos, names, cfg, store, force)
    cfg = resolved(cfg)
    ckpt = checkpoint_path(store, run_key(photos, names, cfg))
    store.check_writable(ckpt.parent)  # a read-only or full store fails now, not after training
    phase = phase or (lambda _: None)
    recipe = RECIPES[cfg.method]
    steps, batch, lr = run_length(cfg, len(photos))
    start_time = time.perf_counter()

    # 1. faces: one aligned crop, mask and face embedding (plain, mirrored) per photo
    phase(
        ("finding and parsing the face" if cfg.face_parser else "finding the face") + "s" * (len(photos) > 1)
    )
    device = pick_device(cfg.device)
    crops, embeddings = prepare_faces(photos, cfg, device, warn)

    # 2. frozen model
    phase("loading the model")
    model = model or load_frozen(cfg, device)

    # 3. prior, placeholder tokens and mapper (the only trainable part)
    phase("parsing the celebrity-name prior and building the mapper")
    torch.manual_seed(cfg.seed)
    priors = [build_prior(tokenizer, encoder, cfg.method) for tokenizer, encoder in model.encoders]
    embeddings = [e.to(device) for e in embeddings]
    mapper = build_mapper(cfg.method, embeddings[0].shape[-1], priors, len(crops)).to(device)
    placeholders, templates = placeholder_prompts(model, recipe.templates, device)

    # 4. a bank of augmented latents and latent-size masks, encoded once
    generator = torch.Generator().manual_seed(cfg.seed)
    bank_size = cfg.bank_size or default_bank_size(steps, batch, len(crops))
    phase(f"encoding the latent bank ({bank_size} augmented images per photo)")
    bank = [
        build_bank(c, model.vae, model.resolution, bank_size, generator, cfg.method, device, model.amp_dtype)
        for c in crops
    ]

    # 5. optimiser and resumable state
    optimizer = make_optimizer(mapper.parameters(), cfg.method, lr, device)
    step_gen = torch.Generator(device).manual_seed(cfg.seed)  # per-step draws on the device: no host syncs
    first_step, log = 0, LossLog()
    run_meta = checkpoint_meta(names, cfg, [c.photo_sha256 for c in crops])
    if resume and ckpt.is_file():
        first_step, log.values = load_state(ckpt, mapper, optimizer, step_gen)
    elif resume:
        drop_stale_checkpoints(ckpt, run_meta, warn)
    scaler = torch.amp.GradScaler(enabled=model.amp_dtype == torch.float16)  # fp16 needs loss scaling

    # 6. training loop
    phase(f"training {steps - first_step} steps")
    try:
        with inject_vectors(placeholders) as slot:
            predict = model.predictor(slot)
            for step in range(first_step, steps):
                who = step % len(crops)  # joint learning alternates identities
                if not (cfg.overfit and step > first_step):
                    draw = bank[who].sample(batch, step // len(crops))
                    sample = model.noised(draw, embeddings[who], templates, step_gen)
                with model.autocast():
                    pred = predict(mapper(sample.face), sample.ids, sample.z_t, sample.t)
                loss = model.loss(pred, sample, cfg.method)
                if recipe.ema:  # Celeb Basis keeps the moving average of the coefficients this loss used
                    mapper.update_average(who, sample.face)
                update(loss, mapper, optimizer, scaler, recipe.grad_clip)
                log.add(loss)
                if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                    log.flush()
                    if progress:
                        progress(step + 1, steps, log.smoothed())
                if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
                    save_state(ckpt, mapper, optimizer, step_gen, step + 1, log.flush(), run_meta)
    except torch.OutOfMemoryError as e:
        raise OutOfMemory(
            f"out of memory on {device} while learning", "pass --batch-size 1 or use a smaller model"
        ) from e

    # 7. final vectors, stored atomically: the mapper on the unaugmented face embedding (StableIdentity)
    # or the moving average of the training coefficients (Celeb Basis)
    mapper.eval()
    with torch.no_grad():
        final = [
            (mapper.averaged_vectors(i) if recipe.ema else mapper(e[:1])[0]).float().cpu()
            for i, e in enumerate(embeddings)
        ]  # each (2, sum d)
    settings = run_settings(cfg, model, steps, batch, lr, bank_size, priors)
    identities = make_identities(names, final, crops, cfg, model, settings, log.values)
    if save:
        store.save_all(identities, overwrite=force)  # a joint group is stored whole or not at all
        drop_checkpoints(ckpt, run_meta)
    elif cfg.checkpoint_every:  # until the caller stores them a kill must not lose them: --resume stores them
        save_state(ckpt, mapper, optimizer, step_gen, steps, log.flush(), run_meta)
    return LearnResult(identities, log.values, time.perf_counter() - start_time, first_step)


# -- the run's parts ---------------------------------------------------------------------------------
def prepare_faces(
    photos: list[Path], cfg: LearnConfig, device: str, warn: Callable[[str], None] | None
) -> tuple[list[FaceCrop], list[torch.Tensor]]:
    """Each photo's aligned crop (with masks) and its (2, f) face embeddings, plain and mirrored."""
    parser = load_face_parser(cfg.face_parser, warn) if cfg.face_parser else None
    crops = [
        extract_face(
            p, face_index=cfg.face_index, face_models=cfg.face_models, warn=warn, parser=parser, device=device
        )
        for p in photos
    ]
    return crops, [face_embeddings(c, cfg, device) for c in crops]


def load_frozen(cfg: LearnConfig, device: str) -> Adapter:
    """The model frozen, in its family's adapter: the denoiser loaded in the autocast dtype (half the
    memory traffic on GPU, no fp32 copy on the device), as are large text encoders (FLUX's T5),
    everything else in fp32."""
    amp_dtype = _autocast_dtype(device, cfg.dtype)
    pipe, spec = load_pipeline(
        cfg.model,
        device=device,
        dtype="fp32",
        default=RECIPES[cfg.method].model,
        component_dtypes=load_dtypes(amp_dtype),
    )
    return frozen_model(pipe, spec, cfg, device)


def frozen_model(pipe: Any, spec: Any, cfg: LearnConfig, device: str) -> Adapter:
    """A loaded pipeline in its family's adapter as ``cfg`` asks (--low-vram's recompute, without
    CUDA graphs); the GPU benchmarks hand it a pipeline they built on the device."""
    speed = replace(cfg.speed, cuda_graphs="off") if cfg.low_vram else cfg.speed
    model = adapter_for(pipe)(pipe, spec, device, _autocast_dtype(device, cfg.dtype), speed, cfg.resolution)
    if cfg.low_vram:
        model.save_memory()
    return model


def update(
    loss: torch.Tensor, mapper: torch.nn.Module, optimizer: Any, scaler: Any, grad_clip: float | None
) -> None:
    """One optimiser step on the mapper: scaled backward (fp16), optional gradient clipping."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        if isinstance(mapper, StackedMappers):  # each identity's own norm, as if learned alone
            mapper.clip_grad_norm_(grad_clip)
        else:
            torch.nn.utils.clip_grad_norm_(mapper.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()


def run_settings(
    cfg: LearnConfig, model: Adapter, steps: int, batch: int, lr: float, bank_size: int, priors: list[Any]
) -> dict[str, Any]:
    """Every setting an identity's metadata records: the knobs, made concrete, the celebrity prior of
    each encoder slot (FLUX's CLIP and T5 keep different names and rows) and the model's noise."""
    return {
        **asdict(cfg),
        "steps": steps,
        "batch_size": batch,
        "lr": lr,
        "resolution": model.resolution,
        "bank_size": bank_size,
        "prior": priors[0].describe(),  # the first encoder's (SD's only one)
        "priors": {slot: p.describe() for slot, p in zip(model.family.slots, priors, strict=True)},
        "memory": model.memory,  # what --low-vram did, if anything
        **model.settings(),  # the model's training noise
    }


def make_identities(
    names: list[str],
    final: list[torch.Tensor],
    crops: list[FaceCrop],
    cfg: LearnConfig,
    model: Adapter,
    settings: dict[str, Any],
    losses: list[float],
) -> list[Identity]:
    """The learned identities, one slot per text encoder, and their metadata (final loss: the mean of
    the last third). ``final`` holds each identity's (2, sum d) vectors, encoders side by side."""
    family = model.family
    tail = losses[-max(1, len(losses) // 3) :]
    return [
        Identity(
            name=name,
            vectors={
                slot: part.numpy().astype(np.float32)
                for slot, part in zip(family.slots, split_widths(vec, family.widths), strict=True)
            },
            method=cfg.method,
            base_model=model.spec.label,
            fingerprints=dict(zip(family.slots, model.fingerprints, strict=True)),
            created=now_iso(),
            photo_sha256=crop.photo_sha256,
            settings={**settings, "mask_source": crop.mask_source if cfg.method in MASKED_METHODS else None},
            final_loss=float(np.mean(tail)) if tail else None,
            sid_version=__version__,
            thumbnail_png=crop.thumbnail_png(),  # inside the identity's file: they change together
        )
        for name, vec, crop in zip(names, final, crops, strict=False)
    ]


# -- helpers -----------------------------------------------------------------------------------------
def run_length(cfg: LearnConfig, identities: int) -> tuple[int, int, float]:
    """(steps, batch size, lr): the flags, else the method's recipe, whose steps are per identity.

    Celeb Basis's code trains N jointly learned identities for N times its single-identity steps, so
    each identity gets the same number of samples whichever way it is learned.
    """
    recipe = RECIPES[cfg.method]
    return cfg.steps or recipe.steps * identities, cfg.batch_size or recipe.batch_size, cfg.lr or recipe.lr


def default_bank_size(steps: int, batch: int, identities: int) -> int:
    """One bank entry per training sample an identity gets: every step sees fresh augmentations.

    That is the papers' own data pipeline (a new augmentation and VAE encode per sample), with the
    encodes batched before the loop; a smaller ``--bank-size`` reuses entries to save encodes. Never
    more than ``--bank-size`` may ask for: a long run reuses entries rather than fill the memory.
    """
    return min(math.ceil(steps / identities) * batch, int(limits.LIMITS["learn"]["bank_size"].high))


def face_embeddings(crop: FaceCrop, cfg: LearnConfig, device: str = "cpu") -> torch.Tensor:
    """(2, f): the face embedding of the aligned photo and of its mirror image (flip augmentation).

    ViT features are used as they come (the paper's). ArcFace embeddings are unit length, so their
    entries are ~1/sqrt(f); sid scales them by sqrt(f) to entries of order 1, like the ViT features
    StableIdentity's mapper was designed for (otherwise its first LayerNorm sees a variance below its
    eps and barely trains).
    """
    if cfg.face_encoder == "vit":
        pair = list(vit_face_embeddings(crop.image, cfg.vit_model, device=device))
    else:
        mirrored = np.ascontiguousarray(crop.arcface_crop[:, ::-1])
        pair = [crop.embedding, arcface_embedding(mirrored, load_face_pack(cfg.face_models))]
        pair = [e * math.sqrt(e.shape[-1]) for e in pair]
    return torch.from_numpy(np.stack(pair).astype(np.float32))


def placeholder_prompts(
    model: Adapter, templates: tuple[str, ...], device: str
) -> tuple[list[tuple[Any, list[int]]], torch.Tensor]:
    """The training placeholder's ids in each encoder (for ``inject_vectors``) and the (T, E, L) ids of
    every template as each encoder's tokenizer reads it; the encoders are moved to ``device``."""
    token = identity_token("__learn__")  # the same placeholder in every encoder's prompt
    placeholders = [(enc, add_placeholder_tokens(tok, enc, token, 2)) for tok, enc in model.encoders]
    ids = model.prompt_ids(templates, token)
    for _, encoder in model.encoders:
        encoder.to(device)
    return placeholders, ids.to(device)


@dataclass
class Bank:
    """Augmented latents (N, 4, h, w), 0/1 latent face and hair masks (N, 1, h, w) and flip flags (N,),
    on the device; no hair masks with the landmark mask."""

    latents: torch.Tensor
    masks: torch.Tensor
    hair_masks: torch.Tensor | None
    flips: torch.Tensor

    def sample(
        self, batch: int, draw: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The ``draw``-th batch: entries in bank order, wrapping around.

        Entries are independent augmentations, so taking them in order is drawing without
        replacement: a bank of steps x batch entries gives every step fresh samples, as the papers'
        data loaders do, and a smaller bank uses each entry equally often.
        """
        n = len(self.latents)
        idx = (torch.arange(batch, device=self.latents.device) + draw * batch) % n
        hair = self.hair_masks[idx] if self.hair_masks is not None else None
        return self.latents[idx], self.masks[idx], hair, self.flips[idx]


@torch.no_grad()
def build_bank(
    crop: FaceCrop,
    vae: Any,
    resolution: int,
    size: int,
    generator: torch.Generator,
    method: str,
    device: str,
    amp_dtype: torch.dtype | None = None,
) -> Bank:
    """Augment the aligned photo ``size`` times and VAE-encode it once; the VAE is frozen.

    The face and hair masks go through the same augmentation as two channels of one mask. The VAE
    encodes under bf16 autocast when the loop runs in bf16 (the papers' scripts encode in their half
    weight dtype); never in fp16, which overflows SDXL's VAE.
    """
    image = torch.from_numpy(np.asarray(crop.image.resize((resolution, resolution)), np.float32) / 127.5 - 1)
    image = image.permute(2, 0, 1)  # (3, R, R) in [-1, 1]
    planes = [crop.mask] + ([crop.hair_mask] if crop.hair_mask is not None else [])
    mask = torch.from_numpy(np.stack(planes).astype(np.float32))[None]  # (1, 1 or 2, 512, 512)
    mask = F.interpolate(mask, size=(resolution, resolution), mode="bilinear", align_corners=False)[0]
    image, mask = image.to(device), mask.to(device)  # augmentation runs batched on the training device
    vae.to(device)
    latents, latent_masks, flips = [], [], []
    for start in range(0, size, BANK_CHUNK):  # augment and encode a chunk at a time: memory stays flat
        images, masks, chunk_flips = augment_batch(
            image, mask, min(BANK_CHUNK, size - start), generator, method
        )
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=amp_dtype == torch.bfloat16):
            dist = vae.encode(images.to(vae.dtype)).latent_dist
        latents.append(to_latent(dist.sample(generator=generator), vae.config))  # FLUX: shift too
        latent_masks.append(binary_latent_masks(masks, latents[-1].shape[-2:]))  # (n, 1 or 2, h, w)
        flips.append(chunk_flips)
    masks = torch.cat(latent_masks)
    hair = masks[:, 1:] if crop.hair_mask is not None else None
    return Bank(torch.cat(latents).float(), masks[:, :1], hair, torch.cat(flips).to(device))


def binary_latent_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, R, R) masks -> (N, C, h, w) of 0/1 at latent size, as StableIdentity's code makes them:
    bicubic resize (align_corners=True), then >= 0.5."""
    small = F.interpolate(masks.float(), size=tuple(size), mode="bicubic", align_corners=True)
    return (small >= 0.5).float()


def checkpoint_path(store: IdentityStore, key: str) -> Path:
    return store.root.parent / "partial" / f"learn-{key}.safetensors"


def checkpoint_meta(names: list[str], cfg: LearnConfig, photo_sha256s: list[str]) -> dict[str, str]:
    """What a learn checkpoint records about its run, to tell a changed --resume what changed."""
    return {
        "format": "sid-learn",
        "names": json.dumps(sorted(n.lower() for n in names)),
        "config": json.dumps(asdict(cfg), sort_keys=True, default=str),
        "photos": json.dumps(photo_sha256s),
    }


def same_names(ckpt: Path, meta: dict[str, str]) -> list[tuple[Path, dict[str, str]]]:
    """Learn checkpoints beside ``ckpt`` (itself included) for the same identity names."""
    found = find_checkpoints(ckpt.parent, "learn-*.safetensors")
    return [(p, m) for p, m in found if p == ckpt or m.get("names") == meta["names"]]


def drop_checkpoints(ckpt: Path, meta: dict[str, str]) -> None:
    """Once its identities are stored: this run's checkpoint, and earlier runs' that can never resume,
    with any half-written copy a killed run left of this one."""
    for path in [p for p, _ in same_names(ckpt, meta)] + leftover_temp_files(ckpt):
        path.unlink(missing_ok=True)


def drop_stale_checkpoints(ckpt: Path, meta: dict[str, str], warn: Callable[[str], None] | None) -> None:
    """--resume found no checkpoint of these settings: say what changed, delete what can never resume."""
    stale = [(p, m) for p, m in same_names(ckpt, meta) if p != ckpt]
    if warn is not None:
        if stale:
            warn(
                f"not resuming: the interrupted run of {', '.join(json.loads(meta['names']))} used other "
                f"settings ({_changes(stale[-1][1], meta)}); starting over and deleting its checkpoint"
            )
        else:
            warn("no checkpoint of an interrupted run with these settings: starting from the beginning")
    for path, _ in stale:
        path.unlink(missing_ok=True)


def _changes(old: dict[str, str], new: dict[str, str]) -> str:
    """``--steps 400 -> 300, another photo``: what differs between two runs' checkpoint records."""
    try:
        before, after = json.loads(old.get("config", "{}")), json.loads(new["config"])
    except ValueError:
        return "unknown"
    changes = [
        f"--{k.replace('_', '-')} {before.get(k)} -> {after[k]}" for k in after if before.get(k) != after[k]
    ]
    if old.get("photos") != new["photos"]:
        changes.append("another photo")
    return ", ".join(changes) or "another sid version"


def _autocast_dtype(device: str, dtype: str) -> torch.dtype | None:
    """None on CPU (fp32); on GPU bf16 where supported, else fp16, unless asked otherwise."""
    if device.startswith("cpu") or dtype == "fp32":
        return None
    if dtype == "fp16":
        return torch.float16
    if dtype == "bf16" or (device.startswith("cuda") and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def make_optimizer(params: Any, method: str, lr: float, device: str) -> torch.optim.AdamW:
    """The method's AdamW over ``params`` (fused on CUDA: one kernel for every parameter); a batch's
    stacked mappers get the same optimizer as one identity learned alone."""
    recipe = RECIPES[method]
    fused = {"fused": True} if device.startswith("cuda") else {}
    return torch.optim.AdamW(params, lr=lr, betas=recipe.betas, weight_decay=recipe.weight_decay, **fused)
