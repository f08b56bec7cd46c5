"""sid.faces on real photos and a real face-model pack (../shared), plus tiny hand-built ONNX models."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sid import face_transformers, faces, photos
from sid.errors import BadInput, ModelNotFound, NoFaceFound, SidError
from sid.faces import extract_face, face_models_dir, ffhq_matrix, load_face_pack
from sid.photos import load_photo

EXIF_ORIENTATION = 0x0112


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def aligned_keypoints(crop: faces.FaceCrop) -> np.ndarray:
    return faces.transform_points(crop.keypoints, ffhq_matrix(crop.keypoints))


@pytest.fixture(scope="session")
def group_photo() -> Path:
    """insightface's own group photo (six faces)."""
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    if not path.is_file():
        pytest.skip(f"insightface's sample photo {path} is missing")
    return path


@pytest.fixture(scope="session")
def obama(facepack, face_photos) -> faces.FaceCrop:
    return extract_face(face_photos / "obama_1.jpg", face_models=facepack)


# ---------------------------------------------------------------- load_photo


def test_exif_orientation_is_applied(tmp_path):
    upright = np.zeros((60, 40, 3), np.uint8)
    upright[:30] = (255, 0, 0)  # red top half
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored turned 90 degrees counter-clockwise; viewers turn it back
    path = tmp_path / "turned.jpg"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    img = load_photo(path)
    assert img.mode == "RGB" and img.size == (40, 60)
    px = np.asarray(img)
    assert px[5, 20, 0] > 200 and px[5, 20, 2] < 60  # top is red
    assert px[55, 20].max() < 60  # bottom is black


def test_transparent_png_goes_over_white(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (0, 0, 255, 255)  # opaque blue left, fully transparent right
    Image.fromarray(rgba).save(tmp_path / "a.png")
    px = np.asarray(load_photo(tmp_path / "a.png"))
    assert tuple(px[10, 5]) == (0, 0, 255)
    assert tuple(px[10, 35]) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "P", "1"])
def test_other_modes_become_rgb(tmp_path, mode):
    gray = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (40, 1))
    Image.fromarray(gray).convert(mode).save(tmp_path / "g.png")
    img = load_photo(tmp_path / "g.png")
    assert img.mode == "RGB" and img.size == (40, 40)


def test_cmyk_jpeg_converts(tmp_path):
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # pure red ink
    cmyk.paste((0, 0, 0, 255), (0, 20, 40, 40))  # black ink bottom half
    cmyk.save(tmp_path / "c.jpg", quality=100)
    px = np.asarray(load_photo(tmp_path / "c.jpg")).astype(int)
    assert np.abs(px[5, 20] - (255, 0, 0)).max() <= 12
    assert px[35, 20].max() <= 12


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    wide = np.zeros((40, 40), np.uint16)
    wide[:, 10:20] = 32896  # mid grey in 16 bits
    wide[:, 20:] = 65535
    Image.fromarray(wide).save(tmp_path / "w.png")
    assert Image.open(tmp_path / "w.png").mode.startswith("I")
    px = np.asarray(load_photo(tmp_path / "w.png"))
    assert tuple(px[5, 5]) == (0, 0, 0)
    assert tuple(px[5, 15]) == (128, 128, 128)
    assert tuple(px[5, 30]) == (255, 255, 255)


