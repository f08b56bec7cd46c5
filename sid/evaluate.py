"""``sid eval``: how good is a learned identity? The metrics of Celeb Basis and StableIdentity.

For every prompt of a set (``{}`` marks where the identity goes) sid renders ``n`` images per identity
with ``sid render``'s own code and the same seeds for every identity, then scores them:

* **identity similarity**: cosine between the face-recognition embedding of the reference photo and,
  for each image, the best-matching face found in it (same insightface pack as ``sid learn``),
  averaged over the images that hold a face. Images without a face are misses (``miss_rate``).
* **prompt consistency**: CLIP cosine between the image and the prompt with the identity replaced by
  "a person", reported raw and as the "CLIPScore" convention ``100 * max(cos, 0)``.
* **face diversity** (StableIdentity): mean pairwise ``1 - cos`` between the matched faces of one
  prompt's images.

The metric functions at the top are pure (numpy only, no I/O); ``evaluate`` is the runner.
"""

from __future__ import annotations

import functools
import json
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sid import limits
from sid.errors import BadInput, Interrupted, ModelNotFound, first_line

if TYPE_CHECKING:
    from PIL import Image

    from sid.faces import FacePack
    from sid.store import IdentityStore

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
BUILTIN = "builtin"
PLACEHOLDER = "{}"
NEUTRAL = "a person"  # what stands in for the identity in the CLIP text
DEFAULT_PER_PROMPT = 4
DEFAULT_SEED = 0
REPORT, SHEET = "eval.json", "contact_sheet.png"  # in the output folder, beside images/NAME/
CELL = 192  # contact-sheet thumbnail width in pixels
THUMB_UPSCALE, THUMB_PAD = 256, 64  # how a stored 128 px thumbnail is shown to the face detector
# Where FFHQ alignment (sid.faces.ffhq_matrix) puts the 5 keypoints, as fractions of the crop side:
# used to embed a stored thumbnail when the detector finds no face in it.
FFHQ_KEYPOINTS = np.array([[0.38, 0.473], [0.62, 0.473], [0.5, 0.6], [0.39, 0.73], [0.61, 0.73]], np.float32)

Warn = Callable[[str], None]


# ---------------------------------------------------------------- metrics (pure)


def _unit(v: Any) -> np.ndarray:
    v = np.asarray(v, np.float64).reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def cosine(a: Any, b: Any) -> float:
    """Cosine of two vectors (normalised here, so any length works)."""
    return float(np.dot(_unit(a), _unit(b)))


def best_match(ref: Any, faces: Sequence[Any]) -> tuple[int, float] | None:
    """Index and cosine of the face most like ``ref`` among one image's faces; None without faces."""
    if not len(faces):
        return None
    sims = [cosine(ref, f) for f in faces]
    index = int(np.argmax(sims))
    return index, sims[index]


def identity_similarity(ref: Any, faces: Sequence[Any]) -> float:
    """Mean cosine between ``ref`` (D,) and each face (D,) — pass one matched face per image.

    NaN when there are no faces (every image was a miss): there is nothing to measure.
    """
    if not len(faces):
        return math.nan
    return float(np.mean([cosine(ref, f) for f in faces]))


def face_diversity(faces: Sequence[Any]) -> float:
    """Mean pairwise ``1 - cos`` between faces (StableIdentity's diversity); NaN for fewer than two."""
    if len(faces) < 2:
        return math.nan
    units = np.stack([_unit(f) for f in faces])
    sims = units @ units.T
    upper = np.triu_indices(len(faces), k=1)
    return float(np.mean(1.0 - sims[upper]))


def clip_score(image_emb: Any, text_emb: Any) -> float:
    """Raw CLIP cosine between an image embedding and a text embedding."""
    return cosine(image_emb, text_emb)


def clipscore_100(cos: float) -> float:
    """The "CLIPScore" convention of the personalisation papers: ``100 * max(cos, 0)``."""
    return math.nan if cos is None or math.isnan(cos) else 100.0 * max(float(cos), 0.0)


