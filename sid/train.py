"""Learning identities: a frozen diffusion model, a small mapper from face embedding to two tokens.

``learn()`` reads top to bottom: inputs -> faces -> model -> prior and placeholders -> the loop.
The loop is ``Learner.learn``, the only one: K identities per step, each with its own mapper, latent
bank (sid.bank), random stream, AdamW state and checkpoint (sid.resume). ``sid learn`` is K = 1 (one
photo, or Celeb Basis's jointly learned group of photos); ``sid learn --from`` (sid.many) runs chunks
of K, whose mappers are stacked and share one forward and backward of the model. Only mappers
train; the model is frozen and driven through its family's adapter (sid.adapters). Checkpoints
(mapper + optimizer + RNG) are written beside the store every ``checkpoint_every`` steps, and the
store itself only at the end, so an interrupted run leaves it untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sid import __version__, limits
from sid.adapters import Adapter, Sample, adapter_for, concat, load_dtypes

# "x as x": re-exported where they lived before sid.adapters and sid.bank (the tests' import path)
from sid.adapters import describe_schedule as describe_schedule
from sid.adapters import tokenize_templates as tokenize_templates
from sid.adapters import training_scheduler as training_scheduler
from sid.bank import Bank as Bank
from sid.bank import binary_latent_masks as binary_latent_masks
from sid.bank import build_bank, default_bank_size
from sid.checkpoints import load_state
from sid.errors import BadInput, OutOfMemory
from sid.face_transformers import face_parser_source, load_face_parser, vit_face_embeddings, vit_model_source
from sid.faces import FaceCrop, arcface_embedding, extract_face, load_face_pack, warn_odd_faces
from sid.losslog import LossLog
from sid.methods import MASKED_METHODS, RECIPES, StackedMappers, build_mapper, split_widths
from sid.photos import check_photo_file
from sid.pipelines import autocast_dtype, check_dtype, load_pipeline, pick_device
from sid.priors import build_prior
from sid.prompts import add_placeholder_tokens, identity_token, inject_vectors
from sid.resume import checkpoint_meta, checkpoint_path, drop_checkpoints, drop_stale_checkpoints, run_key
from sid.speed import Speedups, capture_step
from sid.stacking import Mappers, make_optimizer
from sid.store import Identity, IdentityStore, now_iso, validate_name

Progress = Callable[[int, int, float], None]  # (step, total, smoothed loss)
Report = Callable[[int, list[LossLog]], None]  # (step reached, each identity's flushed losses)
# "auto" face encoder: each paper's own. StableIdentity's mapper (init, lr) was tuned on its ViT's
# features; Celeb Basis used an insightface-family recogniser.
FACE_ENCODERS = {"stableidentity": "vit", "celebbasis": "arcface"}
MASKS = ("parser", "landmarks")
Phase = Callable[[str], None]  # names each set-up phase as it starts (before the first step)


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
    if len(photos) != len(names) and len(names) != 1:
        raise BadInput(
            f"{len(photos)} photos but {len(names)} --names",
            "give one --name for all the photos of one person, or one per photo",
        )
    if len({n.lower() for n in names}) > 1 and cfg.method != "celebbasis":
        raise BadInput(
            "joint learning of several people is a Celeb Basis feature",
            "add --method celebbasis, or give one --name for several photos of one person",
        )
    for photo in photos:
        check_photo_file(photo)
    for name in names:
        validate_name(name)
        store.check_free(name, force, "pick another --name or pass --force")
    if cfg.face_encoder not in ("auto", "arcface", "vit"):
        raise BadInput(f"unknown face encoder {cfg.face_encoder!r}", "use auto, arcface or vit")
    if cfg.mask not in MASKS:
        raise BadInput(f"unknown mask {cfg.mask!r}", f"use {' or '.join(MASKS)}")
    # every bounded knob of the table, before any model loads
    limits.check_all("learn", {knob: getattr(cfg, knob) for knob in limits.LIMITS["learn"]})
    check_dtype(cfg.dtype)


def group_photos(photos: list[Path], names: list[str]) -> list[tuple[str, list[Path]]]:
    """(name, photos) per person, in order of first appearance: one name for all the photos, or one
    name per photo where a repeated name (any case) is the same person's next photo."""
    people: dict[str, tuple[str, list[Path]]] = {}
    for photo, name in zip(photos, names * len(photos) if len(names) == 1 else names, strict=True):
        people.setdefault(name.lower(), (name, []))[1].append(photo)
    return list(people.values())


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
) -> LearnResult:
    """Learn ``photos`` as ``names`` and store them: one identity (from one or several photos of one
    person, ``group_photos``), or a Celeb Basis joint group."""
    store = store or IdentityStore()
    check_inputs(photos, names, cfg, store, force)
    cfg = resolved(cfg)
    ckpt = checkpoint_path(store, run_key(photos, names, cfg))
    store.check_writable(ckpt.parent)  # a read-only or full store fails now, not after training
    phase = phase or (lambda _: None)
    people = group_photos(photos, names)
    steps = run_length(cfg, len(people))[0]
    start_time = time.perf_counter()

    # 1. faces: one aligned crop, mask and face embedding (plain, mirrored) per photo, person by person
    phase(
        ("finding and parsing the face" if cfg.face_parser else "finding the face") + "s" * (len(photos) > 1)
    )
    device = pick_device(cfg.device)
    parser = load_face_parser(cfg.face_parser, warn) if cfg.face_parser else None
    ordered = [(i, photo) for i, (_, shots) in enumerate(people) for photo in shots]
    crops, faces = zip(*(face_of(photo, cfg, device, warn, parser) for _, photo in ordered), strict=True)
    owners = [i for i, _ in ordered]
    for i, (name, shots) in enumerate(people):
        warn_odd_faces(name, shots, [c.embedding for c, o in zip(crops, owners, strict=True) if o == i], warn)

    # 2. frozen model
    phase("loading the model")
    model = load_frozen(cfg, device)

    # 3. prior and placeholder tokens
    phase("parsing the celebrity-name prior and building the mapper")
    learner = Learner.build(model, cfg)

    # 4. mapper, latent bank and steps: the loop with K = 1
    names = [name for name, _ in people]
    unit = Unit(names, cfg, list(crops), list(faces), ckpt, load=resume and ckpt.is_file(), owners=owners)

    def report(step: int, logs: list[LossLog]) -> None:
        if progress:
            progress(step, steps, logs[0].smoothed())

    (result,) = learner.learn([unit], resume, report, warn, phase)

    # 5. the identities, stored atomically (a joint group whole or not at all)
    store.save_all(result.identities, overwrite=force)
    drop_checkpoints(ckpt, unit.meta)
    return replace(result, seconds=time.perf_counter() - start_time)


