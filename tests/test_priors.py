"""The celebrity-name prior: the packaged names, their tokenization, AdaIN statistics and the PCA basis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sid.errors import BadInput
from sid.priors import (
    PRIOR_LISTS,
    CelebPrior,
    adain_stats,
    build_prior,
    celeb_basis,
    first_two_tokens,
    load_names,
    tokens_by_position,
)
from sid.testing import find_bpe_vocab

needs_bpe = pytest.mark.skipif(find_bpe_vocab() is None, reason="no CLIP BPE vocabulary (open-clip-torch)")


def test_packaged_lists_are_the_papers():
    si = load_names(PRIOR_LISTS["stableidentity"].file)
    cb = load_names(PRIOR_LISTS["celebbasis"].file)
    assert (len(si), len(cb)) == (326, 691)
    assert si[0] == "Adam Savage" and cb[0] == "Adam Sandler"
    from importlib import resources

    data = resources.files("sid.data")
    notice = data.joinpath("NOTICE.md").read_text(encoding="utf-8")
    for spec in PRIOR_LISTS.values():
        assert spec.file in notice  # every shipped list has its origin and licence stated
    for licence in ("LICENSE.stableidentity", "LICENSE.celebbasis"):
        assert data.joinpath(licence).read_text(encoding="utf-8").startswith("MIT License")


# -- statistics and basis on synthetic embeddings --------------------------------------------------
def test_adain_stats_match_numpy_unbiased_per_slot():
    slots = [torch.randn(30, 16, dtype=torch.float64), torch.randn(12, 16, dtype=torch.float64)]
    mean, std = adain_stats(slots)
    assert mean.shape == std.shape == (2, 16)
    for k, emb in enumerate(slots):
        np.testing.assert_allclose(mean[k].numpy(), emb.numpy().mean(axis=0), atol=1e-12)
        np.testing.assert_allclose(std[k].numpy(), emb.numpy().std(axis=0, ddof=1), atol=1e-12)


def _slots(emb: torch.Tensor) -> list[torch.Tensor]:
    return [emb[:, 0], emb[:, 1]]


def _reconstruct(basis: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """Each celebrity of (n, 2, d) projected onto its slot's basis and back."""
    mean, directions = basis[:, 0], basis[:, 1:]  # (2, d), (2, p, d)
    coeffs = torch.einsum("nkd,kpd->nkp", emb - mean, directions)  # each celeb's own coefficients
    return mean + torch.einsum("nkp,kpd->nkd", coeffs, directions)


def test_basis_is_the_first_p_right_singular_vectors_of_a_full_fp32_svd():
    """Celeb Basis's code: mean row, then ``torch.svd(x - mean, some=False)``'s V transposed, first p rows."""
    torch.manual_seed(0)
    emb = torch.randn(40, 2, 64)
    basis = celeb_basis(_slots(emb), p=50)  # 50 < d = 64 directions, though the rank is only 39
    assert basis.shape == (2, 51, 64) and basis.dtype == torch.float32
    for k in range(2):
        x = emb[:, k]
        mean = x.mean(dim=0, keepdim=True)
        _, _, v = torch.svd(x - mean, some=False)  # the official call, (d, d)
        torch.testing.assert_close(basis[k], torch.cat([mean, v.t()[:50]]), atol=0, rtol=0)
    gram = basis[:, 1:] @ basis[:, 1:].transpose(1, 2)
    torch.testing.assert_close(gram, torch.eye(50).expand(2, 50, 50), atol=1e-5, rtol=0)
    torch.testing.assert_close(_reconstruct(basis[:, :40], emb), emb, atol=1e-5, rtol=0)  # 39 span it


def test_basis_is_capped_by_p_and_by_width():
    emb = torch.randn(100, 2, 16)
    assert celeb_basis(_slots(emb), p=10).shape == (2, 11, 16)
    full = celeb_basis(_slots(emb))  # min(512, d): the directions span the whole space
    assert full.shape == (2, 17, 16)
    torch.testing.assert_close(_reconstruct(full, emb), emb, atol=1e-5, rtol=0)


def test_repeated_rows_count_and_directions_past_the_rank_are_kept():
    torch.manual_seed(1)
    emb = torch.randn(12, 2, 32)
    emb[6:, 0] = emb[0, 0]  # slot 0 repeats its first vector 6 times: 6 distinct, rank 5 once centred
    basis = celeb_basis(_slots(emb))
    assert basis.shape == (2, 33, 32)  # every slot min(512, d) directions, as the official full SVD
    torch.testing.assert_close(basis[:, 1:].norm(dim=-1), torch.ones(2, 32))
    centred = emb[:, 0] - emb[:, 0].mean(0)
    past = centred @ basis[0, 6:].T  # directions past the rank: orthogonal to every celebrity
    assert past.abs().max() < 1e-4 and (centred @ basis[0, 1:6].T).abs().max() > 0.1
    torch.testing.assert_close(_reconstruct(basis, emb), emb, atol=1e-5, rtol=0)
    once = celeb_basis([emb[:6, 0], emb[:, 1]])  # without the repeats: the same span, but the
    assert not torch.allclose(basis[0, 0], once[0, 0], atol=1e-3)  # repeats move the mean and
    assert not torch.allclose(basis[0, 1:6].abs(), once[0, 1:6].abs(), atol=1e-3)  # the directions


