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

Modules: ``metrics`` (pure math), ``prompts`` (the prompt set), ``clip`` (CLIP loading and
embedding), ``reference`` (the face renders are compared with), ``config`` (a run's settings),
``runner`` (the run), ``report`` (eval.json and the contact sheet). The names below load their
module on first use (PEP 562), so the CLI can read option defaults from ``prompts``, ``clip`` and
``config`` without numpy or Pillow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "metrics": (
        "ImageScore",
        "aggregate",
        "best_match",
        "clip_score",
        "clipscore_100",
        "cosine",
        "face_diversity",
        "identity_similarity",
        "miss_rate",
        "score_image",
        "summarize",
    ),
    "prompts": (
        "BUILTIN",
        "DEFAULT_PER_PROMPT",
        "DEFAULT_SEED",
        "EvalPrompt",
        "load_prompts",
        "parse_prompts",
    ),
    "clip": ("DEFAULT_CLIP_MODEL", "load_clip"),
    "reference": ("embed_aligned_thumbnail",),
    "config": ("EvalConfig",),
    "runner": ("evaluate",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'sid.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sid.eval.{_MODULE_OF[name]}"), name)