def miss_rate(face_counts: Sequence[int]) -> float:
    """Fraction of images in which no face was found; NaN for no images."""
    if not len(face_counts):
        return math.nan
    return float(sum(1 for n in face_counts if n == 0) / len(face_counts))


@dataclass
class ImageScore:
    """The scores of one generated image."""

    seed: int
    faces: int  # faces found in the image
    identity: float | None  # cosine of the best-matching face; None when no face
    clip: float | None  # raw CLIP cosine with the neutral prompt; None when CLIP is off
    face: np.ndarray | None = field(default=None, repr=False)  # the best-matching face's embedding
    face_box: tuple[float, float, float, float] | None = None  # its box in the image
    path: str = ""


def score_image(
    ref: Any, faces: Sequence[Any], image_emb: Any = None, text_emb: Any = None, seed: int = 0
) -> ImageScore:
    """Score one image from its face embeddings and (optionally) its CLIP image/text embeddings."""
    match = best_match(ref, faces)
    clip = None if image_emb is None or text_emb is None else clip_score(image_emb, text_emb)
    if match is None:
        return ImageScore(seed, 0, None, clip)
    index, sim = match
    return ImageScore(seed, len(faces), sim, clip, np.asarray(faces[index], np.float32))


def _nanmean(values: Sequence[float | None]) -> float:
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def summarize(scores: Sequence[ImageScore]) -> dict[str, float | int]:
    """The metrics of one group of images (one prompt)."""
    sims = [s.identity for s in scores if s.identity is not None]
    clips = [s.clip for s in scores if s.clip is not None]
    return {
        "images": len(scores),
        "images_with_face": sum(1 for s in scores if s.faces > 0),
        "miss_rate": miss_rate([s.faces for s in scores]),
        "identity_similarity": _nanmean(sims),
        # the stricter convention of some papers: an image without a face scores 0
        "identity_similarity_with_misses": _nanmean([s.identity or 0.0 for s in scores]),
        "clip_cosine": _nanmean(clips),
        "clip_score": _nanmean([clipscore_100(c) for c in clips]),
        "face_diversity": face_diversity([s.face for s in scores if s.face is not None]),
    }


def aggregate(groups: Sequence[Sequence[ImageScore]]) -> dict[str, Any]:
    """Overall metrics over several prompts: identity, CLIP and misses pooled over all images
    (each image counts once); diversity is the mean of the per-prompt diversities (it is only
    meaningful within one prompt)."""
    pooled = [s for group in groups for s in group]
    overall = summarize(pooled)
    per_prompt = [face_diversity([s.face for s in group if s.face is not None]) for group in groups]
    overall["face_diversity"] = _nanmean(per_prompt)
    overall["prompts"] = len(groups)
    return overall


# ---------------------------------------------------------------- prompts


@dataclass(frozen=True)
class EvalPrompt:
    template: str  # with "{}" where the identity goes
    category: str = ""

    def for_identity(self, name: str) -> str:
        """The prompt sid renders: ``@name`` in place of ``{}`` (forced, so it always resolves)."""
        return self.template.replace(PLACEHOLDER, f"@{name}")

    @property
    def clip_text(self) -> str:
        """The prompt without the identity, as CLIP scores it."""
        return " ".join(self.template.replace(PLACEHOLDER, NEUTRAL).split())


def builtin_prompts_text() -> str:
    return resources.files("sid").joinpath("data/eval_prompts.txt").read_text(encoding="utf-8")


def parse_prompts(text: str, source: str = "prompts") -> list[EvalPrompt]:
    """One prompt per line with ``{}``; ``# category`` lines name the category of the lines below."""
    prompts: list[EvalPrompt] = []
    category = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            category = line.lstrip("#").strip() if len(line.lstrip("#").split()) <= 3 else category
            continue
        if PLACEHOLDER not in line:
            raise BadInput(
                f"line {number} of {source} has no {{}} where the identity goes: {line[:60]!r}",
                'write it like "{} on the beach"',
            )
        prompts.append(EvalPrompt(line, category))
    if not prompts:
        raise BadInput(f"{source} holds no prompts", 'put one prompt per line, like "{} on the beach"')
    return prompts


