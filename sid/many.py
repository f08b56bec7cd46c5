"""Learning many identities: a manifest's rows checked up front, then K identities per step.

Each identity is learned as ``sid.train.learn`` learns it alone: the same seed gives the same mapper
initialisation, latent bank and random stream, and it keeps its own AdamW state and clipped gradient
(``StackedMappers``). K identities share one UNet forward and backward as a batch of K samples, each
conditioned on its own identity's vectors, with their losses summed, so each mapper gets the gradient
it would get alone and the GPU is busy K times over. This is not Celeb Basis's joint learning (one
mapper for several people): Celeb Basis rows, whose stored result is a moving average kept in the
mapper, are learned one at a time on the group's already-loaded model.

A row that cannot be learned (no face, a bad or taken name) fails alone with its reason. Every chunk
of K is stored as it finishes, and each identity checkpoints under its single-identity run's key, so
an interrupted batch keeps what it finished and ``--resume`` continues the rest, at any ``--parallel``.
Under torchrun or accelerate launch each rank learns its share of the rows and rank 0 stores them all
at the end; every finished identity is checkpointed until then, so a kill before that loses none.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from sid import limits, ranks
from sid.adapters import Adapter, Sample
from sid.checkpoints import load_state, save_state, step_reached
from sid.errors import BadInput, OutOfMemory, SidError
from sid.face_transformers import load_face_parser
from sid.faces import extract_face
from sid.losslog import LossLog
from sid.manifest import Outcome, Row
from sid.methods import RECIPES, StackedMappers, build_mapper
from sid.photos import photo_sha256
from sid.pipelines import pick_device
from sid.priors import build_prior
from sid.prompts import inject_vectors
from sid.store import Identity, IdentityStore
from sid.train import (
    LearnConfig,
    Phase,
    Progress,
    build_bank,
    check_inputs,
    checkpoint_meta,
    checkpoint_path,
    default_bank_size,
    drop_checkpoints,
    drop_stale_checkpoints,
    face_embeddings,
    learn,
    load_frozen,
    make_identities,
    make_optimizer,
    placeholder_prompts,
    resolved,
    run_key,
    run_length,
    run_settings,
    update,
)

# SD 2.1 at 512², bf16: the activations one more sample keeps for the backward (an estimate; the
# learn-parallel part of benchmarks.gpu measures peak memory at each K)
GPU_BYTES_PER_IDENTITY = 4.5 * 2**30
MAX_DEFAULT_PARALLEL = 8


@dataclass
class Job:
    """A row that passed every check: its concrete settings and where its run checkpoints."""

    row: Row
    cfg: LearnConfig  # resolved, with the row's method and face
    ckpt: Path
    first_step: int = 0  # the checkpoint step it resumes from
    meta: dict[str, str] = field(default_factory=dict)  # the checkpoint's header, once the face is known


@dataclass
class Learned:
    """An identity learned by some rank, for rank 0 to store."""

    job: Job
    identity: Identity
    seconds: float


def learn_many(
    rows: list[Row],
    cfg: LearnConfig,
    parallel: int | None = None,
    store: IdentityStore | None = None,
    force: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    phase: Phase | None = None,
) -> list[Outcome]:
    """Learn every row that can be learned; on rank 0, every row's outcome in manifest order."""
    store = store or IdentityStore()
    with ranks.joined() as world:
        limits.check("learn --from", "parallel", parallel)
        plan = check_rows(rows, cfg, store, force, resume) if world.main else None
        jobs, outcomes = ranks.from_main(plan, world)
        mine = jobs[world.rank :: world.size]  # round robin: each rank an even share of every method
        device = ranks.device_of(pick_device(cfg.device), world)
        meter = Meter(progress, sum(run_length(j.cfg, 1)[0] - j.first_step for j in mine))
        alone = world.size == 1

        done: list[Outcome] = []  # failed rows; alone, also each stored identity as its chunk finishes
        learned: list[Learned] = []  # under a launcher: for rank 0 to store at the end
        for method in dict.fromkeys(j.cfg.method for j in mine):
            group = [j for j in mine if j.cfg.method == method]
            for result in learn_group(group, parallel, device, store, force, resume, meter, warn, phase):
                if isinstance(result, Outcome):
                    done.append(result)
                elif alone:
                    done.append(store_learned(store, result, force))
                else:
                    learned.append(result)
        if not alone:  # rank 0 stores what every rank learned: file locks are unreliable on network storage
            gathered = ranks.to_main((done, learned), world)
            done = [o for fails, _ in gathered for o in fails]
            done += [store_learned(store, x, force) for _, share in gathered for x in share]
        return sorted(outcomes + done, key=lambda o: o.line) if world.main else []


