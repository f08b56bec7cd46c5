"""CLIP for ``sid eval``'s prompt consistency: load a transformers CLIPModel, embed texts and images.

torch, transformers and numpy are imported where used: the CLI reads ``DEFAULT_CLIP_MODEL`` for its
option default and must stay light.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sid.errors import ModelNotFound, first_line

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"


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
    import numpy as np

    tensor = out if hasattr(out, "float") else out.pooler_output
    rows = tensor.float().cpu().numpy().astype(np.float64)
    return (rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def clip_enabled(choice: str | None) -> bool:
    """Whether ``--clip-model`` asks for a CLIP score (None or "none" skip it)."""
    return bool(choice) and str(choice).lower() != "none"


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

    from sid.pipelines import quiet_libraries

    quiet_libraries()  # as every loader: no loading chatter, download bars unless the command is quiet

    model = CLIPModel.from_pretrained(source, local_files_only=local_only).eval()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    try:  # Pillow preprocessing, as the original CLIP (and no torchvision needed)
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only, backend="pil")
    except TypeError:  # a transformers without image-processor backends
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
    return ClipScorer(model, tokenizer, processor, source)