def _corrupt(path: Path, face_photos: Path) -> None:
    data = (face_photos / "obama_1.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p, _: p.write_text("hello, not a photo"), "not an image"),
        (lambda p, _: p.write_bytes(b""), "empty"),
        (lambda p, _: Image.new("RGB", (1, 1)).save(p, format="PNG"), "1x1"),
        (lambda p, _: Image.new("RGB", (300, 20)).save(p, format="PNG"), "300x20"),
        (_corrupt, "damaged or truncated"),
    ],
    ids=["text", "empty", "one-pixel", "thin", "truncated"],
)
def test_bad_photos_are_refused(tmp_path, face_photos, make, words):
    path = tmp_path / "photo.jpg"
    make(path, face_photos)
    with pytest.raises(BadInput) as info:
        load_photo(path)
    assert words in info.value.message and str(path) in info.value.message
    assert info.value.hint


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_photo(tmp_path / "nope.jpg")
    with pytest.raises(BadInput, match="folder"):
        load_photo(tmp_path)


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    Image.new("L", (200, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(photos, "MAX_PIXELS", 100 * 100)
    with pytest.raises(BadInput, match="too large") as info:
        load_photo(tmp_path / "big.png")
    assert "downscale" in info.value.hint
    monkeypatch.setattr(photos, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own check fires first
    with pytest.raises(BadInput, match="too large"):
        load_photo(tmp_path / "big.png")


# ---------------------------------------------------------------- real faces


def test_single_face_is_found_and_aligned(obama, facepack, face_photos):
    assert obama.num_faces == 1 and 0.5 < obama.score <= 1.0
    x1, y1, x2, y2 = obama.bbox
    assert x2 - x1 > 100 and y2 - y1 > 100
    kps = obama.keypoints
    assert kps.shape == (5, 2) and kps.dtype == np.float32
    assert np.all((kps[:, 0] > x1) & (kps[:, 0] < x2) & (kps[:, 1] > y1) & (kps[:, 1] < y2))
    assert obama.image.mode == "RGB" and obama.image.size == (512, 512)
    assert obama.arcface_crop.shape == (112, 112, 3) and obama.arcface_crop.dtype == np.uint8
    left, right = aligned_keypoints(obama)[:2]
    tilt = np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0]))
    assert abs(tilt) < 3
    # FFHQ puts the eyes near (192, 240) and (320, 240) in a 512 crop
    assert np.abs(left - (192, 240)).max() < 16 and np.abs(right - (320, 240)).max() < 16
    assert obama.photo_sha256 == hashlib.sha256((face_photos / "obama_1.jpg").read_bytes()).hexdigest()


def test_embedding_is_unit_and_as_wide_as_the_model(obama, facepack):
    pack = load_face_pack(facepack)
    assert pack.embedding_dim == 128  # the test recognizer; buffalo_l's is 512
    assert obama.embedding.shape == (pack.embedding_dim,) and obama.embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(obama.embedding)) - 1.0) < 1e-5
    assert load_face_pack(facepack) is pack  # cached per folder


def test_same_person_is_closer_than_another(obama, facepack, face_photos):
    obama2 = extract_face(face_photos / "obama_2.jpg", face_models=facepack)
    biden = extract_face(face_photos / "biden_2.jpg", face_models=facepack)
    same, other = cosine(obama.embedding, obama2.embedding), cosine(obama.embedding, biden.embedding)
    assert same > 0.4 and same > other + 0.3


def test_exif_rotated_photo_gives_the_same_face(tmp_path, facepack, face_photos):
    upright = Image.open(face_photos / "obama_1.jpg").convert("RGB")
    upright.save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8  # stored turned clockwise; viewers turn it back
    upright.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    a = extract_face(tmp_path / "upright.jpg", face_models=facepack)
    b = extract_face(tmp_path / "turned.jpg", face_models=facepack)
    assert cosine(a.embedding, b.embedding) > 0.95
    assert np.abs(np.asarray(a.image, float) - np.asarray(b.image, float)).mean() < 8
    assert np.abs(a.keypoints - b.keypoints).max() < 4


def test_close_up_is_found(tmp_path, obama, facepack, face_photos):
    """A face filling the frame is beyond SCRFD's range at 640; the coarse second look finds it."""
    x1, y1, x2, y2 = obama.bbox
    photo = Image.open(face_photos / "obama_1.jpg")
    photo.crop((int(x1), int(y1), int(x2), int(y2))).save(tmp_path / "c.jpg")
    close = extract_face(tmp_path / "c.jpg", face_models=facepack)
    assert close.num_faces == 1
    assert cosine(close.embedding, obama.embedding) > 0.8