def check_rows(
    rows: list[Row], cfg: LearnConfig, store: IdentityStore, force: bool, resume: bool
) -> tuple[list[Job], list[Outcome]]:
    """Every row through ``sid learn``'s own checks, before anything heavy loads.

    A row that fails becomes a failed outcome with the check's message; with ``resume``, a row whose
    identity is already stored from the same photo is skipped (an interrupted batch stored it).
    """
    jobs, outcomes, seen = [], [], {}
    store.check_writable(checkpoint_path(store, "").parent)  # where every row checkpoints
    for row in rows:
        try:
            if row.error:
                raise BadInput(row.error, "fix the row")
            if (first := seen.setdefault(row.name.lower(), row.line)) != row.line:
                raise BadInput(f"the name {row.name!r} is also on line {first}", "give each row its own name")
            face = row.face if row.face is not None else cfg.face_index
            row_cfg = replace(cfg, method=row.method or cfg.method, face_index=face)
            if resume and not force and _stored_from(store, row):
                outcomes.append(Outcome(row.line, row.name, str(row.photo), "skipped", "already learned"))
                continue
            check_inputs([row.photo], [row.name], row_cfg, store, force)
            row_cfg = resolved(row_cfg)
            ckpt = checkpoint_path(store, run_key([row.photo], [row.name], row_cfg))
            jobs.append(Job(row, row_cfg, ckpt, step_reached(ckpt) if resume else 0))
        except SidError as e:
            outcomes.append(failed(row, e))
    return jobs, outcomes


def failed(row: Row, e: SidError) -> Outcome:
    return Outcome(row.line, row.name, str(row.photo), "failed", str(e))  # the message (and its hint)


def _stored_from(store: IdentityStore, row: Row) -> bool:
    """Whether ``row``'s name is stored, learned from this very photo."""
    try:
        if not row.photo.is_file() or not store.exists(row.name):
            return False
        return store.get(row.name).photo_sha256 == photo_sha256(row.photo.read_bytes())
    except SidError:
        return False  # a bad name or a damaged file: the row's own checks say why


def store_learned(store: IdentityStore, learned: Learned, force: bool) -> Outcome:
    """Store one learned identity (its checkpoint goes once it is stored); a failure fails that row."""
    row = learned.job.row
    try:
        store.save(learned.identity, overwrite=force)
    except SidError as e:
        return failed(row, e)
    drop_checkpoints(learned.job.ckpt, learned.job.meta)
    loss = learned.identity.final_loss
    step = learned.job.first_step
    return Outcome(row.line, row.name, str(row.photo), "learned", "", learned.seconds, loss, step)