def load_prompts(source: str | Path | None = None) -> list[EvalPrompt]:
    """The built-in set (None or "builtin") or a prompts file."""
    if source is None or str(source) == BUILTIN:
        return parse_prompts(builtin_prompts_text(), "the built-in prompts")
    path = Path(source).expanduser()
    if not path.is_file():
        raise BadInput(
            f"prompts file {path} not found", "pass a text file with one prompt per line, or builtin"
        )
    limits.check("eval", "prompts_bytes", path.stat().st_size)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"could not read prompts file {path}: {first_line(e)}", "save it as UTF-8 text") from e
    prompts = parse_prompts(text, str(path))
    limits.check("eval", "prompts", len(prompts))
    return prompts


# ---------------------------------------------------------------- faces


@dataclass
class FoundFace:
    embedding: np.ndarray  # (D,) unit length
    bbox: tuple[float, float, float, float]
    score: float


def find_faces(image: Image.Image | np.ndarray, pack: FacePack) -> list[FoundFace]:
    """Every face in an RGB image, embedded the way ``sid learn`` embeds the photo (ArcFace crop)."""
    from sid.faces import detect_faces

    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return [
        FoundFace(_embed_keypoints(bgr, d.keypoints, pack), tuple(float(v) for v in d.bbox), d.score)
        for d in detect_faces(bgr, pack)
    ]


def _embed_keypoints(bgr: np.ndarray, keypoints: np.ndarray, pack: FacePack) -> np.ndarray:
    import warnings

    from insightface.utils import face_align

    from sid.faces import arcface_embedding

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecations inside norm_crop
        side = int(pack.recognizer.input_size[0])
        crop = face_align.norm_crop(bgr, np.asarray(keypoints, np.float32), image_size=side)
    return arcface_embedding(np.ascontiguousarray(crop[:, :, ::-1]), pack)


def embed_aligned_thumbnail(thumb: Image.Image, pack: FacePack) -> np.ndarray:
    """Recognition embedding of an FFHQ-aligned face crop (the store's thumbnail).

    The crop is enlarged and padded so the detector sees a whole face; when it still finds none,
    the keypoints fall where FFHQ alignment puts them. On the test photos this matches the
    photo's own embedding to a cosine of 0.96-0.99.
    """
    from PIL import Image

    big = np.asarray(thumb.convert("RGB").resize((THUMB_UPSCALE, THUMB_UPSCALE), Image.Resampling.BICUBIC))
    padded = np.pad(big, ((THUMB_PAD, THUMB_PAD), (THUMB_PAD, THUMB_PAD), (0, 0)), mode="edge")
    faces = find_faces(padded, pack)
    if faces:
        return max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])).embedding
    keypoints = FFHQ_KEYPOINTS * THUMB_UPSCALE + THUMB_PAD
    return _embed_keypoints(np.ascontiguousarray(padded[:, :, ::-1]), keypoints, pack)


@dataclass
class Reference:
    """The face an identity's renders are compared with."""

    embedding: np.ndarray
    source: str  # "photo" or "thumbnail"
    path: str

    def describe(self) -> str:
        if self.source == "photo":
            return f"photo {self.path}"
        return f"stored thumbnail {self.path} (no --photo; a little less exact)"


def reference_for(
    name: str, store: IdentityStore, photo: Path | None, face_models: str | Path | None, warn: Warn
) -> Reference:
    """The reference embedding: ``photo`` if given, else the identity's stored aligned thumbnail."""
    from sid.faces import extract_face, load_face_pack

    if photo is not None:
        crop = extract_face(photo, face_models=face_models, warn=warn)
        learned_from = store.get(name).photo_sha256
        if learned_from and learned_from != crop.photo_sha256:
            warn(f"{photo} is not the photo {name} was learned from: the scores measure resemblance to it")
        return Reference(crop.embedding, "photo", str(photo))
    thumb = store.thumbnail(name)
    if thumb is None:
        raise BadInput(
            f"no --photo given and identity {name!r} has no stored face thumbnail to compare with",
            "pass --photo with the photo it was learned from",
        )
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(thumb)).convert("RGB")
    embedding = embed_aligned_thumbnail(image, load_face_pack(face_models))
    return Reference(embedding, "thumbnail", str(store.path(name)))


