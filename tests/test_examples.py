"""The docs as written: the README's first command learns a photo that ships in the repo and holds one
face, and no docs page has a section twice (merged branches once left two)."""

from __future__ import annotations

import re

import numpy as np

from tests.conftest import ROOT


def readme_learn_photo() -> str:
    commands = re.findall(r"sid learn (\S+) --name (\S+)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert commands, "the README has no `sid learn PHOTO --name NAME` command"
    return commands[0][0]


def test_the_readme_learns_a_photo_that_ships_in_the_repo():
    photo = ROOT / readme_learn_photo()
    assert photo.is_file(), f"{photo} is named by the README's first command but is not in the repo"


def test_the_shipped_photo_holds_exactly_one_usable_face(facepack):
    from sid.faces import SMALL_FACE, detect_faces, extract_face, load_face_pack
    from sid.photos import load_photo

    photo = ROOT / readme_learn_photo()
    rgb = load_photo(photo)
    found = detect_faces(np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]), load_face_pack(facepack))
    assert len(found) == 1
    warnings: list[str] = []
    crop = extract_face(photo, face_models=facepack, warn=warnings.append)
    assert warnings == []  # one face, large enough: no "several faces" or "small face" warning
    assert min(found[0].bbox[2:] - found[0].bbox[:2]) >= SMALL_FACE
    assert crop.image.size == (512, 512)


def test_no_docs_page_has_a_top_level_section_twice():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        headings = re.findall(r"^## (.+)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
        repeated = sorted({h for h in headings if headings.count(h) > 1})
        assert not repeated, f"{page.name} repeats {repeated}"
