"""The ``sid eval`` run: check every input, load the face models, references, CLIP and the pipeline,
render each prompt for each identity with ``sid render``'s code and the same seeds, score, write.

The metrics, report and face modules are imported inside ``evaluate``: the CLI reads this module's
defaults for its options, and ``sid --help`` must stay light.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sid import limits, render
from sid.errors import BadInput, Interrupted
from sid.eval.clip import DEFAULT_CLIP_MODEL, clip_enabled
from sid.eval.prompts import BUILTIN, DEFAULT_PER_PROMPT, DEFAULT_SEED, PLACEHOLDER, EvalPrompt, load_prompts
from sid.files import check_output_target
from sid.pipelines import check_dtype, model_for_identities
from sid.render import RenderConfig
from sid.store import IdentityStore

if TYPE_CHECKING:
    from PIL import Image

    from sid.eval.clip import ClipScorer
    from sid.eval.metrics import ImageScore
    from sid.eval.reference import Reference
    from sid.faces import FacePack

Warn = Callable[[str], None]


@dataclass
class EvalConfig:
    names: list[str]
    prompts: str = BUILTIN  # "builtin" or a file
    per_prompt: int = DEFAULT_PER_PROMPT
    seed: int | None = DEFAULT_SEED  # image j of every prompt uses seed + j, for every identity
    steps: int | None = None  # None: the model family's default, as sid render
    guidance: float | None = None
    size: str | None = None  # "WxH"; None: the model's native size
    scheduler: str | None = None
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    clip_model: str | None = DEFAULT_CLIP_MODEL  # None or "none": skip the CLIP score
    face_models: str | None = None
    photos: list[Path] = field(default_factory=list)  # none, one for all names, or one per name
    out_dir: str | Path | None = None  # default: sid-eval/NAME (or sid-eval/A+B for several)
    force: bool = False  # overwrite the files of an earlier run in out_dir

    def output_folder(self) -> Path:
        return Path(self.out_dir) if self.out_dir is not None else Path("sid-eval") / "+".join(self.names)

    def render_config(self, prompt: str, seed: int | None = None, model: str | None = None) -> RenderConfig:
        """``sid render``'s settings for one prompt of this run (``seed``, ``model``: as resolved)."""
        return RenderConfig(
            prompt=prompt,
            count=self.per_prompt,
            seed=seed,
            steps=self.steps,
            guidance=self.guidance,
            size=self.size,
            scheduler=self.scheduler,
            model=model,
            device=self.device,
            dtype=self.dtype,
            out_dir=self.output_folder(),
        )


def check_eval_inputs(cfg: EvalConfig, store: IdentityStore) -> list[EvalPrompt]:
    """Every option checked before anything heavy loads; returns the prompts."""
    if not cfg.names:
        raise BadInput("no identity to evaluate", "pass one or more names, e.g. sid eval alice")
    lowered = [n.lower() for n in cfg.names]
    if len(set(lowered)) != len(lowered):
        raise BadInput("an identity is named twice", "name each identity once")
    for name in cfg.names:
        store.path(name)  # IdentityNotFound lists the known ones
    prompts = load_prompts(cfg.prompts)
    knobs = {"per_prompt": cfg.per_prompt, "steps": cfg.steps, "seed": cfg.seed}
    limits.check_all("eval", knobs)
    check_dtype(cfg.dtype)
    render.parse_size(cfg.size, "eval")
    render.check_inputs(cfg.render_config(prompts[0].template))  # scheduler, guidance, the output folder
    if len(cfg.photos) not in (0, 1, len(cfg.names)):
        raise BadInput(
            f"{len(cfg.photos)} --photo for {len(cfg.names)} identities",
            "pass one --photo for all of them, or one per identity in the same order",
        )
    for photo in cfg.photos:
        if not Path(photo).is_file():
            raise BadInput(f"photo {photo} not found", "check the path")
    return prompts


def photo_for(cfg: EvalConfig, index: int) -> Path | None:
    """The reference photo of the ``index``-th name: none, the one for all, or its own."""
    if not cfg.photos:
        return None
    return Path(cfg.photos[0] if len(cfg.photos) == 1 else cfg.photos[index])


