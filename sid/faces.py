"""From one photo to the face sid learns: load, detect, align, embed and mask.

The heavy libraries (insightface, onnxruntime, OpenCV, transformers) are imported inside the
functions that need them, so that ``sid --help`` stays fast. Face models come from an insightface
model pack (a folder of ``.onnx`` files, by default ``~/.insightface/models/buffalo_l``); each file is
routed by the task insightface recognises in it, so any pack with a detector and a recognizer works
and the embedding width is whatever the recognizer outputs. Reading the photo is ``sid.photos``;
StableIdentity's ViT face encoder and the face parser behind the training mask (transformers models)
are ``sid.face_transformers``. See docs/faces.md.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sid.errors import BadInput, ModelNotFound, NoFaceFound, first_line
from sid.face_transformers import FaceParser, parse_face
from sid.photos import decode_photo, photo_sha256, read_photo_file
from sid.pipelines import offline

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_PACK = "buffalo_l"
# SCRFD misses faces wider than about 450 px of its input, so close-ups get a second, coarse look
DET_SIZES = ((640, 640), (256, 256))
DET_THRESHOLD = 0.5
SMALL_FACE = 64  # face boxes narrower than this give poor identities
ALIGNED_SIZE = 512
FOREHEAD, CHIN = 1.1, 0.8  # face-mask reach beyond the eyes and the mouth, in eye-to-mouth distances

Warn = Callable[[str], None]

# onnxruntime keeps a device id and an event database in ~/.cache/Microsoft from its import on: sid
# writes nowhere but its store, the caches a user configured and -o, so this is set before any
# insightface/onnxruntime import (all of them are in this module), and _load_pack turns events off too.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


# ---------------------------------------------------------------- face-model pack


def default_face_models_dir() -> Path:
    """Where insightface itself downloads its default pack."""
    return Path("~/.insightface/models").expanduser() / DEFAULT_PACK


def face_models_dir(override: str | Path | None = None, download: bool = True) -> Path:
    """The face-model pack folder: ``--face-models`` > $SID_FACE_MODELS > insightface's buffalo_l folder.

    With ``download`` the folder is also made usable: insightface downloads buffalo_l into the default
    folder when it lacks a detector and sid is online; anything else missing is a ModelNotFound that
    says where the files go. Without it the path is only resolved (``sid doctor``).
    """
    chosen = override or os.environ.get("SID_FACE_MODELS")
    folder = Path(chosen).expanduser() if chosen else default_face_models_dir()
    if not download or _has_onnx(folder):
        return folder
    if folder == default_face_models_dir() and not offline():
        _download_default_pack(folder)
        if _has_onnx(folder):
            return folder
    raise ModelNotFound(
        f"no face models (.onnx files) in {folder}"
        + (" and sid is offline" if offline() and folder == default_face_models_dir() else ""),
        f"put an insightface pack's .onnx files there (e.g. unzip {DEFAULT_PACK}.zip from insightface's "
        f"model-zoo release), or point --face-models / SID_FACE_MODELS at such a folder",
    )


def _has_onnx(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.onnx"))


def _download_default_pack(folder: Path) -> None:
    """Let insightface fetch its default pack into its own folder (it skips existing folders: force)."""
    from insightface.utils import storage

    try:
        storage.download("models", DEFAULT_PACK, force=True, root=str(folder.parent.parent))
    except Exception as e:  # network, HTTP and zip errors all mean "not downloaded"
        raise ModelNotFound(
            f"could not download insightface's {DEFAULT_PACK} face models into {folder}: {first_line(e)}",
            "check the network, or unzip buffalo_l.zip there yourself, or point --face-models at a pack",
        ) from e


@dataclass(frozen=True)
class FacePack:
    """The loaded models of one pack, routed by insightface's task names."""

    folder: Path
    detector: Any  # insightface SCRFD/RetinaFace, prepared for DET_THRESHOLD
    recognizer: Any  # insightface ArcFaceONNX
    landmark106: Any = None  # insightface Landmark (landmark_2d_106), when the pack has one

    @property
    def embedding_dim(self) -> int:
        """Width of the recognizer's output (128, 512, ...), read from the model."""
        width = self.recognizer.output_shape[-1]
        if isinstance(width, int):
            return width
        size = self.recognizer.input_size
        return int(self.recognizer.get_feat(np.zeros((size[1], size[0], 3), np.uint8)).shape[-1])


