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
    distinct_in_order,
    first_two_tokens,
    load_names,
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


def test_distinct_in_order_keeps_first_appearances():
    assert distinct_in_order(torch.tensor([5, 3, 5, 9, 3])).tolist() == [5, 3, 9]


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


def test_basis_reconstructs_each_celebrity_when_p_is_n_minus_1():
    torch.manual_seed(0)
    emb = torch.randn(40, 2, 64)
    basis = celeb_basis(_slots(emb))  # p' = min(512, 39, 64) = 39
    assert basis.shape == (2, 40, 64)
    torch.testing.assert_close(basis[:, 0], emb.mean(0))
    directions = basis[:, 1:]
    gram = directions @ directions.transpose(1, 2)
    torch.testing.assert_close(gram, torch.eye(39).expand(2, 39, 39), atol=1e-5, rtol=0)
    torch.testing.assert_close(_reconstruct(basis, emb), emb, atol=1e-5, rtol=0)


def test_basis_is_capped_by_p_and_by_width():
    emb = torch.randn(100, 2, 16)
    assert celeb_basis(_slots(emb), p=10).shape == (2, 11, 16)
    full = celeb_basis(_slots(emb))  # p' = d: the directions span the whole space
    assert full.shape == (2, 17, 16)
    torch.testing.assert_close(_reconstruct(full, emb), emb, atol=1e-5, rtol=0)


def test_repeated_names_give_zero_directions_past_the_rank():
    torch.manual_seed(1)
    emb = torch.randn(12, 2, 32)
    emb[6:, 0] = emb[:6, 0]  # slot 0 (first names) has only 6 distinct vectors: rank 5 once centred
    basis = celeb_basis(_slots(emb))
    assert basis.shape == (2, 12, 32)
    norms = basis[:, 1:].norm(dim=-1)
    torch.testing.assert_close(norms[0, :5], torch.ones(5))
    assert torch.all(norms[0, 5:] == 0)
    torch.testing.assert_close(norms[1], torch.ones(11))
    torch.testing.assert_close(_reconstruct(basis, emb), emb, atol=1e-5, rtol=0)


def test_slots_of_different_sizes_are_padded_with_zero_directions():
    torch.manual_seed(2)
    small, large = torch.randn(6, 32), torch.randn(20, 32)
    basis = celeb_basis([small, large])  # p' = max(5, 19) = 19
    assert basis.shape == (2, 20, 32)
    norms = basis[:, 1:].norm(dim=-1)
    torch.testing.assert_close(norms[0, :5], torch.ones(5))
    assert torch.all(norms[0, 5:] == 0)
    torch.testing.assert_close(norms[1], torch.ones(19))
    coeffs = (small - basis[0, 0]) @ basis[0, 1:].T  # the small slot still reconstructs exactly
    torch.testing.assert_close(basis[0, 0] + coeffs @ basis[0, 1:], small, atol=1e-5, rtol=0)


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
    names = load_names(PRIOR_LISTS["celebbasis"].file)
    all_ids, kept = first_two_tokens(tokenizer, names)
    for k in range(2):  # each slot: the distinct tokens at that BPE position, no repeats
        assert cb.slot_sizes[k] == len(set(all_ids[:, k].tolist())) < len(kept)
    assert cb.slot_sizes[0] < cb.slot_sizes[1]  # first names repeat more than last names
    assert cb.basis.shape == (2, 1 + 32, 32)  # p' = min(512, n_k - 1, d) = d
    assert cb.describe() == {
        "file": "celebbasis_wiki_names_v2.txt",
        "names": len(kept),
        "slot_sizes": cb.slot_sizes,
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
    all_ids, _ = first_pieces_of_words(tokenizer, load_names(PRIOR_LISTS["celebbasis"].file))
    assert cb.slot_sizes == [len(set(all_ids[:, k].tolist())) for k in range(2)]
    assert len(names) == 326


@needs_bpe
def test_build_prior_refuses_a_tokenizer_that_gives_too_few_names():
    from sid.testing import clip_tokenizer, tiny_text_encoder

    with pytest.raises(BadInput, match="celebrity names"):
        build_prior(clip_tokenizer(), tiny_text_encoder(32), names=["Tom Hanks", "Daniel Kaluuya"])
