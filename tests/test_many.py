"""`sid learn --from`: manifests, K identities per step, robust batches, resume and two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sid.cli import app
from sid.store import IdentityStore
from tests.helpers import one_error

runner = CliRunner()


def learn(*args: str):
    return runner.invoke(app, ["learn", *args])


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(["photo,name,face,method", *lines]) + "\n")
    return path


@pytest.fixture
def offline_cfg(tiny_model: Path, facepack: Path, tiny_vit: Path, tiny_parser: Path, isolated_home: Path):
    """A LearnConfig for learn_many on the tiny model, fully offline, with ``changes`` applied."""
    from sid.train import LearnConfig

    def make(**changes):
        offline = dict(face_models=str(facepack), vit_model=str(tiny_vit), face_parser=str(tiny_parser))
        return LearnConfig(model=str(tiny_model), device="cpu", lr=1e-3, **offline, **changes)

    return make


def vectors(name: str) -> np.ndarray:
    return IdentityStore().get(name).vectors["te32"]


def test_csv_manifest_fails_bad_rows_alone(face_photos: Path, learn_args: list[str], tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    shutil.copy(face_photos / "biden_2.jpg", tmp_path / "biden.jpg")  # relative to the CSV
    manifest = write_csv(
        tmp_path / "people.csv",
        [
            f"{face_photos / 'obama_1.jpg'},obama,,",
            "biden.jpg,biden,1,",
            "cat.png,kitty,,",
            f"{face_photos / 'obama_2.jpg'},../x,,",
            "missing.jpg,ghost,,",
            f"{face_photos / 'obama_3.jpg'},Obama,,",  # a name on two rows: one person, two photos
            f"{face_photos / 'obama_4.jpg'},ann,two,",
            f"{face_photos / 'obama_4.jpg'},bea,,dreambooth",
            f"{face_photos / 'obama_4.jpg'},cyd,,celebbasis",
            f"{face_photos / 'obama_4.jpg'},dee,0,",
            f"{face_photos / 'obama_4.jpg'},eve,3,",
        ],
    )
    result = learn("--from", str(manifest), "--steps", "2", "--parallel", "2", "--json", *learn_args)
    assert result.exit_code == 1, result.output
    rows = {o["name"]: o for o in json.loads(result.stdout)}
    lines = [o["line"] for o in rows.values()]  # every person, in manifest order; obama's 2nd photo: line 7
    assert lines == [2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    assert {n for n, o in rows.items() if o["status"] == "learned"} == {"obama", "biden", "cyd"}
    reasons = {n: o["reason"] for n, o in rows.items() if o["status"] == "failed"}
    assert "no face found" in reasons["kitty"]
    assert "invalid identity name" in reasons["../x"]
    assert "not found" in reasons["ghost"]
    assert "whole number" in reasons["ann"]
    assert "unknown method" in reasons["bea"]
    assert "face must be between 1 and 1000" in reasons["dee"] and "--face" not in reasons["dee"]
    assert "face 3 asked for" in reasons["eve"] and "has 1 face" in reasons["eve"]
    assert "face column" in reasons["eve"]  # the hint, in parentheses: the row's own way to fix it
    assert "7 of 10 rows failed" in result.stderr and "ignored" not in result.stderr
    assert len(IdentityStore().get("obama").settings["photos_sha256"]) == 2
    assert IdentityStore().names() == ["biden", "cyd", "obama"]
    assert IdentityStore().get("cyd").method == "celebbasis"  # the row's own method, learned alone
    info = IdentityStore().info("biden")
    assert info["settings"]["face_index"] == 1 and info["settings"]["steps"] == 2
    # the same manifest again: the stored rows now fail as taken, the store is untouched
    before = vectors("obama").copy()
    again = learn("--from", str(manifest), "--steps", "2", "--json", *learn_args)
    again_rows = {o["name"]: o for o in json.loads(again.stdout)}
    assert again.exit_code == 1 and "already exists" in again_rows["obama"]["reason"]
    np.testing.assert_array_equal(vectors("obama"), before)


def test_folder_manifest_names_by_stem_and_fails_a_bad_photo_alone(
    face_photos: Path, learn_args: list[str], tmp_path: Path
) -> None:
    folder = tmp_path / "people"
    folder.mkdir()
    shutil.copy(face_photos / "obama_1.jpg", folder / "barack.jpg")
    shutil.copy(face_photos / "biden_2.jpg", folder / "joe.JPG")
    (folder / "notes.txt").write_text("not a photo")
    from PIL import Image
    from skimage import data

    Image.fromarray(data.chelsea()).save(folder / "kitty.png")  # no face: fails alone
    result = learn("--from", str(folder), "--steps", "2", *learn_args)
    assert result.exit_code == 1, result.output
    table = {line.split()[1]: line for line in result.stdout.splitlines()[1:]}
    assert result.stdout.split()[:3] == ["line", "name", "outcome"] and list(table) == [
        "barack",
        "joe",
        "kitty",
    ]
    assert " learned " in table["barack"] and " learned " in table["joe"]
    assert " failed " in table["kitty"] and "no face found" in table["kitty"]
    assert "1 of 3 rows failed" in result.stderr
    assert IdentityStore().names() == ["barack", "joe"]


def test_a_group_whose_model_cannot_load_fails_alone(
    face_photos: Path, learn_args: list[str], tiny_model: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """Rows are grouped by method; Celeb Basis's default model (sd15) is not downloaded (offline), so its
    rows fail with that reason while the StableIdentity rows, on a local sd21, are learned."""
    (isolated_home / "config.toml").write_text(f'[presets.sd21]\ncandidates = ["{tiny_model}"]\n')
    manifest = write_csv(
        tmp_path / "mixed.csv",
        [f"{face_photos / 'obama_1.jpg'},ann,,celebbasis", f"{face_photos / 'biden_2.jpg'},bob,,"],
    )
    model_free = [a for a in learn_args if a not in ("--model", str(tiny_model))]
    result = learn("--from", str(manifest), "--steps", "2", "--json", *model_free)
    assert result.exit_code == 1, result.output
    ann, bob = json.loads(result.stdout)
    assert ann["status"] == "failed" and "could not load model 'sd15'" in ann["reason"]
    assert bob["status"] == "learned"
    assert "1 of 2 rows failed" in result.stderr and IdentityStore().names() == ["bob"]


def test_bad_manifests_and_flags_are_refused(
    learn_args: list[str], tmp_path: Path, face_photos: Path
) -> None:
    photo = str(face_photos / "obama_1.jpg")
    (tmp_path / "cols.csv").write_text("file,person\na.jpg,ann\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.csv").write_text("\n")
    cases = {
        "has no photo or name column": ["--from", str(tmp_path / "cols.csv")],
        "lists no photos": ["--from", str(tmp_path / "empty")],
        "blank.csv lists no photos": ["--from", str(tmp_path / "blank.csv")],
        "is a photo, not a manifest": ["--from", photo],
        "manifest": ["--from", str(tmp_path / "nope.csv")],
        "takes the photos and names from its rows": [photo, "--from", str(tmp_path / "cols.csv")],
        "no --name given": [photo],
        "--parallel applies to --from batches": [photo, "--name", "ann", "--parallel", "2"],
        "--parallel must be between 1 and 64": ["--from", str(tmp_path / "cols.csv"), "--parallel", "0"],
    }
    (tmp_path / "cols.csv").write_text("file,person\na.jpg,ann\n")
    typo = tmp_path / "typo.csv"  # a misspelt optional column is ignored with a warning, not silently
    typo.write_text(f"photo,name,methd\n{photo},ann,celebbasis\n")
    warned = learn("--from", str(typo), "--parallel", "0", *learn_args)
    assert "typo.csv: column methd ignored (sid reads photo, name, face, method)" in warned.stderr
    for needle, args in cases.items():
        if needle.startswith("--parallel must"):  # a readable manifest, so the flag is what fails
            args[1] = str(write_csv(tmp_path / "ok.csv", [f"{photo},ann,,"]))
        one_error(learn(*args, "--quiet", *learn_args), needle)
    assert IdentityStore().names() == []


@pytest.mark.parametrize("model", ["tiny_model", "tiny_sdxl_model", "tiny_flux_model"])
def test_parallel_learning_equals_learning_each_alone(
    face_photos: Path, learn_args: list[str], tmp_path: Path, model: str, request
) -> None:
    """Two identities in one batch of 2 get the vectors each gets alone with the same seed (fp32 CPU),
    on one text encoder, on SDXL's two and on FLUX's CLIP + T5."""
    photos = {"ann": face_photos / "obama_1.jpg", "bob": face_photos / "biden_2.jpg"}
    manifest = write_csv(tmp_path / "two.csv", [f"{p},{n},," for n, p in photos.items()])
    folder = str(request.getfixturevalue(model))
    knobs = ["--steps", "5", "--seed", "3", "--lr", "1e-3", *learn_args, "--model", folder]
    if model in ("tiny_sdxl_model", "tiny_flux_model"):
        knobs += ["--resolution", "64"]
    batched = learn("--from", str(manifest), "--parallel", "2", *knobs)
    assert batched.exit_code == 0, batched.output
    assert "(2 per step)" in batched.stderr  # both identities shared each step
    store = IdentityStore()
    for name, photo in photos.items():
        alone = learn(str(photo), "--name", f"{name}_alone", "--quiet", *knobs)
        assert alone.exit_code == 0, alone.output
        a, b = store.get(name).vectors, store.get(f"{name}_alone").vectors
        assert list(a) == list(b) and len(a) == (1 if model == "tiny_model" else 2)  # a slot per encoder
        for slot in a:
            np.testing.assert_allclose(a[slot], b[slot], rtol=1e-4, atol=1e-5)
    ann, bob = (next(iter(store.get(n).vectors.values())) for n in ("ann", "bob"))
    assert not np.allclose(ann, bob, atol=1e-3)  # yet each its own identity
    assert store.get("ann").settings == store.get("ann_alone").settings


def test_stacked_mappers_clip_each_identity_as_alone() -> None:
    import torch

    from sid.methods import StableIdentityMapper, StackedMappers

    torch.manual_seed(0)
    mean, std = torch.randn(2, 8), torch.rand(2, 8) + 0.5
    mappers = [StableIdentityMapper(6, 8, mean, std) for _ in range(3)]
    stacked = StackedMappers(mappers)
    faces = torch.randn(3, 2, 6)
    scales = (1.0, 1e-4, 30.0)  # big, small and in-between gradients: clipped, untouched, clipped
    out = stacked(faces)
    sum(s * o.square().sum() for s, o in zip(scales, out, strict=True)).backward()
    stacked.clip_grad_norm_(0.5)
    for k, (mapper, scale) in enumerate(zip(mappers, scales, strict=True)):
        torch.testing.assert_close(out[k], mapper(faces[k]))
        (scale * mapper(faces[k]).square().sum()).backward()
        torch.nn.utils.clip_grad_norm_(mapper.parameters(), 0.5)
        for p, q in zip(mapper.parameters(), stacked.stacked, strict=True):
            torch.testing.assert_close(q.grad[k], p.grad)


def test_interrupted_batch_keeps_finished_identities_and_resumes(
    face_photos: Path, offline_cfg, isolated_home: Path
) -> None:
    from sid.manifest import Row
    from sid.many import learn_many
    from sid.train import learn as learn_one

    cfg = offline_cfg(steps=4, checkpoint_every=2, log_every=1)
    names = {"ann": "obama_1.jpg", "bob": "biden_2.jpg", "cyd": "obama_2.jpg"}
    rows = [Row(i, face_photos / f, n) for i, (n, f) in enumerate(names.items(), start=2)]

    def stop_in_second_chunk(done: int, total: int, loss: float) -> None:
        if done > 2 * 4 + 2:  # the first chunk (2 x 4 steps) stored, cyd checkpointed at step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        learn_many(rows, cfg, parallel=2, progress=stop_in_second_chunk)
    assert IdentityStore().names() == ["ann", "bob"]
    (ckpt,) = (isolated_home / "partial").glob("*.safetensors")
    outcomes = learn_many(rows, cfg, parallel=2, resume=True)
    assert [(o.name, o.status, o.resumed_from) for o in outcomes] == [
        ("ann", "skipped", 0),
        ("bob", "skipped", 0),
        ("cyd", "learned", 2),  # from its checkpoint
    ]
    assert not ckpt.exists() and IdentityStore().names() == ["ann", "bob", "cyd"]
    # the resumed identity is the one an uninterrupted run learns
    learn_one([face_photos / names["cyd"]], ["cyd_whole"], cfg)
    np.testing.assert_allclose(vectors("cyd"), vectors("cyd_whole"), rtol=1e-4, atol=1e-5)


def test_identities_learned_but_not_yet_stored_survive_a_kill(
    face_photos: Path, offline_cfg, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a launcher rank 0 stores every identity at the end: one killed after a chunk (or a Celeb
    Basis row) finished but before it was stored resumes without training a step, to the same vectors."""
    from sid import many
    from sid.manifest import Row

    cfg = offline_cfg(steps=3)
    rows = [
        Row(2, face_photos / "obama_1.jpg", "ann"),
        Row(3, face_photos / "biden_2.jpg", "bob"),
        Row(4, face_photos / "obama_2.jpg", "cyd", method="celebbasis"),
    ]
    finished: dict[str, np.ndarray] = {}

    def killed_before_storing(store, learned, force):
        finished[learned.identity.name] = next(iter(learned.identity.vectors.values()))
        if len(finished) == len(rows):
            raise KeyboardInterrupt  # every identity learned, none stored

    with monkeypatch.context() as m:
        m.setattr(many, "store_learned", killed_before_storing)
        with pytest.raises(KeyboardInterrupt):
            many.learn_many(rows, cfg, parallel=2)
    assert IdentityStore().names() == [] and len(list((isolated_home / "partial").glob("*"))) == 3
    trained: list[int] = []
    outcomes = many.learn_many(
        rows, cfg, parallel=2, resume=True, progress=lambda d, t, loss: trained.append(d)
    )
    assert [(o.status, o.resumed_from) for o in outcomes] == [("learned", 3)] * 3 and trained == []
    for name, vec in finished.items():
        np.testing.assert_array_equal(vectors(name), vec)
    assert not list((isolated_home / "partial").glob("*"))  # each checkpoint dropped once stored