def load_face_pack(face_models: str | Path | None = None) -> FacePack:
    """The pack that ``face_models_dir`` names, loaded once per folder and file set."""
    folder = face_models_dir(face_models).resolve()
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.onnx")))
    return _load_pack(str(folder), stamp)


@functools.lru_cache(maxsize=4)
def _load_pack(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> FacePack:
    """Route every .onnx file by its insightface task; ``stamp`` only invalidates the cache on change."""
    import onnxruntime
    from insightface.model_zoo import get_model

    onnxruntime.disable_telemetry_events()
    onnxruntime.set_default_logger_severity(3)
    found: dict[str, Any] = {}
    for name, _size, _mtime in stamp:
        path = Path(folder) / name
        try:
            model = get_model(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # protobuf, onnxruntime and shape errors all mean "not a usable model"
            raise ModelNotFound(
                f"face model {path} could not be loaded: {first_line(e)}", "delete or replace that file"
            ) from e
        if model is not None:
            found.setdefault(model.taskname, model)
    missing = [task for task in ("detection", "recognition") if task not in found]
    if missing:
        raise ModelNotFound(
            f"the face-model pack in {folder} has no {' or '.join(missing)} model",
            f"use a full insightface pack such as {DEFAULT_PACK} (it has both)",
        )
    detector = found["detection"]
    detector.prepare(-1, input_size=DET_SIZES[0], det_thresh=DET_THRESHOLD)
    return FacePack(Path(folder), detector, found["recognition"], found.get("landmark_2d_106"))


# ---------------------------------------------------------------- detection


@dataclass(frozen=True)
class Detection:
    """One detected face in photo coordinates."""

    bbox: np.ndarray  # (4,) x1, y1, x2, y2
    keypoints: np.ndarray  # (5, 2) eyes, nose, mouth corners (image left first)
    score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1]))