# ---------------------------------------------------------------- CLIP


class ClipScorer:
    """CLIP text and image embeddings (transformers CLIPModel), unit length, as numpy rows."""

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, source: str) -> None:
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.source = source

    def to(self, device: Any) -> ClipScorer:
        self.model.to(device)
        return self

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        max_len = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        return _rows(out)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        rgb = [im.convert("RGB") for im in images]
        pixels = self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
        return _rows(out)


def _rows(out: Any) -> np.ndarray:
    """Projected features, normalised (a tensor, or transformers 5's output with ``pooler_output``)."""
    tensor = out if hasattr(out, "float") else out.pooler_output
    rows = tensor.float().cpu().numpy().astype(np.float64)
    return (rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def load_clip(model_id: str = DEFAULT_CLIP_MODEL) -> ClipScorer:
    """CLIPModel + tokenizer + image processor from a hub id or a local folder (cache first)."""
    from sid.pipelines import offline

    path = Path(model_id).expanduser()
    source = str(path.resolve()) if path.is_dir() else model_id
    rounds = [True] if offline() or path.is_dir() else [True, False]
    error: Exception | None = None
    for local_only in rounds:
        try:
            return _load_clip(source, local_only)
        except Exception as e:  # hub, file and config errors all mean "not loadable from here"
            error = e
    if offline() and not path.is_dir():
        why = "sid is offline and it is not in the local cache"
    else:
        why = first_line(error)
    raise ModelNotFound(
        f"could not load the CLIP model {model_id!r}: {why}",
        "download it once online, pass --clip-model with a local folder (config, weights, tokenizer, "
        "preprocessor_config.json), or --clip-model none to skip the CLIP score",
    )


@functools.lru_cache(maxsize=2)
def _load_clip(source: str, local_only: bool) -> ClipScorer:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(source, local_files_only=local_only).eval()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    try:  # Pillow preprocessing, as the original CLIP (and no torchvision needed)
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only, backend="pil")
    except TypeError:  # a transformers without image-processor backends
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
    return ClipScorer(model, tokenizer, processor, source)


# ---------------------------------------------------------------- runner


@dataclass
class EvalConfig:
    names: list[str]
    prompts: str = BUILTIN  # "builtin" or a file
    per_prompt: int = DEFAULT_PER_PROMPT
    seed: int | None = DEFAULT_SEED  # image j of every prompt uses seed + j, for every identity
    steps: int = 30
    guidance: float = 8.5
    size: str | None = None
    scheduler: str = "dpm++"
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


def check_eval_inputs(cfg: EvalConfig, store: IdentityStore) -> list[EvalPrompt]:
    """Every option checked before anything heavy loads; returns the prompts."""
    from sid.files import output_folder
    from sid.render import RenderConfig, check_inputs, parse_size

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
    parse_size(cfg.size, "eval")
    check_inputs(
        RenderConfig(
            prompt=prompts[0].template,
            count=cfg.per_prompt,
            steps=cfg.steps,
            guidance=cfg.guidance,
            size=cfg.size,
            scheduler=cfg.scheduler,
            out_dir=output_folder(cfg.output_folder()),
        )
    )
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
    if not cfg.photos:
        return None
    return Path(cfg.photos[0] if len(cfg.photos) == 1 else cfg.photos[index])


def clip_enabled(cfg: EvalConfig) -> bool:
    return bool(cfg.clip_model) and str(cfg.clip_model).lower() != "none"


