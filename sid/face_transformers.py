"""The transformers face models of StableIdentity's recipe: its ViT face encoder and the face parser.

Both are hub ids or local folders saved with ``save_pretrained`` (``--vit-model`` / ``SID_VIT_MODEL`` /
config ``vit_model``; ``--face-parser`` / ``SID_FACE_PARSER`` / config ``face_parser``), loaded once
per process. The parser's classes are chosen by their label names, never by index. See docs/faces.md.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sid.config import setting
from sid.errors import ModelNotFound, first_line
from sid.pipelines import offline

if TYPE_CHECKING:
    from PIL import Image

VIT_FACE_MODEL = "jayanta/vit-base-patch16-224-in21k-face-recognition"
VIT_FACE_BOX = (64, 70, 440, 446)  # StableIdentity's face box inside the 512 FFHQ crop
VIT_BOX_FRAME = 512  # the side of the aligned crop VIT_FACE_BOX is given in
FACE_PARSER = "jonathandinu/face-parsing"  # SegFormer trained on CelebAMask-HQ
# Parser classes by name (CelebAMask-HQ's, and the spellings other parsers use), never by index: parsers
# number them differently. The face is StableIdentity's: skin, brows, eyes, glasses, ears, nose, mouth,
# lips; not earrings ("ear_r"), neck, necklace, cloth, hat or hair.
FACE_CLASSES = frozenset(
    {
        *("skin", "face"),
        *("l_brow", "r_brow", "brow", "brows", "eyebrow", "eyebrows", "left_eyebrow", "right_eyebrow"),
        *("l_eye", "r_eye", "eye", "eyes", "left_eye", "right_eye"),
        *("eye_g", "eyeglass", "eyeglasses", "glasses"),
        *("l_ear", "r_ear", "ear", "ears", "left_ear", "right_ear"),
        *("nose", "mouth", "inner_mouth"),
        *("u_lip", "l_lip", "lip", "lips", "upper_lip", "lower_lip"),
    }
)
HAIR_CLASSES = frozenset({"hair"})

Warn = Callable[[str], None]


def vit_model_source(choice: str | None = None) -> str:
    """The ViT face encoder: ``--vit-model`` > $SID_VIT_MODEL > config ``vit_model`` > the paper's model."""
    return _model_source(setting(choice, "SID_VIT_MODEL", "vit_model", VIT_FACE_MODEL))


def face_parser_source(choice: str | None = None) -> str:
    """The face parser: ``--face-parser`` > $SID_FACE_PARSER > config ``face_parser`` > FACE_PARSER."""
    return _model_source(setting(choice, "SID_FACE_PARSER", "face_parser", FACE_PARSER))


def _model_source(choice: str) -> str:
    """A local folder as an absolute path (so metadata can find it again), anything else as a hub id."""
    folder = Path(choice).expanduser()
    return str(folder.resolve()) if folder.is_dir() else choice


@functools.lru_cache(maxsize=4)
def _pretrained(source: str, role: str, local_files_only: bool) -> tuple[Any, Any]:
    """(image processor, model in eval mode) of a transformers vision model; ``role`` picks the class.

    The processor is the PIL one, as the papers' code ran it (transformers would otherwise pick the
    torchvision one where installed, whose resize differs slightly).
    """
    import transformers

    from sid.pipelines import quiet_libraries

    quiet_libraries()  # no loading bars or load reports (the paper's ViT checkpoint has no pooler)
    auto = transformers.AutoModelForSemanticSegmentation if role == "face parser" else transformers.AutoModel
    flag = "--face-parser" if role == "face parser" else "--vit-model"
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(
            source, local_files_only=local_files_only, backend="pil"
        )
        model = auto.from_pretrained(source, local_files_only=local_files_only)
    except Exception as e:  # hub, file and config errors all mean "not loadable from here"
        cache_miss = local_files_only and not Path(source).is_dir()  # a folder's own error says what it lacks
        why = "sid is offline and it is not in the local cache" if cache_miss else first_line(e)
        raise ModelNotFound(
            f"could not load the {role} {source!r}: {why}",
            f"download it once online, or point {flag} at a local folder saved with save_pretrained "
            "(config.json, weights, preprocessor_config.json)",
        ) from e
    return processor, model.eval()


def _local_only(local_files_only: bool | None) -> bool:
    return offline() if local_files_only is None else local_files_only