def detect_faces(bgr: np.ndarray, pack: FacePack) -> list[Detection]:
    """All faces, ordered left to right (the order ``--face K`` counts in).

    Each detection size adds only faces the earlier (finer) sizes missed, so a face found at 640
    keeps its more precise keypoints.
    """
    faces: list[Detection] = []
    for size in DET_SIZES:
        boxes, kps = pack.detector.detect(bgr, input_size=size)
        if len(boxes) and kps is None:
            raise ModelNotFound(
                f"the face detector in {pack.folder} gives no keypoints, so faces cannot be aligned",
                "use a detector with keypoints (SCRFD '*kps' or a buffalo pack's det_*.onnx)",
            )
        for box, points in zip(boxes, kps if len(boxes) else [], strict=False):
            if all(_iou(box, other.bbox) < 0.4 for other in faces):
                faces.append(Detection(np.float32(box[:4]), np.float32(points), float(box[4])))
    return sorted(faces, key=lambda f: float(f.bbox[0] + f.bbox[2]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return float(overlap / union) if union > 0 else 0.0


def choose_face(faces: list[Detection], photo: str, face_index: int | None, warn: Warn) -> Detection:
    """``face_index`` (1-based, left to right) if given, else the largest face, warning about the others."""
    if not faces:
        raise NoFaceFound(
            f"no face found in {photo}",
            "use a photo where one face is clearly visible, frontal and at least 64 px wide",
        )
    if face_index is not None:
        if not 1 <= face_index <= len(faces):
            many = len(faces) > 1
            where = "--face (or a manifest's face column)"  # the one check for both
            raise BadInput(
                f"face {face_index} asked for, but {photo} has {_count(len(faces))}",
                f"set {where} to 1 to {len(faces)}, counted from the left" if many else f"leave out {where}",
            )
        return faces[face_index - 1]
    largest = max(range(len(faces)), key=lambda i: faces[i].area)
    if len(faces) > 1:
        warn(
            f"found {_count(len(faces))} in {photo}; using the largest (face {largest + 1} from the left). "
            f"Pick another with --face K or a manifest's face column (1 to {len(faces)}, from the left)"
        )
    return faces[largest]


def _count(n: int) -> str:
    return f"{n} face" if n == 1 else f"{n} faces"


# ---------------------------------------------------------------- alignment


def ffhq_matrix(keypoints: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """2x3 affine from photo to the FFHQ-aligned square, built from the 5 keypoints.

    FFHQ's recipe: an oriented square around the eyes and mouth, sized by the larger of twice the
    eye distance and 1.8 times the eye-to-mouth distance, centred a little below the eyes.
    """
    import cv2

    kps = np.asarray(keypoints, np.float64)
    eye_avg = (kps[0] + kps[1]) / 2
    eye_to_eye = kps[1] - kps[0]
    eye_to_mouth = (kps[3] + kps[4]) / 2 - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / max(np.hypot(*x), 1e-6)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    # quad corners: top-left, bottom-left, bottom-right; they land on the outer pixel edges of the square
    src = np.float32([c - x - y, c - x + y, c + x + y])
    dst = np.float32([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def _rot90(v: np.ndarray) -> np.ndarray:
    """v turned 90 degrees (image coordinates: x right, y down)."""
    return np.array([-v[1], v[0]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2) points."""
    pts = np.asarray(points, np.float64)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def warp_aligned(rgb: np.ndarray, matrix: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """Warp with ``matrix``: shrink large faces first (no aliasing), blur the padding outside the photo."""
    import cv2

    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # output px per photo px
    if scale < 0.5:
        small = cv2.resize(rgb, None, fx=scale * 1.5, fy=scale * 1.5, interpolation=cv2.INTER_AREA)
        fx, fy = small.shape[1] / rgb.shape[1], small.shape[0] / rgb.shape[0]
        # photo pixel centre p maps to (p + 0.5) * f - 0.5 in the shrunken image
        to_small = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])
        matrix = matrix @ np.linalg.inv(to_small)
        rgb = small
    out = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    inside = _inside_photo(matrix, rgb.shape[:2], size)
    if inside.all():
        return out
    # Mirrored borders make ghost faces; fade them into a blur with distance from the photo's edge.
    dist = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5)
    fade = np.clip(dist / (0.1 * size), 0.0, 1.0)[..., None]
    blurred = cv2.GaussianBlur(out, (0, 0), sigmaX=0.02 * size)
    return np.round(out * (1 - fade) + blurred * fade).astype(np.uint8)


def _inside_photo(matrix: np.ndarray, shape: tuple[int, ...], size: int) -> np.ndarray:
    """Which output pixels of the warp come from inside the photo (size x size bool)."""
    import cv2

    inverse = cv2.invertAffineTransform(matrix)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    return (sx >= -0.5) & (sx <= shape[1] - 0.5) & (sy >= -0.5) & (sy <= shape[0] - 0.5)


# ---------------------------------------------------------------- embedding and mask


def arcface_embedding(crop_rgb: np.ndarray, pack: FacePack) -> np.ndarray:
    """Unit-length recognition embedding of an ArcFace-aligned crop (width from the model)."""
    feat = pack.recognizer.get_feat(np.ascontiguousarray(crop_rgb[:, :, ::-1])).reshape(-1).astype(np.float32)
    return feat / max(float(np.linalg.norm(feat)), 1e-12)


def embed_face(bgr: np.ndarray, keypoints: np.ndarray, pack: FacePack) -> tuple[np.ndarray, np.ndarray]:
    """(ArcFace-aligned RGB crop, unit embedding) of the face at ``keypoints`` (5, 2) in a BGR image.

    The one way sid embeds a found face, so that ``sid learn``'s photo and ``sid eval``'s renders
    compare like with like.
    """
    from insightface.utils import face_align

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecations inside norm_crop
        side = int(pack.recognizer.input_size[0])
        crop_bgr = face_align.norm_crop(bgr, np.asarray(keypoints, np.float32), image_size=side)
    crop = np.ascontiguousarray(crop_bgr[:, :, ::-1])
    return crop, arcface_embedding(crop, pack)


@dataclass(frozen=True)
class FoundFace:
    """A detected face and its recognition embedding."""

    detection: Detection
    embedding: np.ndarray  # float32 (D,), unit length


def embed_faces(rgb: np.ndarray, pack: FacePack) -> list[FoundFace]:
    """Every face in an RGB image, left to right, each embedded by ``embed_face``."""
    bgr = np.ascontiguousarray(np.asarray(rgb, np.uint8)[:, :, ::-1])
    return [FoundFace(d, embed_face(bgr, d.keypoints, pack)[1]) for d in detect_faces(bgr, pack)]


def face_mask(
    aligned_keypoints: np.ndarray, size: int = ALIGNED_SIZE, outline: np.ndarray | None = None
) -> np.ndarray:
    """The landmark face mask (float32 in [0, 1], size x size) on the aligned crop, when no parser is used.

    The union of an ellipse derived from the 5 keypoints, which reaches from the forehead to the chin,
    and, with ``outline`` (dense landmarks, e.g. insightface's 106 points, in aligned coordinates),
    their convex hull (face outline and brows) dilated a little: the hull follows the jaw and cheeks,
    the ellipse adds the forehead the hull leaves out. The edge is feathered.
    """
    import cv2

    hard = np.zeros((size, size), np.uint8)
    center, axes, angle = _face_ellipse(np.asarray(aligned_keypoints, np.float64))
    cv2.ellipse(hard, center, axes, angle, 0, 360, 1, thickness=-1)
    if outline is not None:
        # the hull of all dense points is that of the outline and brows: eyes, nose and mouth lie inside
        hull = np.zeros_like(hard)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(outline).astype(np.int32)), 1)
        grow = max(1, int(0.03 * size))
        hard |= cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    soft = cv2.GaussianBlur(hard.astype(np.float32), (0, 0), sigmaX=0.02 * size)
    return np.clip(soft, 0.0, 1.0).astype(np.float32)


def _face_ellipse(kps: np.ndarray) -> tuple[tuple[int, int], tuple[int, int], float]:
    """Ellipse (centre, half-axes, degrees) around the face, in units of the eye-to-mouth distance L:
    from the forehead (FOREHEAD*L above the eyes) to the chin (CHIN*L below the mouth)."""
    eye_avg = (kps[0] + kps[1]) / 2
    down = (kps[3] + kps[4]) / 2 - eye_avg
    length = max(float(np.hypot(*down)), 1.0)
    unit = down / length
    top, bottom = -FOREHEAD * length, (1.0 + CHIN) * length  # along ``unit`` from the eyes
    center = eye_avg + unit * (top + bottom) / 2
    half_height = (bottom - top) / 2
    # cheek to cheek is about 2.3 eye distances; a turned head shortens the eye distance, hence the floor
    half_width = max(float(np.hypot(*(kps[1] - kps[0]))) * 1.15, half_height * 0.6)
    angle = float(np.degrees(np.arctan2(unit[1], unit[0]))) - 90.0
    centre_px = (int(round(center[0])), int(round(center[1])))
    return centre_px, (int(round(half_width)), int(round(half_height))), angle


# ---------------------------------------------------------------- entry point


@dataclass
class FaceCrop:
    """The face sid learns from one photo."""

    image: Image.Image  # RGB, 512x512, FFHQ-aligned
    arcface_crop: np.ndarray  # uint8 (112, 112, 3) RGB, ArcFace-aligned
    embedding: np.ndarray  # float32 (D,), unit length; D from the recognizer
    mask: np.ndarray  # float32 (512, 512) in [0, 1], on ``image``: the face the loss looks at
    hair_mask: np.ndarray | None  # float32 (512, 512) 0/1 from the parser; None with the landmark mask
    mask_source: str  # the parser's hub id or folder, or "landmarks"
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in the (upright) photo
    keypoints: np.ndarray  # float32 (5, 2) in the (upright) photo
    score: float
    num_faces: int
    photo_sha256: str

    def thumbnail_png(self, size: int = 128) -> bytes:
        """PNG bytes of the aligned face at size x size, kept beside the identity in the store."""
        from PIL import Image

        buf = io.BytesIO()
        self.image.resize((size, size), Image.Resampling.LANCZOS).save(buf, format="PNG", optimize=True)
        return buf.getvalue()


def extract_face(
    photo: str | Path,
    *,
    face_index: int | None = None,
    face_models: str | Path | None = None,
    warn: Warn | None = None,
    parser: FaceParser | None = None,
    device: str = "cpu",
) -> FaceCrop:
    """Photo file -> the chosen face, aligned (FFHQ 512 and ArcFace 112), embedded and masked.

    The mask comes from ``parser`` (run on ``device``) when given and it finds a face, else from the
    landmarks.
    """
    from PIL import Image

    warn = warn or (lambda _message: None)
    path = Path(photo)
    data = read_photo_file(path)
    rgb = np.asarray(decode_photo(data, path))
    pack = load_face_pack(face_models)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    faces = detect_faces(bgr, pack)
    face = choose_face(faces, str(path), face_index, warn)
    width = float(min(face.bbox[2] - face.bbox[0], face.bbox[3] - face.bbox[1]))
    if width < SMALL_FACE:
        warn(
            f"the face in {path} is only {width:.0f} px wide; results will be poor. "
            "Use a photo where the face is larger (256 px or more is best)"
        )
    arcface_crop, embedding = embed_face(bgr, face.keypoints, pack)
    matrix = ffhq_matrix(face.keypoints)
    aligned = warp_aligned(rgb, matrix)
    image = Image.fromarray(aligned)
    mask, hair, source = None, None, "landmarks"
    if parser:
        mask, hair = parse_face(image, parser, device)
        if mask.any():
            source = parser.source
        else:
            warn(f"the face parser found no face in {path}; masking with face landmarks instead")
    if source == "landmarks":
        mask, hair = _landmark_mask(bgr, face, pack, matrix), None
    return FaceCrop(
        image=image,
        arcface_crop=arcface_crop,
        embedding=embedding,
        mask=mask,
        hair_mask=hair,
        mask_source=source,
        bbox=tuple(float(v) for v in face.bbox),
        keypoints=face.keypoints.astype(np.float32),
        score=face.score,
        num_faces=len(faces),
        photo_sha256=photo_sha256(data),
    )


def _landmark_mask(bgr: np.ndarray, face: Detection, pack: FacePack, matrix: np.ndarray) -> np.ndarray:
    """``face_mask`` on the aligned crop, with the pack's 106-point landmarks when it has them."""
    outline = None
    if pack.landmark106 is not None:
        from insightface.app.common import Face

        points = pack.landmark106.get(bgr, Face(bbox=face.bbox, kps=face.keypoints))
        outline = transform_points(points[:, :2], matrix)
    return face_mask(transform_points(face.keypoints, matrix), outline=outline)


SAME_PERSON_COSINE = 0.3  # ArcFace: two photos of one person score ~0.4-0.8, of two people below ~0.2


def odd_faces(embeddings: list[np.ndarray]) -> list[int]:
    """Which of one person's photos do not look like the others: those whose mean face-embedding
    cosine to the other photos is below SAME_PERSON_COSINE (both, when there are only two)."""
    if len(embeddings) < 2:
        return []
    unit = np.stack([e / np.linalg.norm(e) for e in embeddings]).astype(np.float64)
    cos = unit @ unit.T
    mean_to_others = (cos.sum(axis=1) - 1.0) / (len(embeddings) - 1)
    return [i for i, m in enumerate(mean_to_others) if m < SAME_PERSON_COSINE]


def warn_odd_faces(name: str, photos: list[Path], embeddings: list[np.ndarray], warn: Warn | None) -> None:
    """Warn, naming it, about a photo of ``name`` whose face does not look like the other photos'."""
    odd = [str(photos[i]) for i in odd_faces(embeddings)]
    if odd and warn is not None:
        warn(
            f"the face in {' and '.join(odd)} does not look like the other photos of {name}: "
            "check that every photo shows the same person (and --face picks it)"
        )
