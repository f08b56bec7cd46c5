"""Learning many identities: a manifest's rows checked up front, then K identities per step.

The rows are learned by ``sid learn``'s own loop (``sid.train.Learner``), K at a time: each identity
with the seed's mapper initialisation, latent bank and random stream, its own AdamW state and clipped
gradient (``StackedMappers``), so a chunk of one is bit for bit ``sid learn`` of that photo. K
identities share one UNet forward and backward as a batch of K samples, each conditioned on its own
identity's vectors, with their losses summed, so each mapper gets the gradient it would get alone and
the GPU is busy K times over. This is not Celeb Basis's joint learning (one mapper for several
people): Celeb Basis rows, whose stored result is a moving average kept in the mapper, are learned
one at a time on the group's already-loaded model.

A row that cannot be learned (no face, a bad or taken name) fails alone with its reason. Every chunk
of K is stored as it finishes, and each identity checkpoints under its single-identity run's key, so
an interrupted batch keeps what it finished and ``--resume`` continues the rest, at any ``--parallel``.
Under torchrun or accelerate launch each rank learns its share of the rows and rank 0 stores them all
at the end; every finished identity is checkpointed until then, so a kill before that loses none.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sid import budget, limits, ranks
from sid.adapters import Adapter
from sid.checkpoints import step_reached
from sid.errors import BadInput, IdentityExists, OutOfMemory, SidError
from sid.face_transformers import load_face_parser
from sid.faces import warn_odd_faces
from sid.losslog import LossLog
from sid.manifest import Outcome, Row
from sid.methods import RECIPES
from sid.photos import photo_sha256
from sid.pipelines import pick_device
from sid.resume import checkpoint_path, drop_checkpoints, run_key
from sid.store import Identity, IdentityStore
from sid.train import (
    LearnConfig,
    Learner,
    Phase,
    Progress,
    Unit,
    check_inputs,
    face_of,
    load_frozen,
    resolved,
    run_length,
)


@dataclass
class Job:
    """A row that passed every check: its concrete settings and where its run checkpoints."""

    row: Row  # the person's first row (a name on several rows is one person's several photos)
    cfg: LearnConfig  # resolved, with the row's method and face
    ckpt: Path
    first_step: int = 0  # the checkpoint step it resumes from
    meta: dict[str, str] = field(default_factory=dict)  # the checkpoint's header, once the face is known
    photos: list[Path] = field(default_factory=list)  # every photo of the person, its rows' order
    faces: list[int | None] = field(default_factory=list)  # the face of each photo (None: the largest)


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

    A row that fails becomes a failed outcome with the check's message; rows of one name (any case) are
    one person's photos, learned as one identity with the outcome on its first row; with ``resume``, a
    person already stored from the same first photo is skipped (an interrupted batch stored it).
    """
    jobs, outcomes, people = [], [], {}
    store.check_writable(checkpoint_path(store, "").parent)  # where every row checkpoints
    for row in rows:
        if row.error:
            outcomes.append(failed(row, BadInput(row.error, "fix the row")))
        else:
            people.setdefault(row.name.lower(), []).append(row)
    for same in people.values():
        row = same[0]
        try:
            if len({r.method for r in same}) > 1:
                lines = ", ".join(str(r.line) for r in same)
                raise BadInput(f"the rows of {row.name!r} (lines {lines}) name different methods", "give one")
            photos = [r.photo for r in same]
            faces = [r.face if r.face is not None else cfg.face_index for r in same]
            row_cfg = replace(cfg, method=row.method or cfg.method, face_index=faces[0])
            if resume and not force and _stored_from(store, row):
                outcomes.append(Outcome(row.line, row.name, str(row.photo), "skipped", "already learned"))
                continue
            check_inputs(photos, [row.name], row_cfg, store, force)
            row_cfg = resolved(row_cfg)
            per_photo = faces if len(photos) > 1 else None  # one photo: its key as `sid learn` makes it
            ckpt = checkpoint_path(store, run_key(photos, [row.name], row_cfg, per_photo))
            jobs.append(Job(row, row_cfg, ckpt, step_reached(ckpt) if resume else 0, {}, photos, faces))
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
    except IdentityExists as e:
        if not _stored_from(store, row):
            return failed(row, e)
        drop_checkpoints(learned.job.ckpt, learned.job.meta)  # an overlapping run stored this very row
        return Outcome(row.line, row.name, str(row.photo), "skipped", "already learned (by another run)")
    except SidError as e:
        return failed(row, e)
    drop_checkpoints(learned.job.ckpt, learned.job.meta)
    loss = learned.identity.final_loss
    step = learned.job.first_step
    return Outcome(row.line, row.name, str(row.photo), "learned", "", learned.seconds, loss, step)