def vit_face_embeddings(
    image512: Image.Image | np.ndarray,
    model: str = VIT_FACE_MODEL,
    local_files_only: bool | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """(2, D) StableIdentity face features: of the aligned face and of its mirror image, in one batch.

    As its code: the FFHQ 512 crop is cut to VIT_FACE_BOX, run through the model's own image processor,
    and the CLS token of the last hidden state is the feature (768 wide for the paper's model), not
    normalised. The mirror flips the processed input, as its only augmentation of this input does.
    ``model`` is a hub id or a local folder; ``local_files_only`` defaults to "is sid offline";
    ``device`` is where the model runs (it stays there for the next call).
    """
    import torch
    from PIL import Image

    img = image512 if isinstance(image512, Image.Image) else Image.fromarray(np.asarray(image512, np.uint8))
    img = img.convert("RGB")
    scale = img.width / VIT_BOX_FRAME
    face = img.crop(tuple(int(round(v * scale)) for v in VIT_FACE_BOX))
    processor, vit = _pretrained(model, "face encoder", _local_only(local_files_only))
    pixels = processor(images=face, return_tensors="pt")["pixel_values"]
    pixels = torch.cat([pixels, pixels.flip(-1)]).to(device, vit.dtype)
    with torch.inference_mode():
        hidden = vit.to(device)(pixel_values=pixels).last_hidden_state
    return hidden[:, 0].float().cpu().numpy().astype(np.float32)


@dataclass(frozen=True)
class FaceParser:
    """A loaded face-parsing model and which of its classes are the face and the hair."""

    source: str  # hub id or absolute folder
    processor: Any
    model: Any  # transformers AutoModelForSemanticSegmentation
    face_ids: tuple[int, ...]
    hair_ids: tuple[int, ...]  # empty when the parser has no hair class


def parser_classes(id2label: dict[Any, str], source: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(face ids, hair ids) of a parser's classes, chosen by label name (FACE_CLASSES, HAIR_CLASSES)."""
    names = {int(i): re.sub(r"[\s\-]+", "_", str(label).strip().lower()) for i, label in id2label.items()}
    face = tuple(sorted(i for i, n in names.items() if n in FACE_CLASSES))
    hair = tuple(sorted(i for i, n in names.items() if n in HAIR_CLASSES))
    if not face:
        raise ModelNotFound(
            f"the face parser {source!r} has no face classes (its labels: {', '.join(names.values())})",
            f"use a CelebAMask-HQ face parser such as {FACE_PARSER}, or pass --mask landmarks",
        )
    return face, hair


def part_masks(
    labels: np.ndarray, face_ids: tuple[int, ...], hair_ids: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Binary float32 face and hair masks of a label map (None for hair when the parser has none)."""
    face = np.isin(labels, face_ids).astype(np.float32)
    return face, (np.isin(labels, hair_ids).astype(np.float32) if hair_ids else None)


def load_face_parser(
    choice: str | None = None, warn: Warn | None = None, local_files_only: bool | None = None
) -> FaceParser | None:
    """The face parser ``face_parser_source(choice)`` names, or None when it is the default one and
    cannot be had (offline and not cached, or unreachable): then ``warn`` says the landmark mask is
    used instead. A parser the user chose that cannot be loaded is a ModelNotFound."""
    source = face_parser_source(choice)
    try:
        processor, model = _pretrained(source, "face parser", _local_only(local_files_only))
    except ModelNotFound as e:
        if source != FACE_PARSER:
            raise
        (warn or (lambda _message: None))(
            f"{e.message}; masking the training loss with face landmarks instead (no hair term). "
            f"To use the parser: {e.hint}; or pass --mask landmarks to silence this"
        )
        return None
    face_ids, hair_ids = parser_classes(model.config.id2label, source)
    return FaceParser(source, processor, model, face_ids, hair_ids)


def parse_face(
    image512: Image.Image, parser: FaceParser, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Face and hair masks (float32 0/1 on ``image512``) from the parser's per-pixel classes.

    Logits are resized to the image (bilinear) before the argmax, as the parser's own post-processing.
    """
    import torch
    import torch.nn.functional as F

    pixels = parser.processor(images=image512.convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        logits = parser.model.to(device)(pixel_values=pixels.to(device, parser.model.dtype)).logits
    size = (image512.height, image512.width)
    logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return part_masks(logits.argmax(1)[0].cpu().numpy(), parser.face_ids, parser.hair_ids)