def evaluate(
    cfg: EvalConfig,
    store: IdentityStore | None = None,
    warn: Warn | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Render, score and write the report (``eval.json``), the renders and ``contact_sheet.png``.

    Returns the report: JSON-ready, with NaN written as null.
    """
    from sid.faces import load_face_pack
    from sid.files import atomic_path, atomic_write, check_output_target
    from sid.pipelines import model_for_identities
    from sid.render import RenderConfig, load_render_pipeline, native_size, parse_size
    from sid.store import IdentityStore

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
    clip = load_clip(str(cfg.clip_model)) if clip_enabled(cfg) else None

    # 2. the pipeline, exactly as sid render loads it
    base = RenderConfig(
        prompt=prompts[0].template,
        count=cfg.per_prompt,
        seed=seed,
        steps=cfg.steps,
        guidance=cfg.guidance,
        size=cfg.size,
        scheduler=cfg.scheduler,
        model=cfg.model or model_for_identities([store.get(n) for n in names], warn),
        device=cfg.device,
        dtype=cfg.dtype,
    )
    pipe, spec = load_render_pipeline(base)
    size = parse_size(cfg.size) or native_size(pipe)
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

    # 4. report, contact sheet, JSON
    report = build_report(cfg, prompts, names, refs, scores, seed, size, spec.label, clip)
    report["settings"]["face_models"] = str(pack.folder)
    sheet = folder / SHEET
    with atomic_path(sheet) as tmp:
        contact_sheet(prompts, names, scores, thumbs).save(tmp)
    report["contact_sheet"] = str(sheet)
    report["json"] = str(folder / REPORT)
    atomic_write(folder / REPORT, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    return report


def image_path(folder: Path, p_index: int, prompt: EvalPrompt, name: str, j: int, seed: int) -> Path:
    """Where image ``j`` of one prompt and identity goes."""
    from sid.render import slug

    stem = f"{p_index:02d}-{slug(prompt.template.replace(PLACEHOLDER, name), 40)}"
    return folder / "images" / name / f"{stem}-{j:02d}-{seed}.png"


@dataclass
class _RunContext:
    """What every prompt of one run shares."""

    base: Any  # RenderConfig: the run's render settings
    store: IdentityStore
    pipe: Any
    model_label: str
    size: tuple[int, int]
    pack: FacePack
    clip: ClipScorer | None
    folder: Path
    warn: Warn
    on_step: Callable[[int], None] | None
    written: int = 0  # images written so far

    def render_and_score(
        self, p_index: int, prompt: EvalPrompt, name: str, ref: Reference, text_emb: Any
    ) -> tuple[list[ImageScore], list[Image.Image]]:
        """Render one prompt for one identity with sid render's code, save the PNGs, score them."""
        from dataclasses import replace

        from sid import render

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
            found = find_faces(image, self.pack)
            embeddings = [f.embedding for f in found]
            score = score_image(ref.embedding, embeddings, image_emb, text_emb, seed=seed)
            match = best_match(ref.embedding, embeddings)
            if match is not None:
                score.face_box = found[match[0]].bbox
            score.path = str(path)
            scores.append(score)
            thumbs.append(_thumbnail(image, score))
        return scores, thumbs


def _once(warn: Warn) -> Warn:
    """``warn`` that says each message once (identities are prepared again for every prompt)."""
    seen: set[str] = set()

    def say(message: str) -> None:
        if message not in seen:
            seen.add(message)
            warn(message)

    return say


def build_report(
    cfg: EvalConfig,
    prompts: list[EvalPrompt],
    names: list[str],
    refs: dict[str, Reference],
    scores: dict[str, list[list[ImageScore]]],
    seed: int,
    size: tuple[int, int],
    model_label: str,
    clip: ClipScorer | None,
) -> dict[str, Any]:
    """The JSON report (NaN as null)."""
    identities: dict[str, Any] = {}
    for name in names:
        groups = scores[name]
        categories: dict[str, list[list[ImageScore]]] = {}
        for prompt, group in zip(prompts, groups, strict=True):
            categories.setdefault(prompt.category or "uncategorised", []).append(group)
        identities[name] = {
            "reference": {"source": refs[name].source, "path": refs[name].path},
            "overall": aggregate(groups),
            "categories": {c: aggregate(g) for c, g in categories.items()},
            "prompts": [
                _prompt_entry(prompt, name, group) for prompt, group in zip(prompts, groups, strict=True)
            ],
        }
    settings = {
        "prompts": str(cfg.prompts),
        "per_prompt": cfg.per_prompt,
        "seed": seed,
        "seeds": [seed + j for j in range(cfg.per_prompt)],
        "steps": cfg.steps,
        "guidance": cfg.guidance,
        "size": list(size),
        "scheduler": cfg.scheduler,
        "model": model_label,
        "clip_model": clip.source if clip is not None else None,
        "clip_text": f"the prompt with {{}} replaced by {NEUTRAL!r}",
        "face_models": str(cfg.face_models or ""),
    }
    report = {
        "settings": settings,
        "prompts": [
            {"template": p.template, "category": p.category, "clip_text": p.clip_text} for p in prompts
        ],
        "identities": identities,
    }
    return _json_safe(report)


def _prompt_entry(prompt: EvalPrompt, name: str, group: list[ImageScore]) -> dict[str, Any]:
    per_image = [
        {
            "path": s.path,
            "seed": s.seed,
            "faces": s.faces,
            "identity_similarity": s.identity,
            "clip_cosine": s.clip,
            "clip_score": None if s.clip is None else clipscore_100(s.clip),
        }
        for s in group
    ]
    return {
        "template": prompt.template,
        "category": prompt.category,
        "prompt": prompt.for_identity(name),
        **summarize(group),
        "per_image": per_image,
    }


def _json_safe(value: Any) -> Any:
    """NaN and infinities -> None, numpy scalars -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------- contact sheet


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _thumbnail(image: Image.Image, score: ImageScore, width: int = CELL) -> Image.Image:
    """The render at ``width`` px, the scored face outlined."""
    from PIL import Image, ImageDraw

    scale = width / image.width
    height = max(1, round(image.height * scale))
    thumb = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    if score.face_box is not None:
        x1, y1, x2, y2 = (v * scale for v in score.face_box)
        ImageDraw.Draw(thumb).rectangle((x1, y1, x2, y2), outline=(0, 220, 0), width=2)
    return thumb


def _caption(score: ImageScore) -> str:
    ident = "no face" if score.identity is None else f"ID {score.identity:.2f}"
    if score.faces > 1:
        ident += f" ({score.faces} faces)"
    clip = "" if score.clip is None else f"  CLIP {clipscore_100(score.clip):.1f}"
    return ident + clip


def contact_sheet(
    prompts: list[EvalPrompt],
    names: list[str],
    scores: dict[str, list[list[ImageScore]]],
    thumbs: dict[str, list[list[Image.Image]]],
) -> Image.Image:
    """One row per prompt; one block of columns per identity; scores written under each image."""
    from PIL import Image, ImageDraw

    font, small = _font(14), _font(12)
    per = max(len(row) for n in names for row in thumbs[n])
    cell_w = CELL
    cell_h = max(t.height for n in names for row in thumbs[n] for t in row)
    label_w, caption_h, header_h, gap = 220, 22, 28, 12
    block_w = per * cell_w
    width = label_w + len(names) * block_w + (len(names) - 1) * gap
    height = header_h + len(prompts) * (cell_h + caption_h + 6)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(names):
        x0 = label_w + k * (block_w + gap)
        draw.text((x0 + 4, 6), name, fill=(0, 0, 0), font=font)
    for p_index, prompt in enumerate(prompts):
        y = header_h + p_index * (cell_h + caption_h + 6)
        _wrap(draw, prompt.template, (6, y + 4), label_w - 12, font)
        for k, name in enumerate(names):
            x0 = label_w + k * (block_w + gap)
            for j, (thumb, score) in enumerate(
                zip(thumbs[name][p_index], scores[name][p_index], strict=True)
            ):
                sheet.paste(thumb, (x0 + j * cell_w, y))
                colour = (170, 0, 0) if score.identity is None else (0, 0, 0)
                draw.text((x0 + j * cell_w + 3, y + cell_h + 4), _caption(score), fill=colour, font=small)
    return sheet


def _wrap(draw: Any, text: str, at: tuple[int, int], width: int, font: Any) -> None:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    draw.multiline_text(at, "\n".join(lines), fill=(0, 0, 0), font=font, spacing=3)
