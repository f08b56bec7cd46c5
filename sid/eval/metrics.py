"""The metrics of ``sid eval``: pure functions of embeddings (numpy only, no I/O, no models).

Embeddings may have any width and need not be normalised. NaN means "nothing to measure" (no face,
fewer than two faces, no images); the report writes it as null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    ref: Any,
    faces: Sequence[Any],
    image_emb: Any = None,
    text_emb: Any = None,
    seed: int = 0,
    boxes: Sequence[tuple[float, float, float, float]] | None = None,
) -> ImageScore:
    """Score one image from its face embeddings (and their ``boxes``, to outline the matched one) and
    optionally its CLIP image/text embeddings."""
    match = best_match(ref, faces)
    clip = None if image_emb is None or text_emb is None else clip_score(image_emb, text_emb)
    if match is None:
        return ImageScore(seed, 0, None, clip)
    index, sim = match
    box = None if boxes is None else boxes[index]
    return ImageScore(seed, len(faces), sim, clip, np.asarray(faces[index], np.float32), box)


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