@dataclass
class Unit:
    """What one mapper learns: an identity, or Celeb Basis's jointly learned group of identities (one
    mapper whose steps alternate identities); an identity may have several photos, which take turns.
    ``load``: continue from the checkpoint at ``ckpt``."""

    names: list[str]
    cfg: LearnConfig  # resolved: its seed, face and knobs as its own run records them
    crops: list[FaceCrop]  # every photo, person by person
    faces: list[torch.Tensor]  # (2, f) per photo: plain and mirrored face embedding, on the device
    ckpt: Path
    load: bool = False
    owners: list[int] | None = None  # the identity (index into names) of each photo; None: one photo each
    meta: dict[str, str] = field(init=False)  # what its checkpoint records

    def __post_init__(self) -> None:
        self.owners = self.owners if self.owners is not None else list(range(len(self.crops)))
        self.meta = checkpoint_meta(self.names, self.cfg, [c.photo_sha256 for c in self.crops])

    def photos_of(self, who: int) -> list[int]:
        """The indices of identity ``who``'s photos (into crops and faces)."""
        return [i for i, owner in enumerate(self.owners or []) if owner == who]

    def pick(self, step: int) -> tuple[int, int, int]:
        """(identity, photo, draw) of a step: identities alternate, each identity's photos take turns,
        and ``draw`` is the batch of that photo's bank to take (one photo each: the step's turn)."""
        who, turn = step % len(self.names), step // len(self.names)
        mine = self.photos_of(who)
        return who, mine[turn % len(mine)], turn // len(mine)