def test_two_processes_learn_a_manifest_once(
    face_photos: Path, learn_args: list[str], tmp_path: Path
) -> None:
    """torchrun --nproc-per-node 2 (gloo on CPU): each rank learns its share, rank 0 stores every one."""
    names = {"ann": "obama_1.jpg", "bob": "biden_2.jpg", "cyd": "obama_2.jpg"}
    rows = [f"{face_photos / f},{n},," for n, f in names.items()] + [f"{face_photos / 'obama_3.jpg'},a,,"]
    manifest = write_csv(tmp_path / "people.csv", rows)
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    args += ["-m", "sid", "learn", "--from", str(manifest), "--steps", "2", *learn_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0  # the bad row ("a" is a common prompt word) fails alone
    table = done.stdout.splitlines()
    assert [line.split()[0] for line in table] == ["line", "2", "3", "4", "5"], done.stdout  # one summary
    assert sum(" learned " in line for line in table) == 3
    assert "common prompt word" in done.stdout and done.stderr.count("1 of 4 rows failed") == 1
    assert IdentityStore().names() == ["ann", "bob", "cyd"]
    assert len({IdentityStore().get(n).photo_sha256 for n in names}) == 3  # each from its own photo


def test_a_rank_whose_peer_stopped_says_so(face_photos: Path, learn_args: list[str], tmp_path: Path) -> None:
    """Rank 0 refuses the batch (its store cannot be created) before sharing the rows: it prints that one
    error, and rank 1 says it lost its peers rather than 'unexpected RuntimeError ... a bug in sid'."""
    manifest = write_csv(tmp_path / "people.csv", [f"{face_photos / 'obama_1.jpg'},ann,,"])
    # torchrun stops the other ranks when it sees one fail; looking every 3 s (not 0.1 s) leaves rank 1
    # the time to report its lost peer on a slow machine, so the test does not race the launcher
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    args += [
        "--monitor-interval",
        "3",
        "-m",
        "sid",
        "learn",
        "--from",
        str(manifest),
        "--steps",
        "2",
        *learn_args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SID_HOME": str(manifest / "home")}  # under a file
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "could not create the store folder" in "".join(errors), done.stderr
    assert any("rank 1 lost the other processes" in line for line in errors), done.stderr
    assert "a bug in sid" not in done.stderr and "MarkupError" not in done.stderr


def test_a_name_on_several_rows_or_a_sub_folder_is_one_person(
    face_photos: Path, learn_args: list[str], tmp_path: Path
) -> None:
    from sid.manifest import read_rows
    from sid.photos import photo_sha256

    folder = tmp_path / "people"
    (folder / "barack").mkdir(parents=True)
    for i in (1, 2):
        shutil.copy(face_photos / f"obama_{i}.jpg", folder / "barack" / f"{i}.jpg")
    shutil.copy(face_photos / "biden_2.jpg", folder / "joe.jpg")
    assert [(r.line, r.name) for r in read_rows(folder)] == [(1, "joe"), (2, "barack"), (3, "barack")]
    result = learn("--from", str(folder), "--steps", "2", "--json", *learn_args)
    assert result.exit_code == 0, result.output
    assert [(o["name"], o["status"]) for o in json.loads(result.stdout)] == [
        ("joe", "learned"),
        ("barack", "learned"),
    ]
    expected = [photo_sha256((folder / "barack" / f"{i}.jpg").read_bytes()) for i in (1, 2)]
    assert IdentityStore().get("barack").settings["photos_sha256"] == expected

    manifest = write_csv(
        tmp_path / "people.csv",
        [f"{face_photos / 'obama_3.jpg'},ann,,", f"{face_photos / 'obama_4.jpg'},ann,,celebbasis"],
    )
    mixed = learn("--from", str(manifest), "--steps", "2", "--json", *learn_args)
    (row,) = json.loads(mixed.stdout)
    assert mixed.exit_code == 1 and "the rows of 'ann' (lines 2, 3) name different methods" in row["reason"]
