"""One training loop: learning one identity is the K = 1 case of learning K (`sid learn --from`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sid.store import IdentityStore


@pytest.mark.parametrize("method", ["stableidentity", "celebbasis"])
def test_learning_alone_is_a_batch_of_one_bit_for_bit(
    face_photos: Path,
    tiny_model: Path,
    facepack: Path,
    tiny_vit: Path,
    tiny_parser: Path,
    monkeypatch,
    method,
) -> None:
    """`sid learn PHOTO` and a one-row `sid learn --from` run the same loop (``Learner.learn``, K = 1)
    and store the very same vectors, losses and settings, checkpoints along the way included."""
    from sid.manifest import Row
    from sid.many import learn_many
    from sid.train import LearnConfig, Learner, learn

    real, sizes = Learner.learn, []

    def counting(self, units, *args, **kwargs):
        sizes.append(len(units))
        return real(self, units, *args, **kwargs)

    monkeypatch.setattr(Learner, "learn", counting)
    offline = dict(face_models=str(facepack), vit_model=str(tiny_vit), face_parser=str(tiny_parser))
    cfg = LearnConfig(
        method=method,
        model=str(tiny_model),
        device="cpu",
        steps=4,
        seed=5,
        lr=1e-3,
        checkpoint_every=2,
        **offline,
    )
    photo = face_photos / "obama_1.jpg"
    learn([photo], ["alone"], cfg)
    (outcome,) = learn_many([Row(2, photo, "batched")], cfg, parallel=4)
    assert outcome.status == "learned", outcome
    assert sizes == [1, 1]  # both through the one loop, with one identity

    store = IdentityStore()
    alone, batched = store.get("alone"), store.get("batched")
    assert list(alone.vectors) == list(batched.vectors)
    for slot in alone.vectors:
        np.testing.assert_array_equal(alone.vectors[slot], batched.vectors[slot])
    assert alone.final_loss == batched.final_loss and alone.settings == batched.settings


def test_a_joint_group_is_one_unit_of_the_same_loop(
    face_photos: Path, tiny_model: Path, facepack: Path, monkeypatch
) -> None:
    """Celeb Basis's joint learning (one mapper, photos alternating step by step) is one unit of K = 1."""
    from sid.train import LearnConfig, Learner, learn

    real, units_seen = Learner.learn, []

    def recording(self, units, *args, **kwargs):
        units_seen.append([u.names for u in units])
        return real(self, units, *args, **kwargs)

    monkeypatch.setattr(Learner, "learn", recording)
    cfg = LearnConfig(
        method="celebbasis", model=str(tiny_model), device="cpu", steps=4, face_models=str(facepack)
    )
    result = learn([face_photos / "obama_1.jpg", face_photos / "biden_2.jpg"], ["ann", "bob"], cfg)
    assert units_seen == [[["ann", "bob"]]] and len(result.losses) == 4
    ann, bob = (IdentityStore().get(n).vectors["te32"] for n in ("ann", "bob"))
    assert not np.allclose(ann, bob)  # each photo its own averaged coefficients


def test_a_whole_step_graph_that_cannot_capture_learns_as_eagerly(
    face_photos: Path, tiny_model: Path, facepack: Path, tiny_vit: Path, tiny_parser: Path, monkeypatch
) -> None:
    """The loop's step as one function through ``sid.speed.capture_step`` (``cuda_graphs="step"``,
    forced on here: the CPU cannot capture): it warns once, learns eagerly, and stores bit for bit
    what the plain loop stores."""
    from sid.train import LearnConfig, Learner, learn

    offline = dict(face_models=str(facepack), vit_model=str(tiny_vit), face_parser=str(tiny_parser))
    cfg = LearnConfig(model=str(tiny_model), device="cpu", steps=4, seed=5, lr=1e-3, **offline)
    photo = face_photos / "obama_1.jpg"
    plain = learn([photo], ["plain"], cfg)
    monkeypatch.setattr(Learner, "graph_step", property(lambda self: True))
    with pytest.warns(RuntimeWarning, match="capture of the learn step failed") as caught:
        graphed = learn([photo], ["graphed"], cfg)
    assert len([w for w in caught if "learn step" in str(w.message)]) == 1
    assert graphed.losses == plain.losses and len(plain.losses) == 4
    store = IdentityStore()
    for slot, vectors in store.get("plain").vectors.items():
        np.testing.assert_array_equal(store.get("graphed").vectors[slot], vectors)