def test_mask_covers_the_face(obama):
    mask = obama.mask
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert 0.15 < mask.mean() < 0.6  # a face, not the whole crop
    for x, y in aligned_keypoints(obama):
        assert mask[int(round(y)), int(round(x))] > 0.9
    assert mask[5, 5] == 0.0 and mask[5, 506] == 0.0  # corners are background
    assert len(np.unique(np.round(mask, 3))) > 10  # feathered, not a hard edge


def test_thumbnail_png(obama):
    thumb = Image.open(io.BytesIO(obama.thumbnail_png()))
    assert thumb.format == "PNG" and thumb.size == (128, 128)
    assert Image.open(io.BytesIO(obama.thumbnail_png(64))).size == (64, 64)


def test_no_face_is_an_error(tmp_path, facepack):
    from skimage import data

    path = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(path)
    with pytest.raises(NoFaceFound) as info:
        extract_face(path, face_models=facepack)
    assert str(path) in info.value.message and info.value.hint


def test_group_photo_takes_the_largest_and_says_so(group_photo, facepack):
    warnings: list[str] = []
    crop = extract_face(group_photo, face_models=facepack, warn=warnings.append)
    assert crop.num_faces == 6
    assert len(warnings) == 1 and "6 faces" in warnings[0] and "--face" in warnings[0]
    every = [extract_face(group_photo, face_models=facepack, face_index=k) for k in range(1, 7)]
    areas = [(c.bbox[2] - c.bbox[0]) * (c.bbox[3] - c.bbox[1]) for c in every]
    assert (crop.bbox[2] - crop.bbox[0]) * (crop.bbox[3] - crop.bbox[1]) == pytest.approx(max(areas))
    centres = [(c.bbox[0] + c.bbox[2]) / 2 for c in every]
    assert centres == sorted(centres)  # --face counts from the left
    assert every[0].bbox != every[1].bbox
    assert cosine(every[0].embedding, every[1].embedding) < 0.9


@pytest.mark.parametrize("index", [0, 7])
def test_face_index_out_of_range(group_photo, facepack, index):
    with pytest.raises(BadInput) as info:
        extract_face(group_photo, face_models=facepack, face_index=index)
    assert "6 faces" in info.value.message and "1 to 6" in info.value.hint


