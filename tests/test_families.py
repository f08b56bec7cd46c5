"""The family table: lookups by widths, identity and pipeline, and the errors that follow from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sid.cli import app
from sid.errors import BadInput, IncompatibleIdentity
from sid.families import (
    FAMILIES,
    SD1,
    SD2,
    SDXL,
    family_by_widths,
    family_of_identity,
    prompt_family,
    slot_for_width,
)
from sid.prompts import check_compatible
from sid.store import Identity, IdentityStore
from tests.test_store import make_identity

runner = CliRunner()


def identity(name: str, widths: dict[str, int], seed: int = 0) -> Identity:
    """An identity with one (2, width) matrix per slot."""
    rng = np.random.default_rng(seed)
    vectors = {slot: rng.standard_normal((2, w)).astype(np.float32) for slot, w in widths.items()}
    return Identity(name=name, vectors=vectors, method="stableidentity", base_model="sd15")


def test_lookup_by_widths_tells_encoder_positions_apart() -> None:
    assert family_by_widths((768,)) is SD1 and family_by_widths((1024,)) is SD2
    assert family_by_widths((768, 1280)) is SDXL
    assert family_by_widths((1280, 768)) not in FAMILIES  # encoder order matters
    assert family_by_widths((768, 768)).slots == ("te768", "te768_2")  # one slot per position, no clash
    assert family_of_identity({"te768_2": 768, "te768": 768}).slots == ("te768", "te768_2")
    assert [slot_for_width(w) for w in (768, 1024, 1280, 32)] == ["clip_l", "clip_h", "te1280", "te32"]
    unknown = family_by_widths((32,))
    assert unknown.slots == ("te32",) and unknown.label == "a model with a 32-d text encoder"
    assert family_by_widths((32, 64)).slots == ("te32", "te64")  # the tiny SDXL's


def test_lookup_by_identity_slots_in_any_order() -> None:
    assert family_of_identity({"clip_g": 1280, "clip_l": 768}) is SDXL
    assert family_of_identity({"clip_h": 1024}) is SD2 and family_of_identity({"te32": 32}).slots == ("te32",)
    odd = family_of_identity({"mine": 768})  # a foreign slot name keeps its own name
    assert odd.slots == ("mine",) and odd.widths == SD1.widths


def test_lookup_by_pipeline_and_ls_column(tiny_model: Path) -> None:
    from sid.families import family_of_pipeline
    from sid.pipelines import load_pipeline

    pipe, _ = load_pipeline(str(tiny_model), device="cpu", dtype="fp32")
    assert family_of_pipeline(pipe) == family_by_widths((32,))
    IdentityStore().save(make_identity("alice", width=1024))
    IdentityStore().save(identity("xl", {"clip_l": 768, "clip_g": 1280}))
    rows = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)["identities"]
    assert [(r["name"], r["family"]) for r in rows] == [("alice", "sd2"), ("xl", "sdxl")]
    assert json.loads(runner.invoke(app, ["show", "xl", "--json"]).stdout)["family"] == "sdxl"
    table = runner.invoke(app, ["ls"]).output
    assert "family" in table and "sdxl" in table


def test_sdxl_identity_is_refused_on_an_sd1_model() -> None:
    xl = identity("xl", {"clip_l": 768, "clip_g": 1280})
    with pytest.raises(IncompatibleIdentity, match=r"for SDXL .*, not for SD 1\.x"):
        check_compatible(xl, SD1)
    sd1 = identity("one", {"clip_l": 768})
    with pytest.raises(IncompatibleIdentity, match=r"learned for SD 1\.x .*, not for SDXL"):
        check_compatible(sd1, SDXL)
    got = check_compatible(xl, SDXL)  # vectors in encoder order
    assert [(slot, v.shape[-1]) for slot, v in got.items()] == [("clip_l", 768), ("clip_g", 1280)]
    # an unknown family read back from a file (keys sorted: te1024 first) fits its 768 + 1024 model
    stored = identity("odd", {"te1024": 1024, "te768": 768})
    assert list(check_compatible(stored, family_by_widths((768, 1024)))) == ["te768", "te1024"]
    with pytest.raises(IncompatibleIdentity, match="learned for a model with 1024-d"):
        check_compatible(stored, family_by_widths((1024, 1024)))


def test_two_encoder_identity_refused_by_a_real_one_encoder_model(tiny_model: Path, tmp_path: Path) -> None:
    """What used to load half an identity silently: a (32, 64) identity on a 32-d model."""
    IdentityStore().save(identity("duo", {"te32": 32, "te64": 64}))
    result = runner.invoke(
        app, ["render", "duo rides", "--model", str(tiny_model), "--device", "cpu", "-o", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert (
        "learned for a model with 32-d + 64-d text encoders, not for a model with a 32-d text encoder"
        in result.output
    )
    assert list(tmp_path.iterdir()) == []


def test_mixing_families_in_one_prompt_names_both() -> None:
    mixed = [identity("one", {"clip_l": 768}), identity("xl", {"clip_l": 768, "clip_g": 1280})]
    with pytest.raises(IncompatibleIdentity, match=r"one \(SD 1\.x .*\), xl \(SDXL "):
        prompt_family(mixed)
    assert prompt_family(mixed[:1]) is SD1
    sd2_and_xl = [identity("two", {"clip_h": 1024}), identity("xl", {"clip_l": 768, "clip_g": 1280})]
    with pytest.raises(IncompatibleIdentity, match=r"two \(SD 2\.x .*\), xl \(SDXL "):
        prompt_family(sd2_and_xl)


def test_config_preset_family_must_be_a_row(isolated_home: Path) -> None:
    from sid.pipelines import resolve_model

    (isolated_home / "config.toml").write_text(
        '[presets.mine]\ncandidates = ["me/xl"]\nfamily = "sdxl"\n', encoding="utf-8"
    )
    mine = resolve_model("mine").preset
    assert mine.family is SDXL and mine.controlnets == dict(SDXL.controlnets)
    (isolated_home / "config.toml").write_text(
        '[presets.mine]\ncandidates = ["me/xl"]\nfamily = "sd3"\n', encoding="utf-8"
    )
    with pytest.raises(BadInput, match="presets.mine.family 'sd3' is unknown"):
        resolve_model("mine")