def evaluate(
    cfg: EvalConfig,
    store: IdentityStore | None = None,
    warn: Warn | None = None,
    on_step: Callable[..., None] | None = None,
) -> dict[str, Any]:
    """Render, score and write the report (``eval.json``), the renders and ``contact_sheet.png``.

    Returns the report: JSON-ready, with NaN written as null.
    """
    from sid.eval.clip import load_clip
    from sid.eval.reference import reference_for
    from sid.eval.report import REPORT, SHEET, build_report, contact_sheet, write_outputs
    from sid.faces import load_face_pack

    warn = _once(warn or (lambda _m: None))
    store = store or IdentityStore()

    # 1. inputs, face models, references and CLIP: everything that can fail before rendering
    prompts = check_eval_inputs(cfg, store)
    names = [store.path(n).stem for n in cfg.names]  # as stored
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    folder = cfg.output_folder()
    planned = [folder / REPORT, folder / SHEET] + [
        image_path(folder, p_index, prompt, name, j, seed + j)
        for p_index, prompt in enumerate(prompts)
        for name in names
        for j in range(cfg.per_prompt)
    ]
    for path in planned:  # an earlier run's files need --force
        check_output_target(path, cfg.force)
    pack = load_face_pack(cfg.face_models)
    refs = {n: reference_for(n, store, photo_for(cfg, i), cfg.face_models, warn) for i, n in enumerate(names)}
    clip = load_clip(str(cfg.clip_model)) if clip_enabled(cfg.clip_model) else None

    # 2. the pipeline, exactly as sid render loads it
    model = cfg.model or model_for_identities([store.get(n) for n in names], warn)
    base = cfg.render_config(prompts[0].template, seed=seed, model=model)
    pipe, spec, base = render.load_render_pipeline(base)
    cfg = replace(cfg, steps=base.steps, guidance=base.guidance, scheduler=base.scheduler)  # as rendered
    if on_step is not None:
        on_step(0, total=len(prompts) * len(names) * cfg.per_prompt * cfg.steps)
    size = render.parse_size(cfg.size) or render.native_size(pipe)
    render.check_side_multiple(pipe, size)
    text_embs: list[Any] = [None] * len(prompts)
    if clip is not None:
        clip.to(pipe.device)
        text_embs = list(clip.embed_texts([p.clip_text for p in prompts]))

    # 3. render and score, prompt by prompt, every identity with the same seeds; each image is written
    # as soon as it is decoded, so Ctrl-C keeps the finished ones
    scores: dict[str, list[list[ImageScore]]] = {n: [] for n in names}
    thumbs: dict[str, list[list[Image.Image]]] = {n: [] for n in names}
    context = _RunContext(base, store, pipe, spec.label, size, pack, clip, folder, warn, on_step)
    try:
        for p_index, prompt in enumerate(prompts):
            for name in names:
                row, row_thumbs = context.render_and_score(
                    p_index, prompt, name, refs[name], text_embs[p_index]
                )
                scores[name].append(row)
                thumbs[name].append(row_thumbs)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted after {context.written} of {len(planned) - 2} images; no report was written",
            f"the finished images are in {folder / 'images'}",
        ) from None

    # 4. report and contact sheet
    report = build_report(
        cfg,
        prompts,
        names,
        refs,
        scores,
        seed=seed,
        size=size,
        model=spec.label,
        clip_model=clip.source if clip is not None else None,
        face_models=str(pack.folder),
    )
    return write_outputs(folder, report, contact_sheet(prompts, names, scores, thumbs))


def image_path(folder: Path, p_index: int, prompt: EvalPrompt, name: str, j: int, seed: int) -> Path:
    """Where image ``j`` of one prompt and identity goes."""
    stem = f"{p_index:02d}-{render.slug(prompt.template.replace(PLACEHOLDER, name), 40)}"
    return folder / "images" / name / f"{stem}-{j:02d}-{seed}.png"


@dataclass
class _RunContext:
    """What every prompt of one run shares."""

    base: RenderConfig  # the run's render settings
    store: IdentityStore
    pipe: Any
    model_label: str
    size: tuple[int, int]
    pack: FacePack
    clip: ClipScorer | None
    folder: Path
    warn: Warn
    on_step: Callable[..., None] | None
    written: int = 0  # images written so far

    def render_and_score(
        self, p_index: int, prompt: EvalPrompt, name: str, ref: Reference, text_emb: Any
    ) -> tuple[list[ImageScore], list[Image.Image]]:
        """Render one prompt for one identity with sid render's code, save the PNGs, score them."""
        import numpy as np

        from sid.eval.metrics import score_image
        from sid.eval.report import sheet_thumbnail
        from sid.faces import embed_faces

        cfg = replace(self.base, prompt=prompt.for_identity(name))
        seeds = [cfg.seed + j for j in range(cfg.count)]
        parsed, identities = render.prepare(cfg.prompt, self.store, self.pipe, self.warn)
        hashes = render.identity_hashes(identities)
        images, paths = [], []
        for j, seed in enumerate(seeds):  # each PNG is written as soon as it is decoded
            (image,) = render.generate(
                self.pipe,
                parsed.text,
                [seed],
                cfg.steps,
                cfg.guidance,
                cfg.negative,
                self.size,
                on_step=self.on_step,
            )
            path = image_path(self.folder, p_index, prompt, name, j, seed)
            render.save_png(image, path, render.png_metadata(cfg, seed, self.size, self.model_label, hashes))
            self.written += 1
            images.append(image)
            paths.append(path)
        image_embs = self.clip.embed_images(images) if self.clip is not None else [None] * len(images)
        scores, thumbs = [], []
        for image, seed, path, image_emb in zip(images, seeds, paths, image_embs, strict=True):
            found = embed_faces(np.asarray(image.convert("RGB")), self.pack)
            boxes = [tuple(float(v) for v in f.detection.bbox) for f in found]
            score = score_image(ref.embedding, [f.embedding for f in found], image_emb, text_emb, seed, boxes)
            score.path = str(path)
            scores.append(score)
            thumbs.append(sheet_thumbnail(image, score))
        return scores, thumbs


def _once(warn: Warn) -> Warn:
    """``warn`` that says each message once (identities are prepared again for every prompt)."""
    seen: set[str] = set()

    def say(message: str) -> None:
        if message not in seen:
            seen.add(message)
            warn(message)

    return say