def default_parallel(device: str, adapter_key: str, batch: int, resolution: int) -> int:
    """Identities per step when --parallel is not given: 1 on CPU (no gain from batching there), else
    as many as the free accelerator memory holds once the model is loaded, by the family's cost model
    (``sid.budget``), at most ``budget.MAX_DEFAULT_PARALLEL``."""
    free = budget.free_bytes(device)
    if free is None:
        return 1
    return budget.parallel_cost(adapter_key).parallel(free, batch, resolution)


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
        batch = Batch.build(cfg, model, warn)
    except SidError as e:  # this group's model cannot load (e.g. not downloaded): its rows fail, others go on
        for job in jobs:
            meter.drop(run_length(job.cfg, 1)[0] - job.first_step)
            yield failed(job.row, e)
        return
    # Celeb Basis's stored result is a moving average its mapper keeps: never stacked, one at a time
    if RECIPES[cfg.method].ema:
        k = 1
    else:
        k = parallel or default_parallel(device, model.key, run_length(cfg, 1)[1], model.resolution)
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


@dataclass
class Batch:
    """What every chunk of a group shares: the learner (model, priors, placeholders) and the face parser."""

    learner: Learner
    parser: Any

    @classmethod
    def build(cls, cfg: LearnConfig, model: Adapter, warn: Callable[[str], None] | None) -> Batch:
        parser = load_face_parser(cfg.face_parser, warn) if cfg.face_parser else None
        return cls(Learner.build(model, cfg), parser)

    def learn(
        self, jobs: list[Job], resume: bool, meter: Meter, warn: Callable[[str], None] | None
    ) -> list[Outcome | Learned]:
        """Learn ``jobs`` together (K = len(jobs)) with sid learn's own loop; a job whose face cannot be
        found fails alone, and a chunk that cannot be learned (a checkpoint that does not fit, a full
        disk) fails its rows with the reason."""
        steps = run_length(self.learner.cfg, 1)[0]
        results: list[Outcome | Learned] = []
        ready, units = [], []
        device = self.learner.model.device
        for job in jobs:  # faces, each person on its own: a photo without its face fails the person
            try:
                found = [
                    face_of(photo, replace(job.cfg, face_index=face), device, warn, self.parser)
                    for photo, face in zip(job.photos, job.faces, strict=True)
                ]
            except SidError as e:
                meter.drop(steps - job.first_step)
                results.append(failed(job.row, e))
                continue
            crops, faces = [c for c, _ in found], [f for _, f in found]
            warn_odd_faces(job.row.name, job.photos, [c.embedding for c in crops], warn)
            load = job.first_step > 0 and job.ckpt.is_file()
            units.append(Unit([job.row.name], job.cfg, crops, faces, job.ckpt, load, [0] * len(crops)))
            job.meta = units[-1].meta
            ready.append(job)
        if not ready:
            return results
        reported = [ready[0].first_step]

        def report(step: int, logs: list[LossLog]) -> None:
            k = len(logs)
            meter.advance((step - reported[0]) * k, sum(log.smoothed() for log in logs) / k)
            reported[0] = step

        try:
            learnt = self.learner.learn(units, resume, report, warn, keep=True)
        except OutOfMemory:
            raise  # the next chunk of K would not fit either: the hint names a smaller --parallel
        except SidError as e:
            for job in ready:
                meter.drop(steps - reported[0])
                results.append(failed(job.row, e))
            return results
        return results + [Learned(j, r.identities[0], r.seconds) for j, r in zip(ready, learnt, strict=True)]