def test_small_face_warns(tmp_path, facepack, face_photos):
    photo = Image.open(face_photos / "obama_1.jpg")
    photo.resize((photo.width // 5, photo.height // 5), Image.Resampling.LANCZOS).save(tmp_path / "small.jpg")
    warnings: list[str] = []
    crop = extract_face(tmp_path / "small.jpg", face_models=facepack, warn=warnings.append)
    assert crop.image.size == (512, 512)
    assert any("poor" in w for w in warnings)


# ---------------------------------------------------------------- where the pack lives


def test_pack_folder_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default = tmp_path / "home" / ".insightface" / "models" / "buffalo_l"
    assert face_models_dir(None, download=False) == default
    monkeypatch.setenv("SID_FACE_MODELS", str(tmp_path / "env"))
    assert face_models_dir(None, download=False) == tmp_path / "env"
    assert face_models_dir(tmp_path / "flag", download=False) == tmp_path / "flag"


def test_missing_pack_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(SidError) as info:
        face_models_dir(None)
    assert "buffalo_l" in info.value.message and "offline" in info.value.message
    assert "--face-models" in info.value.hint
    Image.new("RGB", (64, 64)).save(tmp_path / "photo.png")
    with pytest.raises(ModelNotFound, match=str(tmp_path / "empty")):
        extract_face(tmp_path / "photo.png", face_models=tmp_path / "empty")


def test_missing_default_pack_online_is_downloaded_by_insightface(tmp_path, monkeypatch, facepack):
    from insightface.utils import storage

    calls = []

    def fake_download(sub_dir, name, force=False, root="~/.insightface"):
        calls.append((sub_dir, name, force, root))
        folder = Path(root) / sub_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for model in facepack.glob("*.onnx"):
            (folder / model.name).symlink_to(model)
        return str(folder)

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(storage, "download", fake_download)
    folder = face_models_dir(None)
    assert calls == [("models", "buffalo_l", True, str(tmp_path / "home" / ".insightface"))]
    assert load_face_pack(None).folder == folder.resolve()
    with pytest.raises(ModelNotFound):  # a folder the user named is never filled behind their back
        face_models_dir(tmp_path / "mine")
    assert len(calls) == 1


# ---------------------------------------------------------------- other packs, built here


def _onnx_model(path: Path, side: int, width: int, bias: np.ndarray | None = None) -> Path:
    """input [N,3,side,side] -> 16x16 average pool -> flatten -> matmul -> [N,width] (+ bias)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cells = 3 * (side // 16) ** 2
    weight = np.random.default_rng(0).standard_normal((cells, width)).astype(np.float32)
    if bias is not None:
        weight[:] = 0.0
    nodes = [
        helper.make_node(
            "AveragePool", ["data"], ["pooled"], name="pool", kernel_shape=[16, 16], strides=[16, 16]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("MatMul", ["flat", "weight"], ["fc1" if bias is not None else "fc"], name="project"),
    ]
    inits = [numpy_helper.from_array(weight, "weight")]
    if bias is not None:
        nodes.append(helper.make_node("Add", ["fc1", "bias"], ["fc"], name="shift"))
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "bias"))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("fc", TensorProto.FLOAT, ["N", width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_pack_with_a_512_wide_recognizer(tmp_path, facepack, face_photos):
    pytest.importorskip("onnx")
    (tmp_path / "det_500m.onnx").symlink_to(facepack / "det_500m.onnx")
    _onnx_model(tmp_path / "w600k_tiny.onnx", 112, 512)
    pack = load_face_pack(tmp_path)
    assert type(pack.recognizer).__name__ == "ArcFaceONNX" and pack.landmark106 is None
    assert pack.recognizer.input_mean == 127.5  # no Sub/Mul nodes: insightface normalises the input itself
    assert pack.embedding_dim == 512
    crop = extract_face(face_photos / "obama_1.jpg", face_models=tmp_path)
    assert crop.embedding.shape == (512,) and abs(float(np.linalg.norm(crop.embedding)) - 1) < 1e-5


def test_pack_with_106_landmarks_masks_their_hull(tmp_path, facepack, face_photos):
    pytest.importorskip("onnx")
    for model in facepack.glob("*.onnx"):
        (tmp_path / model.name).symlink_to(model)
    # a "landmark model" that always answers a circle of radius 0.6 around the crop centre: wider
    # than the face, so its hull reaches beyond the 5-point ellipse
    turn = np.linspace(0, 2 * np.pi, 106, endpoint=False)
    circle = np.stack([0.6 * np.cos(turn), 0.6 * np.sin(turn)], axis=1).reshape(-1)
    _onnx_model(tmp_path / "2d106det.onnx", 192, 212, bias=circle)
    pack = load_face_pack(tmp_path)
    assert pack.landmark106 is not None and pack.landmark106.taskname == "landmark_2d_106"
    crop = extract_face(face_photos / "obama_1.jpg", face_models=tmp_path)
    plain = extract_face(face_photos / "obama_1.jpg", face_models=facepack)
    assert crop.mask.shape == (512, 512) and 0.0 <= crop.mask.min() and crop.mask.max() <= 1.0
    assert crop.mask_source == plain.mask_source == "landmarks" and crop.hair_mask is None
    # the union of the hull and the 5-point ellipse: all of the ellipse, and more
    assert (crop.mask >= plain.mask - 1e-6).all() and crop.mask.sum() > 1.02 * plain.mask.sum()
    # the circle sits on the box centre with radius 0.6 * 1.5 * box side / 2 (in photo pixels)
    side = max(crop.bbox[2] - crop.bbox[0], crop.bbox[3] - crop.bbox[1])
    centre = np.array([(crop.bbox[0] + crop.bbox[2]) / 2, (crop.bbox[1] + crop.bbox[3]) / 2])
    inner = centre + 0.9 * 0.45 * side * np.stack([np.cos(turn), np.sin(turn)], axis=1)
    for x, y in faces.transform_points(inner, ffhq_matrix(crop.keypoints)):
        assert crop.mask[int(round(y)), int(round(x))] > 0.9


# ---------------------------------------------------------------- StableIdentity's ViT face encoder


def test_vit_face_embeddings_from_a_local_folder(tiny_vit, obama):
    first = face_transformers.vit_face_embeddings(obama.image, str(tiny_vit))
    assert first.shape == (2, 32) and first.dtype == np.float32 and np.isfinite(first).all()
    again = face_transformers.vit_face_embeddings(
        np.asarray(obama.image), str(tiny_vit), local_files_only=True
    )
    np.testing.assert_allclose(first, again, atol=1e-5)
    assert np.abs(first[0] - first[1]).max() > 1e-3  # a face is not its own mirror image
    other = face_transformers.vit_face_embeddings(Image.new("RGB", (512, 512), (90, 30, 200)), str(tiny_vit))
    assert np.abs(first - other).max() > 1e-3


def test_vit_mirror_flips_the_face_box_not_the_photo(tiny_vit):
    """StableIdentity flips the ViT's cropped input: a box that is symmetric gives the same feature twice,
    although the whole 512 image (the box is not centred in it) is not symmetric."""
    x0, _, x1, _ = face_transformers.VIT_FACE_BOX
    xs = np.abs(np.arange(512) - (x0 + x1 - 1) / 2)  # symmetric about the box's centre column
    ramp = np.broadcast_to((np.sin(xs / 9.0) * 100 + 120)[None, :, None], (512, 512, 3)).astype(np.uint8)
    ramp = np.ascontiguousarray(ramp)
    ramp[: 512 // 3, :, 1] = 30  # top third differs in colour: the feature depends on the content
    pair = face_transformers.vit_face_embeddings(ramp, str(tiny_vit))
    np.testing.assert_allclose(pair[0], pair[1], atol=1e-4)
    assert not np.allclose(ramp, ramp[:, ::-1])  # mirroring the photo first would crop another region


def test_vit_face_embeddings_missing_model_is_clear(tmp_path, obama):
    with pytest.raises(ModelNotFound) as info:
        face_transformers.vit_face_embeddings(obama.image, "nobody/no-such-face-model")
    assert "nobody/no-such-face-model" in info.value.message and "--vit-model" in info.value.hint
    with pytest.raises(ModelNotFound):
        face_transformers.vit_face_embeddings(obama.image, str(tmp_path))


def test_model_sources_follow_flag_env_config_default(tmp_path, monkeypatch, isolated_home):
    assert face_transformers.vit_model_source() == face_transformers.VIT_FACE_MODEL
    assert face_transformers.face_parser_source() == face_transformers.FACE_PARSER
    (isolated_home / "config.toml").write_text('vit_model = "cfg/vit"\nface_parser = "cfg/parser"\n')
    assert (face_transformers.vit_model_source(), face_transformers.face_parser_source()) == (
        "cfg/vit",
        "cfg/parser",
    )
    monkeypatch.setenv("SID_VIT_MODEL", "env/vit")
    monkeypatch.setenv("SID_FACE_PARSER", "env/parser")
    assert (face_transformers.vit_model_source(), face_transformers.face_parser_source()) == (
        "env/vit",
        "env/parser",
    )
    assert face_transformers.vit_model_source("flag/vit") == "flag/vit"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "parser").mkdir()
    assert face_transformers.face_parser_source("parser") == str(
        tmp_path / "parser"
    )  # folders become absolute


# ---------------------------------------------------------------- the face-parsing mask

# the BiSeNet parser StableIdentity's code used: the same names as jonathandinu/face-parsing, other ids
BISENET_LABELS = (
    *("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r"),
    *("nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat"),
)


def test_parser_classes_are_chosen_by_name():
    from sid.testing import FACE_PARSING_LABELS

    face, hair = face_transformers.parser_classes(dict(enumerate(BISENET_LABELS)), "bisenet")
    assert face == (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13) and hair == (17,)  # StableIdentity's own ids
    face, hair = face_transformers.parser_classes(dict(enumerate(FACE_PARSING_LABELS)), "segformer")
    assert [FACE_PARSING_LABELS[i] for i in face] == [
        *("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear"),
        *("mouth", "u_lip", "l_lip"),
    ]
    assert hair == (13,)
    other = {
        "0": "Background",
        "1": "Face",
        "2": "Left-Eyebrow",
        "3": "upper lip",
        "4": "Hair",
        "5": "earring",
    }
    assert face_transformers.parser_classes(other, "other") == ((1, 2, 3), (4,))
    assert face_transformers.parser_classes({0: "background", 1: "skin"}, "x") == ((1,), ())
    with pytest.raises(ModelNotFound) as info:
        face_transformers.parser_classes({0: "sky", 1: "car", 2: "ear_r"}, "city/parser")
    assert "city/parser" in info.value.message and "no face classes" in info.value.message
    assert "--mask landmarks" in info.value.hint


def test_part_masks_of_a_label_map():
    labels = np.array([[0, 1, 17], [9, 13, 17], [14, 10, 16]])  # BiSeNet ids
    face, hair = face_transformers.part_masks(labels, (1, 10, 13), (17,))
    np.testing.assert_array_equal(face, [[0, 1, 0], [0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(hair, [[0, 0, 1], [0, 0, 1], [0, 0, 0]])
    assert face.dtype == hair.dtype == np.float32
    assert face_transformers.part_masks(labels, (1,), ())[1] is None


def test_parser_mask_from_a_saved_segformer(tiny_parser, facepack, face_photos):
    parser = face_transformers.load_face_parser(str(tiny_parser))
    assert parser.source == str(tiny_parser.resolve()) and parser.hair_ids == (13,)
    assert len(parser.face_ids) == 12 and 0 not in parser.face_ids  # by name: background is no face
    crop = extract_face(face_photos / "obama_1.jpg", face_models=facepack, parser=parser)
    assert crop.mask_source == parser.source
    assert crop.mask.shape == crop.hair_mask.shape == (512, 512)
    assert set(np.unique(crop.mask)) == {0.0, 1.0} and set(np.unique(crop.hair_mask)) == {0.0, 1.0}
    assert not (crop.mask * crop.hair_mask).any()  # a pixel has one class


def test_parser_that_finds_no_face_falls_back_to_landmarks(tiny_parser, facepack, face_photos):
    import dataclasses

    parser = dataclasses.replace(
        face_transformers.load_face_parser(str(tiny_parser)), face_ids=(99,)
    )  # never predicted
    warnings: list[str] = []
    crop = extract_face(
        face_photos / "obama_1.jpg", face_models=facepack, parser=parser, warn=warnings.append
    )
    assert crop.mask_source == "landmarks" and crop.hair_mask is None and crop.mask.max() > 0.9
    assert len(warnings) == 1 and "found no face" in warnings[0]


def test_default_parser_offline_falls_back_once(tmp_path):
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(face_transformers.FACE_PARSER, "config.json"), str):
        pytest.skip(f"{face_transformers.FACE_PARSER} is in this machine's Hugging Face cache")
    warnings: list[str] = []
    assert face_transformers.load_face_parser(None, warnings.append) is None
    (message,) = warnings
    assert face_transformers.FACE_PARSER in message and "landmarks" in message and "--face-parser" in message
    with pytest.raises(ModelNotFound) as info:  # a parser the user chose is never replaced silently
        face_transformers.load_face_parser("nobody/no-such-parser", warnings.append)
    assert "nobody/no-such-parser" in info.value.message and len(warnings) == 1
    with pytest.raises(ModelNotFound):
        face_transformers.load_face_parser(str(tmp_path))


def test_parser_without_face_classes_is_refused(tmp_path):
    from sid.testing import save_tiny_face_parser

    save_tiny_face_parser(tmp_path / "city", labels=("road", "sky", "car"))
    with pytest.raises(ModelNotFound) as info:
        face_transformers.load_face_parser(str(tmp_path / "city"))
    assert "no face classes" in info.value.message and "road, sky, car" in info.value.message
