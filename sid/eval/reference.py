"""The face an identity's renders are compared with: the ``--photo`` it was learned from, or else the
identity's stored 128 px aligned thumbnail, embedded by ``sid.faces`` as ``sid learn`` embeds a photo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sid.errors import BadInput, StoreError
from sid.photos import decode_photo

if TYPE_CHECKING:
    from PIL import Image

    from sid.faces import FacePack
    from sid.store import IdentityStore

THUMB_UPSCALE, THUMB_PAD = 256, 64  # how a stored 128 px thumbnail is shown to the face detector
# Where FFHQ alignment (sid.faces.ffhq_matrix) puts the 5 keypoints, as fractions of the crop side:
# used to embed a stored thumbnail when the detector finds no face in it.
FFHQ_KEYPOINTS = np.array([[0.38, 0.473], [0.62, 0.473], [0.5, 0.6], [0.39, 0.73], [0.61, 0.73]], np.float32)


@dataclass
class Reference:
    """The face an identity's renders are compared with."""

    embedding: np.ndarray
    source: str  # "photo" or "thumbnail"
    path: str


def embed_aligned_thumbnail(thumb: Image.Image, pack: FacePack) -> np.ndarray:
    """Recognition embedding of an FFHQ-aligned face crop (the store's thumbnail).

    The crop is enlarged and padded so the detector sees a whole face; when it still finds none,
    the keypoints fall where FFHQ alignment puts them. On the test photos this matches the
    photo's own embedding to a cosine of 0.96-0.99.
    """
    from PIL import Image

    from sid.faces import embed_face, embed_faces

    big = np.asarray(thumb.convert("RGB").resize((THUMB_UPSCALE, THUMB_UPSCALE), Image.Resampling.BICUBIC))
    padded = np.pad(big, ((THUMB_PAD, THUMB_PAD), (THUMB_PAD, THUMB_PAD), (0, 0)), mode="edge")
    faces = embed_faces(padded, pack)
    if faces:
        return max(faces, key=lambda f: f.detection.area).embedding
    keypoints = FFHQ_KEYPOINTS * THUMB_UPSCALE + THUMB_PAD
    return embed_face(np.ascontiguousarray(padded[:, :, ::-1]), keypoints, pack)[1]


def reference_for(
    name: str,
    store: IdentityStore,
    photo: Path | None,
    face_models: str | Path | None,
    warn: Callable[[str], None],
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
    try:  # from the store, so read as strictly as a photo: a PNG, and no bomb
        image = decode_photo(thumb, Path(f"{name}.thumbnail"), formats=("PNG",))
    except BadInput as e:
        raise StoreError(
            f"identity {name!r} has a damaged face thumbnail: {e.message}", "pass --photo, or re-learn it"
        ) from e
    embedding = embed_aligned_thumbnail(image, load_face_pack(face_models))
    return Reference(embedding, "thumbnail", str(store.path(name)))
