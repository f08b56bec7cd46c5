"""What each job kind calls: the same library functions the CLI commands call, with server-chosen paths.

A client sends settings (the fields of the library's config dataclass, by their names) and uploads;
every path (outputs, uploads, model folders, the face-model pack) is the server's own. Models are named
by preset or hub id only: a folder is reachable through a preset of the config file, never by a path
a client writes (``reference``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from sid.errors import BadInput
from sid.serve.jobs import Job
from sid.store import IdentityStore

# settings naming a model by preset or hub id (never a path: see ``reference``)
REFERENCES = ("model", "video_model", "controlnet", "vit_model", "face_parser", "clip_model")
# settings a client may not send: the server decides them (paths, device, internals)
SERVER_SET = {
    "learn": {"face_models", "speed", "overfit", "device"},
    "learn-many": {"face_models", "speed", "overfit", "device"},
    "render": {"out_dir", "control", "force", "device"},
    "video": {"output", "force", "device"},
    "3d": {"output", "turntable", "force", "grid", "orbit", "device"},
    "eval": {"out_dir", "photos", "face_models", "prompts", "force", "device"},
}
EXTRA = {  # settings of the call rather than of the config dataclass
    "learn": {"names": list, "force": bool, "resume": bool},
    "learn-many": {"force": bool, "resume": bool, "parallel": int},
    "render": {},
    "video": {},
    "3d": {"resume": bool},
    "eval": {},
}
TAKES_UPLOADS = {"learn", "learn-many", "render", "eval"}  # photos; render: one ControlNet image


def settings_of(kind: str, cfg: Any) -> dict[str, Any]:
    """What a client sends for ``cfg`` (a library config): its fields the server does not set, None
    (the default) left out."""
    from dataclasses import asdict

    return {k: v for k, v in asdict(cfg).items() if v is not None and k not in SERVER_SET[kind]}


def reference(key: str, value: str) -> str:
    """A model reference a client may send: a preset or hub id, never a filesystem path."""
    looks_like_path = value.startswith(("/", ".", "~", "\\")) or ".." in value or value.count("/") > 1
    if looks_like_path or Path(value).expanduser().exists():
        raise BadInput(
            f"{key} {value!r} names a path; the server loads models by preset or hub id only",
            "name the folder in a [presets.NAME] section of the config file and pass NAME",
        )
    return value


def _checked(key: str, value: Any, default: Any) -> Any:
    """``value`` if it has the JSON type the setting takes: the default's type; without a default, a
    number, a text or a list of texts (names)."""
    if value is None:
        return None
    want: tuple[type, ...] = (str, int, float, list) if default is None else (type(default),)
    if isinstance(default, float):
        want = (int, float)
    wrong = isinstance(value, bool) and bool not in want or not isinstance(value, want)
    if wrong or isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise BadInput(f"setting {key!r} = {value!r} has the wrong type", "see GET /api/openapi.json")
    if key in REFERENCES and isinstance(value, str):
        return reference(key, value)
    return value


def config_of(cls: type, kind: str, params: dict[str, Any], **server: Any) -> tuple[Any, dict[str, Any]]:
    """``cls`` built from the client's settings plus the server's; the remaining (EXTRA) settings."""
    settings: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    table = {f.name: f for f in fields(cls)}
    for key, value in params.items():
        if key in EXTRA[kind]:
            kind_type = EXTRA[kind][key]
            if not isinstance(value, kind_type) or (kind_type is int and isinstance(value, bool)):
                raise BadInput(f"setting {key!r} = {value!r} has the wrong type", "see GET /api/openapi.json")
            extra[key] = value
        elif key in table and key not in SERVER_SET[kind]:
            default = table[key].default if table[key].default is not MISSING else None
            settings[key] = _checked(key, value, default)
        else:
            raise BadInput(f"unknown setting {key!r} for a {kind} job", "see GET /api/openapi.json")
    try:
        return cls(**settings, **server), extra
    except TypeError:  # a required setting (the prompt, the names) is missing
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        raise BadInput(f"a {kind} job needs {', '.join(required)}", "send them in params") from None


def prepare(job: Job, uploads: list[Path]) -> None:
    """Check the job's settings and set what it runs; raises BadInput before anything is queued."""
    builder = BUILDERS.get(job.kind)
    if builder is None:
        raise BadInput(f"unknown job kind {job.kind!r}", f"use one of: {', '.join(BUILDERS)}")
    job.run = builder(job, uploads)


def _callbacks(job: Job) -> dict[str, Callable[..., None]]:
    return {
        "progress": lambda step, total, loss: job.emit("progress", step=step, total=total, loss=float(loss)),
        "warn": lambda text: job.emit("warning", text=text),
        "phase": lambda text: job.emit("phase", text=text),
        "on_step": lambda n, total=None: job.emit("step", advance=n, total=total),
    }


def _store(job: Job) -> IdentityStore:
    return IdentityStore(notify=lambda text: job.emit("warning", text=text))