@dataclass
class Learner:
    """A loaded model with one method's priors, placeholders and templates: learns units, K per step."""

    model: Adapter
    cfg: LearnConfig  # what every unit shares: method, steps, batch, lr, bank size, overfit, logging
    priors: list[Any]  # one per text encoder
    placeholders: list[tuple[Any, list[int]]]
    templates: torch.Tensor  # (T, E, L)

    @property
    def graph_step(self) -> bool:
        """Whether the whole step is one CUDA graph (``Speedups(cuda_graphs="step")``; never with
        --low-vram, which turns graphs off)."""
        return self.cfg.speed.graphs(self.model.device) == "step" and not self.cfg.low_vram

    @classmethod
    def build(cls, model: Adapter, cfg: LearnConfig) -> Learner:
        priors = [build_prior(tokenizer, encoder, cfg.method) for tokenizer, encoder in model.encoders]
        placeholders, templates = placeholder_prompts(model, RECIPES[cfg.method].templates, model.device)
        return cls(model, cfg, priors, placeholders, templates)

    def learn(
        self,
        units: list[Unit],
        resume: bool,
        report: Report | None = None,
        warn: Callable[[str], None] | None = None,
        phase: Phase | None = None,
        keep: bool = False,
    ) -> list[LearnResult]:
        """Learn ``units`` together (K = len(units)), each as it would be learned alone with its seed.

        K units share one forward and backward of the model as a batch of K samples, each conditioned
        on its own vectors, with their losses summed, so each mapper gets its own gradient. ``report``
        runs every ``log_every`` steps; ``keep`` checkpoints the finished state, for a caller that
        stores the identities later (a kill before then loses none: --resume stores them).
        """
        start = time.perf_counter()
        model, cfg, device, k = self.model, self.cfg, self.model.device, len(units)
        recipe, phase = RECIPES[cfg.method], phase or (lambda _: None)
        steps, batch, lr = run_length(cfg, len(units[0].names))

        # 1. each unit's own mapper init, latent bank and random stream, seeded as a run of its own
        mappers, banks, sizes, gens = [], [], [], []
        for unit in units:
            torch.manual_seed(unit.cfg.seed)
            face_dim = unit.faces[0].shape[-1]
            mappers.append(build_mapper(cfg.method, face_dim, self.priors, len(unit.names)).to(device))
            generator = torch.Generator().manual_seed(unit.cfg.seed)
            sizes.append(cfg.bank_size or default_bank_size(steps, batch, len(unit.names)))
            phase(f"encoding the latent bank ({sizes[-1]} augmented images per identity)")
            shares = [len(unit.photos_of(owner)) for owner in unit.owners or []]  # an identity's photos
            banks.append(
                [
                    build_bank(
                        c,
                        model.vae,
                        model.resolution,
                        -(-sizes[-1] // share),  # split between the identity's photos
                        generator,
                        cfg.method,
                        device,
                        model.amp_dtype,
                    )
                    for c, share in zip(unit.crops, shares, strict=True)
                ]
            )
            gens.append(torch.Generator(device).manual_seed(unit.cfg.seed))  # per-step draws: no host syncs

        # 2. optimisers and resumable state, each unit's in its own checkpoint
        optimizers = [
            make_optimizer(m.parameters(), cfg.method, lr, device, self.graph_step) for m in mappers
        ]
        logs, first = [LossLog() for _ in units], 0
        for unit, mapper, optimizer, gen, log in zip(units, mappers, optimizers, gens, logs, strict=True):
            if unit.load:
                first, log.values = load_state(unit.ckpt, mapper, optimizer, gen, steps)
            elif resume:
                drop_stale_checkpoints(unit.ckpt, unit.meta, warn)
        group = Mappers(mappers, optimizers, cfg.method, lr, device, first > 0, self.graph_step)
        scaler = torch.amp.GradScaler(enabled=model.amp_dtype == torch.float16)  # fp16 needs loss scaling

        # 3. the loop: K units per step, each on its own samples
        phase(f"training {steps - first} steps")
        try:
            with inject_vectors(self.placeholders) as slot:
                predict = model.predictor(slot)  # shapes fixed per call: one CUDA-graph capture each

                def train_step(sample: Sample, who: int) -> torch.Tensor:
                    """Mapper, prediction, each unit's loss, clipping and AdamW: the (K,) losses."""
                    with model.autocast():
                        vectors = group(sample.face.view(k, batch, -1)).flatten(0, 1)  # (K*B, 2, sum d)
                        pred = predict(vectors, sample.ids, sample.z_t, sample.t)
                    parts = zip(pred.chunk(k), split(sample, k), strict=True)
                    losses = torch.stack([model.loss(p, s, cfg.method) for p, s in parts])
                    if recipe.ema:  # Celeb Basis keeps the moving average of the coefficients this loss used
                        group.module.update_average(who, sample.face)
                    update(losses.sum(), group.module, group.optimizer, scaler, recipe.grad_clip)
                    return losses

                graphed = None  # the whole step as one CUDA graph: no host syncs (fp16's scaler), no EMA
                if self.graph_step and not recipe.ema and not scaler.is_enabled():
                    graphed = capture_step(lambda *t: train_step(Sample(*t), 0), group.state)
                for step in range(first, steps):
                    picks = [u.pick(step) for u in units]  # (identity, photo, draw) per unit
                    if not (cfg.overfit and step > first):
                        sample = concat(
                            [
                                model.noised(b[p].sample(batch, d), u.faces[p], self.templates, g)
                                for b, (_, p, d), u, g in zip(banks, picks, units, gens, strict=True)
                            ]
                        )
                    losses = graphed(*tensors_of(sample)) if graphed else train_step(sample, picks[0][0])
                    for log, loss in zip(logs, losses, strict=True):
                        log.add(loss)
                    if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                        for log in logs:
                            log.flush()
                        if report:
                            report(step + 1, logs)
                    if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
                        group.save(units, gens, logs, step + 1)
        except torch.OutOfMemoryError as e:
            if k == 1:
                raise OutOfMemory(
                    f"out of memory on {device} while learning", "pass --batch-size 1 or use a smaller model"
                ) from e
            raise OutOfMemory(
                f"out of memory on {device} learning {k} identities at once",
                f"pass --parallel {max(1, k // 2)} or use a smaller model",
            ) from e

        # 4. the finished state kept for a caller that stores later, and each unit's identities
        if keep and cfg.checkpoint_every:
            group.save(units, gens, logs, steps)
        seconds, results = (time.perf_counter() - start) / k, []
        for unit, vectors, log, size in zip(units, group.final(units, recipe.ema), logs, sizes, strict=True):
            settings = run_settings(unit.cfg, model, steps, batch, lr, size, self.priors)
            photos = [[unit.crops[p] for p in unit.photos_of(i)] for i in range(len(unit.names))]
            identities = make_identities(unit.names, vectors, photos, unit.cfg, model, settings, log.values)
            results.append(LearnResult(identities, log.values, seconds, first))
        return results


def tensors_of(sample: Sample) -> list[torch.Tensor | None]:
    """The sample's fields in order (``Sample(*tensors)`` rebuilds it), copies of none of them."""
    return [getattr(sample, f.name) for f in fields(Sample)]


def split(sample: Sample, k: int) -> list[Sample]:
    """A K-unit batch back into each unit's samples (views)."""
    parts = {
        f.name: [None] * k if (v := getattr(sample, f.name)) is None else v.chunk(k) for f in fields(Sample)
    }
    return [Sample(**{name: chunks[i] for name, chunks in parts.items()}) for i in range(k)]


# -- the run's parts ---------------------------------------------------------------------------------
def face_of(
    photo: Path, cfg: LearnConfig, device: str, warn: Callable[[str], None] | None, parser: Any = None
) -> tuple[FaceCrop, torch.Tensor]:
    """A photo's aligned crop (with masks) and its (2, f) face embeddings, plain and mirrored, on the
    device; ``parser`` is the loaded face parser of the parser mask, if any."""
    crop = extract_face(
        photo, face_index=cfg.face_index, face_models=cfg.face_models, warn=warn, parser=parser, device=device
    )
    return crop, face_embeddings(crop, cfg, device).to(device)


def load_frozen(cfg: LearnConfig, device: str) -> Adapter:
    """The model frozen, in its family's adapter: the denoiser loaded in the autocast dtype (half the
    memory traffic on GPU, no fp32 copy on the device), as are large text encoders (FLUX's T5),
    everything else in fp32."""
    amp_dtype = autocast_dtype(device, cfg.dtype)
    pipe, spec = load_pipeline(
        cfg.model,
        device=device,
        dtype="fp32",
        default=RECIPES[cfg.method].model,
        component_dtypes=load_dtypes(amp_dtype),
    )
    return frozen_model(pipe, spec, cfg, device)


def frozen_model(pipe: Any, spec: Any, cfg: LearnConfig, device: str) -> Adapter:
    """A loaded pipeline in its family's adapter as ``cfg`` asks (--low-vram: the adapter's
    ``save_memory``, without CUDA graphs); the FLUX benchmark hands it a pipeline it built on the device."""
    speed = replace(cfg.speed, cuda_graphs="off") if cfg.low_vram else cfg.speed
    model = adapter_for(pipe)(pipe, spec, device, autocast_dtype(device, cfg.dtype), speed, cfg.resolution)
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
        "memory": model.memory,  # what --low-vram did: checkpointed and float8 components ({}: nothing)
        **model.settings(),  # the model's training noise
    }


