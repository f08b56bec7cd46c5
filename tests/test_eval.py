"""sid eval: the pure metrics on constructed embeddings, the prompt set, and an offline end-to-end run
(tiny pipeline, tiny CLIP, the real face pack and a real photo from ../shared)."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sid.cli import app
from sid.errors import BadInput
from sid.eval import (
    EvalPrompt,
    ImageScore,
    aggregate,
    best_match,
    clip_score,
    clipscore_100,
    cosine,
    face_diversity,
    identity_similarity,
    load_prompts,
    miss_rate,
    parse_prompts,
    score_image,
    summarize,
)
from sid.store import IdentityStore
from tests.test_store import make_identity

runner = CliRunner()
E = np.eye(8, dtype=np.float32)


# ---------------------------------------------------------------- metrics


def test_identity_similarity_identical_orthogonal_and_empty() -> None:
    assert identity_similarity(E[0], [E[0], E[0] * 3]) == pytest.approx(1.0)  # scale does not matter
    assert identity_similarity(E[0], [E[1], E[2]]) == pytest.approx(0.0)
    assert identity_similarity(E[0], [E[0], E[1]]) == pytest.approx(0.5)
    assert math.isnan(identity_similarity(E[0], []))


def test_best_match_picks_the_most_similar_face() -> None:
    half = (E[0] + E[1]) / np.sqrt(2)
    assert best_match(E[0], [E[2], half, E[0]]) == (2, pytest.approx(1.0))
    assert best_match(E[0], [E[2], half]) == (1, pytest.approx(1 / np.sqrt(2)))
    assert best_match(E[0], []) is None


def test_face_diversity() -> None:
    assert face_diversity([E[0], E[0], E[0]]) == pytest.approx(0.0)
    assert face_diversity([E[0], E[1], E[2]]) == pytest.approx(1.0)
    assert face_diversity([E[0], E[0], E[1]]) == pytest.approx(2 / 3)  # pairs: 0, 1, 1
    assert math.isnan(face_diversity([E[0]])) and math.isnan(face_diversity([]))


def test_cosine_ignores_length_and_score_image_outlines_the_match() -> None:
    assert cosine([3.0, 0.0], [0.5, 0.5]) == pytest.approx(1 / np.sqrt(2))
    assert cosine(E[0] * 0.001, E[0] * 50) == pytest.approx(1.0)
    boxes = [(0.0, 0.0, 1.0, 1.0), (5.0, 5.0, 9.0, 9.0)]
    score = score_image(E[0], [E[1], E[0] * 2], seed=7, boxes=boxes)
    assert (score.seed, score.faces, score.face_box) == (7, 2, boxes[1])
    assert np.allclose(score.face, E[0] * 2) and score.clip is None
    assert score_image(E[0], [], boxes=[]).face_box is None


def test_clip_score_and_convention() -> None:
    v = np.random.default_rng(0).standard_normal(16)
    v /= np.linalg.norm(v)
    assert clip_score(v, v) == pytest.approx(1.0)
    assert clip_score(v, -v) == pytest.approx(-1.0)
    assert clipscore_100(0.31) == pytest.approx(31.0)
    assert clipscore_100(-0.2) == 0.0


def test_miss_rate_counting() -> None:
    assert miss_rate([0, 1, 2, 0]) == 0.5
    assert miss_rate([1, 1]) == 0.0
    assert miss_rate([0]) == 1.0
    assert math.isnan(miss_rate([]))


def test_score_and_aggregate() -> None:
    ref = E[0]
    text = E[5]
    a = [
        score_image(ref, [E[1], E[0]], image_emb=E[5], text_emb=text, seed=0),  # two faces, one matches
        score_image(ref, [], image_emb=E[6], text_emb=text, seed=1),
    ]  # miss
    b = [
        score_image(ref, [E[1]], image_emb=E[5], text_emb=text, seed=0),
        score_image(ref, [E[2]], image_emb=E[5], text_emb=text, seed=1),
    ]
    assert (a[0].faces, a[0].identity, a[1].identity, a[1].faces) == (2, pytest.approx(1.0), None, 0)
    first = summarize(a)
    assert first["miss_rate"] == 0.5 and first["identity_similarity"] == pytest.approx(1.0)
    assert first["clip_cosine"] == pytest.approx(0.5) and first["clip_score"] == pytest.approx(50.0)
    assert math.isnan(first["face_diversity"])  # one matched face
    overall = aggregate([a, b])
    assert overall["images"] == 4 and overall["miss_rate"] == 0.25 and overall["prompts"] == 2
    assert overall["identity_similarity"] == pytest.approx(1 / 3)  # pooled over the 3 images with a face
    assert overall["identity_similarity_with_misses"] == pytest.approx(1 / 4)  # the miss counts as 0
    assert overall["face_diversity"] == pytest.approx(1.0)  # only prompt b has two faces: 1 - cos(E1, E2)
    no_clip = summarize([ImageScore(0, 0, None, None)])
    assert math.isnan(no_clip["clip_cosine"]) and math.isnan(no_clip["identity_similarity"])


# ---------------------------------------------------------------- prompts


def test_builtin_prompts() -> None:
    prompts = load_prompts("builtin")
    assert 25 <= len(prompts) <= 40
    assert all("{}" in p.template for p in prompts)
    assert {"style", "action", "decoration", "context", "two-person"} <= {p.category for p in prompts}
    obama = next(p for p in prompts if "Barack Obama" in p.template)
    assert obama.clip_text == "a person and Barack Obama shaking hands"
    assert obama.for_identity("alice") == "@alice and Barack Obama shaking hands"


def test_prompts_file_rules(tmp_path: Path) -> None:
    assert parse_prompts("# style\n{} as an oil painting\n\n{} on the beach\n") == [
        EvalPrompt("{} as an oil painting", "style"),
        EvalPrompt("{} on the beach", "style"),
    ]
    with pytest.raises(BadInput, match="line 2"):
        parse_prompts("{} ok\na beach without anyone\n")
    with pytest.raises(BadInput, match="no prompts"):
        parse_prompts("# only a comment\n")
    with pytest.raises(BadInput, match="not found"):
        load_prompts(tmp_path / "missing.txt")


# ---------------------------------------------------------------- the package


def test_cli_reads_eval_defaults_without_loading_the_eval_machinery() -> None:
    """``sid --help`` builds eval's options from sid.eval's defaults: no metrics, faces or Pillow load."""
    probe = (
        "import sys, sid.cli; "
        "print(sorted(m for m in ('sid.eval.metrics', 'sid.eval.report', 'sid.eval.reference', 'sid.faces', "
        "'PIL') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    import sid.eval
    from sid.eval import runner

    assert sid.eval.evaluate is runner.evaluate  # the package's names load their module on first use
    with pytest.raises(ImportError, match="nothing"):
        from sid.eval import nothing  # noqa: F401


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A random tiny CLIPModel with the real CLIP tokenizer and an image processor, saved to a folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from sid.testing import clip_tokenizer

    torch.manual_seed(0)
    common = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2)
    text = dict(
        common,
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    vision = dict(common, image_size=32, patch_size=8)
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    clip_tokenizer().save_pretrained(folder)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    return folder


def test_load_clip_embeds_unit_rows(tiny_clip: Path) -> None:
    from sid.eval import load_clip

    clip = load_clip(str(tiny_clip))
    texts = clip.embed_texts(["a person on the beach", "a person"])
    images = clip.embed_images([Image.new("RGB", (64, 48), (200, 10, 10))])
    assert texts.shape == (2, 16) and images.shape == (1, 16)
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_thumbnail_reference_matches_photo(facepack: Path, face_photos: Path) -> None:
    """The stored 128 px aligned thumbnail embeds close to the photo itself (the --photo fallback)."""
    from sid.eval import embed_aligned_thumbnail
    from sid.faces import extract_face, load_face_pack

    crop = extract_face(face_photos / "obama_1.jpg", face_models=facepack)
    other = extract_face(face_photos / "biden_2.jpg", face_models=facepack)
    thumb = embed_aligned_thumbnail(Image.open(io.BytesIO(crop.thumbnail_png())), load_face_pack(facepack))
    assert float(thumb @ crop.embedding) > 0.9
    assert float(thumb @ other.embedding) < 0.3


def test_eval_end_to_end(
    tiny_model: Path, tiny_clip: Path, facepack: Path, face_photos: Path, tmp_path: Path
) -> None:
    store = IdentityStore()
    store.save(make_identity("alice", width=32))
    store.save(make_identity("bob", width=32, seed=1))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# style\n{} as an oil painting\n# two-person\n{} and Barack Obama shaking hands\n")
    out_dir = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "eval",
            "alice",
            "bob",
            "--prompts",
            str(prompts),
            "-n",
            "1",
            "--seed",
            "3",
            "--size",
            "64x64",
            "--steps",
            "2",
            "--model",
            str(tiny_model),
            "--clip-model",
            str(tiny_clip),
            "--face-models",
            str(facepack),
            "--photo",
            str(face_photos / "obama_1.jpg"),
            "--device",
            "cpu",
            "--scheduler",
            "ddim",
            "-o",
            str(out_dir),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads((out_dir / "eval.json").read_text())
    assert report["settings"]["seeds"] == [3] and report["settings"]["size"] == [64, 64]
    assert [p["clip_text"] for p in report["prompts"]] == [
        "a person as an oil painting",
        "a person and Barack Obama shaking hands",
    ]
    for name in ("alice", "bob"):
        ident = report["identities"][name]
        assert ident["reference"] == {"source": "photo", "path": str(face_photos / "obama_1.jpg")}
        overall = ident["overall"]
        # random tiny-model renders hold no face: every image is a miss, similarity is honestly null
        assert overall["images"] == 2 and overall["miss_rate"] == 1.0
        assert overall["identity_similarity"] is None and overall["face_diversity"] is None
        assert overall["identity_similarity_with_misses"] == 0.0
        assert -1.0 <= overall["clip_cosine"] <= 1.0 and 0.0 <= overall["clip_score"] <= 100.0
        assert set(ident["categories"]) == {"style", "two-person"}
        first = ident["prompts"][0]
        assert first["prompt"] == f"@{name} as an oil painting"
        image = first["per_image"][0]
        assert image["seed"] == 3 and image["faces"] == 0 and image["identity_similarity"] is None
        assert Path(image["path"]).is_file()
        metadata = Image.open(image["path"]).info  # sid render's PNG metadata
        assert "Seed: 3" in metadata["parameters"]
        assert json.loads(metadata["sid"])["settings"]["out_dir"] == str(out_dir)
    sheet = Image.open(out_dir / "contact_sheet.png")
    assert report["contact_sheet"] == str(out_dir / "contact_sheet.png")
    assert sheet.width > 2 * 192 and sheet.height > 2 * 192  # two identities side by side, two prompt rows

    # the table, with the stored thumbnail as the reference (no --photo), CLIP skipped
    from sid.faces import extract_face

    carol = make_identity("carol", width=32, seed=2)
    carol.thumbnail_png = extract_face(face_photos / "obama_2.jpg", face_models=facepack).thumbnail_png()
    store.save(carol)
    table = runner.invoke(
        app,
        [
            "eval",
            "carol",
            "--prompts",
            str(prompts),
            "-n",
            "1",
            "--size",
            "64x64",
            "--steps",
            "1",
            "--model",
            str(tiny_model),
            "--clip-model",
            "none",
            "--face-models",
            str(facepack),
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "carol"),
            "-q",
        ],
    )
    assert table.exit_code == 0, table.output
    assert "overall" in table.output and "stored thumbnail" in table.output and "100%" in table.output
    carol = json.loads((tmp_path / "carol" / "eval.json").read_text())
    assert carol["identities"]["carol"]["reference"]["source"] == "thumbnail"
    assert carol["settings"]["clip_model"] is None
    assert carol["identities"]["carol"]["overall"]["clip_score"] is None


def test_eval_scores_a_real_face(facepack: Path, face_photos: Path) -> None:
    """embed_faces + score_image on real photos: same person high, the other person low."""
    from sid.faces import embed_faces, extract_face, load_face_pack
    from sid.photos import load_photo

    pack = load_face_pack(facepack)
    ref = extract_face(face_photos / "obama_1.jpg", face_models=facepack).embedding
    same = embed_faces(np.asarray(load_photo(face_photos / "obama_2.jpg")), pack)
    other = embed_faces(np.asarray(load_photo(face_photos / "biden_2.jpg")), pack)
    assert len(same) == 1 and len(other) == 1
    assert score_image(ref, [f.embedding for f in same]).identity > 0.5
    assert score_image(ref, [f.embedding for f in other]).identity < 0.3
    # a "two-person" image: the best-matching face is the one scored
    both = score_image(ref, [other[0].embedding, same[0].embedding])
    assert both.faces == 2 and both.identity > 0.5


def test_eval_input_errors(tiny_model: Path, tmp_path: Path) -> None:
    IdentityStore().save(make_identity("alice", width=32))
    missing = runner.invoke(app, ["eval", "nobody", "--model", str(tiny_model)])
    assert missing.exit_code == 1 and "no identity named 'nobody'" in missing.output
    bad = tmp_path / "p.txt"
    bad.write_text("no placeholder here\n")
    result = runner.invoke(app, ["eval", "alice", "--prompts", str(bad)])
    assert result.exit_code == 1 and "line 1" in result.output
    no_ref = runner.invoke(app, ["eval", "alice", "--face-models", str(tmp_path), "--prompts", "builtin"])
    assert no_ref.exit_code == 1 and "Traceback" not in no_ref.output


def test_eval_bad_dtype_fails_before_loading(tmp_path: Path) -> None:
    IdentityStore().save(make_identity("alice", width=32))
    args = [
        "eval",
        "alice",
        "--model",
        "no-such-owner/no-such-model",
        "--dtype",
        "fp8",
        "-o",
        str(tmp_path / "ev"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and result.output.startswith("error: unknown dtype 'fp8'"), result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "ev").exists()


def test_runner_scores_faces_in_renders(
    tiny_model: Path, facepack: Path, face_photos: Path, tmp_path: Path, monkeypatch
) -> None:
    """The runner's scoring path with faces present: renders replaced by real photos (seed -> photo)."""
    import sid.render
    from sid.eval import EvalConfig, evaluate
    from sid.photos import load_photo

    photos = {
        0: load_photo(face_photos / "obama_2.jpg"),
        1: load_photo(face_photos / "obama_3.jpg"),
        2: load_photo(face_photos / "biden_2.jpg"),
    }

    def fake_generate(pipe, prompt, seeds, *args, **kwargs):
        return [photos[s].resize((256, round(256 * photos[s].height / photos[s].width))) for s in seeds]

    monkeypatch.setattr(sid.render, "generate", fake_generate)
    IdentityStore().save(make_identity("alice", width=32))
    prompts = tmp_path / "p.txt"
    prompts.write_text("{} on the beach\n")
    report = evaluate(
        EvalConfig(
            names=["alice"],
            prompts=str(prompts),
            per_prompt=3,
            seed=0,
            steps=1,
            model=str(tiny_model),
            device="cpu",
            clip_model="none",
            face_models=str(facepack),
            photos=[face_photos / "obama_1.jpg"],
            out_dir=tmp_path / "out",
        )
    )
    row = report["identities"]["alice"]["prompts"][0]
    sims = [image["identity_similarity"] for image in row["per_image"]]
    assert sims[0] > 0.5 and sims[1] > 0.5 and sims[2] < 0.3  # Obama, Obama, Biden against Obama
    assert row["miss_rate"] == 0.0 and row["images_with_face"] == 3
    assert row["identity_similarity"] == pytest.approx(np.mean(sims))
    assert 0.0 < row["face_diversity"] < 2.0
    assert report["identities"]["alice"]["overall"]["identity_similarity"] == pytest.approx(np.mean(sims))
    assert Image.open(report["contact_sheet"]).width >= 3 * 192