# -- the real CLIP tokenizer -----------------------------------------------------------------------
@needs_bpe
def test_all_326_stableidentity_names_are_two_single_clip_tokens():
    from sid.testing import clip_tokenizer

    tokenizer = clip_tokenizer()
    names = load_names(PRIOR_LISTS["stableidentity"].file)
    for name in names:
        words = name.split()
        pieces = [tokenizer(w, add_special_tokens=False).input_ids for w in words]
        assert len(words) == 2 and all(len(p) == 1 for p in pieces), (name, pieces)
    ids, kept = first_two_tokens(tokenizer, names)
    assert kept == names and ids.shape == (326, 2)
    i = names.index("Tom Hanks")
    assert ids[i].tolist() == tokenizer("tom hanks", add_special_tokens=False).input_ids


@needs_bpe
def test_first_two_tokens_are_bpe_positions_1_and_2():
    from sid.testing import clip_tokenizer

    tokenizer = clip_tokenizer()
    ids, kept = first_two_tokens(tokenizer, ["Daniel Kaluuya", "Tom", "Tom Tom Hanks"])
    assert kept == ["Daniel Kaluuya", "Tom Tom Hanks"]  # "Tom" alone has no second token
    for row, name in zip(ids.tolist(), kept, strict=True):
        assert row == tokenizer(name).input_ids[1:3]  # the papers' code: tokens[:, 1:3] after BOS
    empty, none = first_two_tokens(tokenizer, ["Tom"])
    assert none == [] and empty.shape == (0, 2)


@needs_bpe
def test_build_prior_per_method():
    from sid.testing import clip_tokenizer, tiny_text_encoder

    tokenizer, encoder = clip_tokenizer(), tiny_text_encoder(32)
    weight = encoder.get_input_embeddings().weight.detach()
    si = build_prior(tokenizer, encoder, "stableidentity")
    assert isinstance(si, CelebPrior) and si.slot_sizes == [326, 326] and len(si.names) == 326
    ids, _ = first_two_tokens(tokenizer, si.names)
    torch.testing.assert_close(si.slots[1], weight[ids[:, 1]])  # raw input rows of the last names
    assert si.mean.shape == si.std.shape == (2, 32) and si.token_dim == 32
    assert si.slots[0].grad_fn is None  # a detached copy: training never touches the encoder

    cb = build_prior(tokenizer, encoder, "celebbasis")
    assert cb.slot_sizes == [646, 638] and len(cb.names) == 646  # the official rows, repeats included
    assert cb.names == sorted(set(load_names(PRIOR_LISTS["celebbasis"].file)))
    columns, _ = tokens_by_position(tokenizer, cb.names)
    for k in range(2):  # every name's token at BPE position k, in the sorted names' order
        torch.testing.assert_close(cb.slots[k], weight[columns[k]])
        assert len(set(columns[k].tolist())) < cb.slot_sizes[k]  # tokens repeat (first names most)
    assert cb.basis.shape == (2, 1 + 32, 32)  # min(512, d) directions per slot
    assert cb.describe() == {
        "file": "celebbasis_wiki_names_v2.txt",
        "names": 646,
        "slot_sizes": [646, 638],
        "pieces": "first two tokens",
    }
    print("Celeb Basis prior:", cb.describe())


def test_t5_prior_fills_the_slots_with_each_words_first_piece():
    """FLUX's T5 (SentencePiece): slot k holds the first piece of the name's word k; one-word names are
    dropped, a bare word marker is skipped, and the identity records the rule with the counts."""
    from sid.priors import WORD_PIECES, first_pieces_of_words, is_sentencepiece
    from sid.testing import clip_tokenizer, t5_tokenizer, tiny_t5_encoder

    tokenizer, encoder = t5_tokenizer(), tiny_t5_encoder()
    assert is_sentencepiece(tokenizer) and not is_sentencepiece(clip_tokenizer())
    weight = encoder.get_input_embeddings().weight.detach()
    names = load_names(PRIOR_LISTS["stableidentity"].file)
    si = build_prior(tokenizer, encoder, "stableidentity")
    assert si.pieces == WORD_PIECES and si.slot_sizes == [len(si.names)] * 2 and len(si.names) > 300
    assert si.describe()["pieces"] == WORD_PIECES and si.token_dim == encoder.config.d_model
    bare = tokenizer.convert_tokens_to_ids("\u2581")
    for j, name in enumerate(si.names[:50]):
        for k, word in enumerate(name.split()[:2]):
            first = next(i for i in tokenizer(word, add_special_tokens=False).input_ids if i != bare)
            torch.testing.assert_close(si.slots[k][j], weight[first])
    ids, kept = first_pieces_of_words(tokenizer, ["Cher", "Tom Hanks", "  "])
    assert kept == ["Tom Hanks"] and ids.shape == (1, 2)
    cb = build_prior(tokenizer, encoder, "celebbasis")
    cb_ids, cb_kept = first_pieces_of_words(
        tokenizer, sorted(set(load_names(PRIOR_LISTS["celebbasis"].file)))
    )
    assert (
        cb.names == cb_kept and cb.slot_sizes == [len(cb_kept)] * 2
    )  # as its code: every name, repeats kept
    assert len(set(cb_ids[:, 0].tolist())) < len(cb_kept)  # first names' pieces repeat
    assert len(names) == 326


@needs_bpe
def test_build_prior_refuses_a_tokenizer_that_gives_too_few_names():
    from sid.testing import clip_tokenizer, tiny_text_encoder

    with pytest.raises(BadInput, match="celebrity names"):
        build_prior(clip_tokenizer(), tiny_text_encoder(32), names=["Tom Hanks", "Daniel Kaluuya"])