def make_identities(
    names: list[str],
    final: list[torch.Tensor],
    crops: list[list[FaceCrop]],
    cfg: LearnConfig,
    model: Adapter,
    settings: dict[str, Any],
    losses: list[float],
) -> list[Identity]:
    """The learned identities, one slot per text encoder, and their metadata (final loss: the mean of
    the last third). ``final`` holds each identity's (2, sum d) vectors, encoders side by side; ``crops``
    each identity's photos: the first gives the thumbnail, and every photo's SHA-256 is listed."""
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
            photo_sha256=cs[0].photo_sha256,
            settings={
                **settings,
                "mask_source": cs[0].mask_source if cfg.method in MASKED_METHODS else None,
                "photos_sha256": [c.photo_sha256 for c in cs],
            },
            final_loss=float(np.mean(tail)) if tail else None,
            sid_version=__version__,
            thumbnail_png=cs[0].thumbnail_png(),  # inside the identity's file: they change together
        )
        for name, vec, cs in zip(names, final, crops, strict=False)
    ]


# -- helpers -----------------------------------------------------------------------------------------
def run_length(cfg: LearnConfig, identities: int) -> tuple[int, int, float]:
    """(steps, batch size, lr): the flags, else the method's recipe, whose steps are per identity.

    Celeb Basis's code trains N jointly learned identities for N times its single-identity steps, so
    each identity gets the same number of samples whichever way it is learned.
    """
    recipe = RECIPES[cfg.method]
    return cfg.steps or recipe.steps * identities, cfg.batch_size or recipe.batch_size, cfg.lr or recipe.lr


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