def default_parallel(device: str) -> int:
    """Identities per step when --parallel is not given: 1 on CPU (no gain from batching there),
    else as many as the free accelerator memory holds, at most MAX_DEFAULT_PARALLEL."""
    if not device.startswith("cuda"):
        return 1
    free, _ = torch.cuda.mem_get_info()
    return int(max(1, min(MAX_DEFAULT_PARALLEL, free // GPU_BYTES_PER_IDENTITY)))


class Meter:
    """One progress bar over every identity-step of this process's share of the batch."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def advance(self, steps: int, loss: float) -> None:
        self.done += steps
        if self.progress:
            self.progress(self.done, self.total, loss)

    def drop(self, steps: int) -> None:
        """A row failed: its steps leave the total."""
        self.total -= steps


# -- one group: one method, one loaded model ---------------------------------------------------------------
def learn_group(
    jobs: list[Job],
    parallel: int | None,
    device: str,
    store: IdentityStore,
    force: bool,
    resume: bool,
    meter: Meter,
    warn: Callable[[str], None] | None,
    phase: Phase | None,
) -> Iterator[Outcome | Learned]:
    """Load the group's model once, then learn its jobs K at a time (Celeb Basis: one at a time),
    yielding each chunk's results as it finishes, so they are stored before the next starts."""
    phase = phase or (lambda _: None)
    cfg = jobs[0].cfg
    phase(f"loading the model for {len(jobs)} {cfg.method} identit{'y' if len(jobs) == 1 else 'ies'}")
    try:
        model = load_frozen(cfg, device)
        batch = None if RECIPES[cfg.method].ema else Batch.build(cfg, model, warn)
    except SidError as e:  # this group's model cannot load (e.g. not downloaded): its rows fail, others go on
        for job in jobs:
            meter.drop(run_length(job.cfg, 1)[0] - job.first_step)
            yield failed(job.row, e)
        return
    if batch is None:
        for job in jobs:
            yield learn_alone(job, model, store, force, resume, meter, warn)
        return
    k = parallel or default_parallel(device)
    ordered = sorted(jobs, key=lambda j: j.first_step)
    chunks = [  # a chunk's identities resume from one step
        same[i : i + k]
        for _, group in itertools.groupby(ordered, key=lambda j: j.first_step)
        for same in [list(group)]
        for i in range(0, len(same), k)
    ]
    for chunk in chunks:
        phase(f"learning {', '.join(j.row.name for j in chunk)} ({len(chunk)} per step)")
        yield from batch.learn(chunk, resume, meter, warn)


def learn_alone(
    job: Job,
    model: Adapter,
    store: IdentityStore,
    force: bool,
    resume: bool,
    meter: Meter,
    warn: Callable[[str], None] | None,
) -> Outcome | Learned:
    """One identity through ``sid.train.learn`` on the loaded model; the caller stores it."""
    reached = [job.first_step]

    def progress(step: int, total: int, loss: float) -> None:
        meter.advance(step - reached[0], loss)
        reached[0] = step

    try:
        result = learn(
            [job.row.photo],
            [job.row.name],
            job.cfg,
            store,
            force,
            resume,
            progress,
            warn,
            model=model,
            save=False,
        )
    except SidError as e:
        meter.drop(run_length(job.cfg, 1)[0] - reached[0])
        return failed(job.row, e)
    job.meta = checkpoint_meta([job.row.name], job.cfg, [result.identities[0].photo_sha256])
    return Learned(job, result.identities[0], result.seconds)


@dataclass
class Batch:
    """What every chunk of a group shares: the model, the priors, the placeholders, the templates."""

    model: Adapter
    cfg: LearnConfig
    priors: list[Any]  # one per text encoder
    placeholders: list[tuple[Any, list[int]]]
    templates: torch.Tensor  # (T, E, L)
    parser: Any

    @classmethod
    def build(cls, cfg: LearnConfig, model: Adapter, warn: Callable[[str], None] | None) -> Batch:
        device = model.device
        priors = [build_prior(tokenizer, encoder, cfg.method) for tokenizer, encoder in model.encoders]
        placeholders, templates = placeholder_prompts(model, RECIPES[cfg.method].templates, device)
        parser = load_face_parser(cfg.face_parser, warn) if cfg.face_parser else None
        return cls(model, cfg, priors, placeholders, templates, parser)

    def learn(
        self, jobs: list[Job], resume: bool, meter: Meter, warn: Callable[[str], None] | None
    ) -> list[Outcome | Learned]:
        """Learn ``jobs`` together (K = len(jobs)); a job whose face cannot be found fails alone."""
        start = time.perf_counter()
        model, cfg, device = self.model, self.cfg, self.model.device
        recipe = RECIPES[cfg.method]
        steps, batch, lr = run_length(cfg, 1)
        results: list[Outcome | Learned] = []
        ready = []
        for job in jobs:  # 1. faces, each row on its own
            try:
                crop = extract_face(
                    job.row.photo,
                    face_index=job.cfg.face_index,
                    face_models=job.cfg.face_models,
                    warn=warn,
                    parser=self.parser,
                    device=device,
                )
                ready.append((job, crop, face_embeddings(crop, job.cfg, device).to(device)))
            except SidError as e:
                meter.drop(steps - job.first_step)
                results.append(failed(job.row, e))
        if not ready:
            return results
        jobs = [j for j, _, _ in ready]
        crops = [c for _, c, _ in ready]
        faces = torch.stack([e for _, _, e in ready])  # (K, 2, f)
        bank_size = cfg.bank_size or default_bank_size(steps, batch, 1)
        # 2. each identity's own mapper init, bank and random stream, seeded as a run of its own
        mappers, banks, gens, logs = [], [], [], []
        for job, crop, embedding in ready:
            torch.manual_seed(job.cfg.seed)
            mappers.append(build_mapper(cfg.method, embedding.shape[-1], self.priors).to(device))
            generator = torch.Generator().manual_seed(job.cfg.seed)
            banks.append(
                build_bank(
                    crop,
                    model.vae,
                    model.resolution,
                    bank_size,
                    generator,
                    cfg.method,
                    device,
                    model.amp_dtype,
                )
            )
            gens.append(torch.Generator(device).manual_seed(job.cfg.seed))
            logs.append(LossLog())
            job.meta = checkpoint_meta([job.row.name], job.cfg, [crop.photo_sha256])

        # 3. resumable state, per identity, in its single-identity checkpoint
        first = jobs[0].first_step
        singles = [make_optimizer(m.parameters(), cfg.method, lr, device) for m in mappers]
        for job, single, opt, gen, log in zip(jobs, mappers, singles, gens, logs, strict=True):
            if first and job.ckpt.is_file():
                _, log.values = load_state(job.ckpt, single, opt, gen)
            elif resume:
                drop_stale_checkpoints(job.ckpt, job.meta, warn)
        mapper = StackedMappers(mappers)
        optimizer = make_optimizer(mapper.parameters(), cfg.method, lr, device)
        if first:
            optimizer.load_state_dict(stack_states([o.state_dict() for o in singles], optimizer.state_dict()))
        scaler = torch.amp.GradScaler(enabled=model.amp_dtype == torch.float16)

        # 4. the loop: K identities per step, each on its own samples
        k, reported = len(jobs), first
        try:
            with inject_vectors(self.placeholders) as slot:
                predict = model.predictor(slot)  # shapes fixed per chunk: one CUDA-graph capture each
                for step in range(first, steps):
                    if not (cfg.overfit and step > first):
                        samples = [
                            model.noised(bank.sample(batch, step), face, self.templates, gen)
                            for bank, face, gen in zip(banks, faces, gens, strict=True)
                        ]
                        sample = concat(samples)
                    with model.autocast():
                        vectors = mapper(sample.face.view(k, batch, -1)).flatten(0, 1)  # (K*B, 2, d)
                        pred = predict(vectors, sample.ids, sample.z_t, sample.t)
                    losses = torch.stack(
                        [model.loss(p, s, cfg.method) for p, s in zip(pred.chunk(k), samples, strict=True)]
                    )
                    update(losses.sum(), mapper, optimizer, scaler, recipe.grad_clip)  # summed: each its own
                    for log, loss in zip(logs, losses, strict=True):
                        log.add(loss)
                    if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                        for log in logs:
                            log.flush()
                        meter.advance((step + 1 - reported) * k, sum(log.smoothed() for log in logs) / k)
                        reported = step + 1
                    if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
                        self.checkpoint(mapper, optimizer, mappers, singles, jobs, gens, logs, step + 1)
        except torch.OutOfMemoryError as e:
            raise OutOfMemory(
                f"out of memory on {device} learning {k} identities at once",
                f"pass --parallel {max(1, k // 2)} or use a smaller model",
            ) from e

        # 5. each finished state checkpointed: under a launcher rank 0 stores it only at the end, so a
        # kill before then must not lose it (--resume stores it without training); dropped once stored
        if cfg.checkpoint_every:
            self.checkpoint(mapper, optimizer, mappers, singles, jobs, gens, logs, steps)
        # 6. final vectors: each mapper on its unaugmented face embedding
        mapper.eval()
        with torch.no_grad():
            final = mapper(faces[:, :1]).float().cpu()[:, 0]  # (K, 2, sum d)
        seconds = (time.perf_counter() - start) / k
        for i, job in enumerate(jobs):
            settings = run_settings(job.cfg, model, steps, batch, lr, bank_size, self.priors)
            (identity,) = make_identities(
                [job.row.name], [final[i]], [crops[i]], job.cfg, model, settings, logs[i].values
            )
            results.append(Learned(job, identity, seconds))
        return results

    @staticmethod
    def checkpoint(
        mapper: StackedMappers,
        optimizer: torch.optim.Optimizer,
        singles_m: list[torch.nn.Module],
        singles_o: list[torch.optim.Optimizer],
        jobs: list[Job],
        gens: list[torch.Generator],
        logs: list[LossLog],
        step: int,
    ) -> None:
        """Each identity's state written as its single-identity run would write it."""
        state = optimizer.state_dict()
        for i, job in enumerate(jobs):
            singles_m[i].load_state_dict(mapper.state_of(i))
            singles_o[i].load_state_dict(slice_state(state, i, singles_o[i].state_dict()))
            save_state(job.ckpt, singles_m[i], singles_o[i], gens[i], step, logs[i].flush(), job.meta)


def concat(samples: list[Sample]) -> Sample:
    """K identities' samples as one batch, identity by identity."""
    parts = {}
    for f in fields(Sample):
        values = [getattr(s, f.name) for s in samples]
        parts[f.name] = None if values[0] is None else torch.cat(values)
    return Sample(**parts)


def slice_state(stacked: dict[str, Any], k: int, like: dict[str, Any]) -> dict[str, Any]:
    """Identity k's AdamW state (step, moments) out of the stacked optimizer's state dict."""
    state = {
        pid: {name: v if name == "step" else v[k] for name, v in entry.items()}
        for pid, entry in stacked["state"].items()
    }
    return {"state": state, "param_groups": like["param_groups"]}


def stack_states(singles: list[dict[str, Any]], like: dict[str, Any]) -> dict[str, Any]:
    """The stacked optimizer's state from K identities' own (resumed from the same step)."""
    state = {
        pid: {
            name: v if name == "step" else torch.stack([s["state"][pid][name] for s in singles])
            for name, v in entry.items()
        }
        for pid, entry in singles[0]["state"].items()
    }
    return {"state": state, "param_groups": like["param_groups"]}