def _learn(job: Job, uploads: list[Path]) -> Callable[[Job], dict[str, Any]]:
    from sid.train import LearnConfig

    cfg, extra = config_of(LearnConfig, "learn", job.params, device=job.device)
    names = extra.get("names") or []
    if not uploads or not names or not all(isinstance(n, str) for n in names):
        raise BadInput(
            "a learn job needs photos and names", "upload the photo(s) and send names: [NAME, ...]"
        )
    from sid.train import check_inputs

    # names, photos and every bounded knob refused at submission (HTTP 400), as the CLI refuses them
    check_inputs(uploads, names, cfg, IdentityStore(), bool(extra.get("force", False)))

    def run(job: Job) -> dict[str, Any]:
        from sid.train import learn

        cb = _callbacks(job)
        store = _store(job)
        result = learn(
            uploads,
            names,
            cfg,
            store=store,
            force=extra.get("force", False),
            resume=extra.get("resume", False),
            progress=cb["progress"],
            warn=cb["warn"],
            phase=cb["phase"],
        )
        return {
            "identities": [store.info(i.name) for i in result.identities],
            "seconds": result.seconds,
            "resumed_from": result.resumed_from,
        }

    return run


def _learn_many(job: Job, uploads: list[Path]) -> Callable[[Job], dict[str, Any]]:
    from sid.manifest import folder_rows
    from sid.train import LearnConfig

    cfg, extra = config_of(LearnConfig, "learn-many", job.params, device=job.device)
    if not uploads:
        raise BadInput("a learn-many job needs photos", "upload photos named NAME.jpg, one per person")

    def run(job: Job) -> dict[str, Any]:
        from sid.many import learn_many

        cb = _callbacks(job)
        outcomes = learn_many(
            folder_rows(uploads[0].parent),
            cfg,
            extra.get("parallel"),
            store=_store(job),
            force=extra.get("force", False),
            resume=extra.get("resume", False),
            progress=cb["progress"],
            warn=cb["warn"],
            phase=cb["phase"],
        )
        return {"outcomes": [o.as_dict() for o in outcomes]}

    return run


def _render(job: Job, uploads: list[Path]) -> Callable[[Job], dict[str, Any]]:
    from sid.render import RenderConfig, check_inputs

    out = job.folder / "out"
    if len(uploads) > 1:
        raise BadInput("a render job takes one ControlNet image", "upload one image, or none")
    control = uploads[0] if uploads else None
    cfg, _ = config_of(RenderConfig, "render", job.params, out_dir=out, control=control, device=job.device)
    check_inputs(cfg)

    def run(job: Job) -> dict[str, Any]:
        from sid.render import render

        cb = _callbacks(job)

        def image(r: Any) -> None:
            job.emit("image", file=r.path.name, seed=r.seed, index=r.index)

        results = render(cfg, _store(job), cb["warn"], cb["on_step"], on_image=image)
        return {"images": [{"file": r.path.name, "seed": r.seed, "index": r.index} for r in results]}

    return run


def _video(job: Job, uploads: list[Path]) -> Callable[[Job], dict[str, Any]]:
    from sid.video import VideoConfig

    cfg, _ = config_of(VideoConfig, "video", job.params, output=job.folder / "out", device=job.device)

    def run(job: Job) -> dict[str, Any]:
        from sid.pipelines import RESIDENT
        from sid.video import plan_job, run_job

        cb = _callbacks(job)
        # --low-vram hooks the pipeline for CPU offload: such a pipeline is loaded for this job alone
        token = RESIDENT.set(None) if cfg.low_vram else None
        try:
            result = run_job(plan_job(cfg, _store(job), cb["warn"]), warn=cb["warn"], on_step=cb["on_step"])
        finally:
            if token is not None:
                RESIDENT.reset(token)
        return result.summary()

    return run


def _threed(job: Job, uploads: list[Path]) -> Callable[[Job], dict[str, Any]]:
    from sid.threed import ThreeDConfig, check_inputs

    cfg, extra = config_of(ThreeDConfig, "3d", job.params, output=job.folder / "out", device=job.device)
    check_inputs(cfg)

    def run(job: Job) -> dict[str, Any]:
        from sid.threed import generate_3d

        cb = _callbacks(job)
        result = generate_3d(
            cfg, _store(job), extra.get("resume", False), cb["progress"], cb["warn"], stage=cb["phase"]
        )
        return result.summary()

    return run


def _eval(job: Job, uploads: list[Path]) -> Callable[[Job], dict[str, Any]]:
    from sid.eval import EvalConfig

    cfg, _ = config_of(
        EvalConfig, "eval", job.params, out_dir=job.folder / "out", photos=uploads, device=job.device
    )

    def run(job: Job) -> dict[str, Any]:
        from sid.eval import evaluate

        cb = _callbacks(job)
        return evaluate(cfg, _store(job), cb["warn"], cb["on_step"])

    return run


BUILDERS: dict[str, Callable[[Job, list[Path]], Callable[[Job], dict[str, Any]]]] = {
    "learn": _learn,
    "learn-many": _learn_many,
    "render": _render,
    "video": _video,
    "3d": _threed,
    "eval": _eval,
}
