"""The celebrity-name prior: the packaged names, their tokenization, AdaIN statistics and the PCA basis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sid.errors import BadInput
from sid.priors import (
    CelebPrior,
    adain_stats,
    build_prior,
    celeb_basis,
    celeb_embeddings,
    celeb_token_ids,
    load_celeb_names,
)
from sid.testing import find_bpe_vocab

needs_bpe = pytest.mark.skipif(find_bpe_vocab() is None, reason="no CLIP BPE vocabulary (open-clip-torch)")


def test_packaged_names_are_many_distinct_full_names():
    names = load_celeb_names()
    assert len(names) >= 650
    assert len({n.lower() for n in names}) == len(names)
    assert all(len(n.split()) >= 2 for n in names)


# -- statistics and basis on synthetic embeddings --------------------------------------------------
def test_adain_stats_match_numpy_unbiased():
    emb = torch.randn(30, 2, 16, dtype=torch.float64)
    mean, std = adain_stats(emb)
    assert mean.shape == std.shape == (2, 16)
    np.testing.assert_allclose(mean.numpy(), emb.numpy().mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(std.numpy(), emb.numpy().std(axis=0, ddof=1), atol=1e-12)


def test_celeb_embeddings_are_raw_rows():
    weight = torch.randn(100, 8)
    ids = torch.tensor([[3, 7], [50, 99]])
    emb = celeb_embeddings(weight, ids)
    assert emb.shape == (2, 2, 8)
    assert torch.equal(emb[1, 0], weight[50]) and torch.equal(emb[0, 1], weight[7])


def _reconstruct(basis: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    mean, directions = basis[:, 0], basis[:, 1:]  # (2, d), (2, p, d)
    coeffs = torch.einsum("nkd,kpd->nkp", emb - mean, directions)  # each celeb's own coefficients
    return mean + torch.einsum("nkp,kpd->nkd", coeffs, directions)


def test_basis_reconstructs_each_celebrity_when_p_is_n_minus_1():
    torch.manual_seed(0)
    emb = torch.randn(40, 2, 64)
    basis = celeb_basis(emb)  # p' = min(512, 39, 64) = 39
    assert basis.shape == (2, 40, 64)
    torch.testing.assert_close(basis[:, 0], emb.mean(0))
    directions = basis[:, 1:]
    gram = directions @ directions.transpose(1, 2)
    torch.testing.assert_close(gram, torch.eye(39).expand(2, 39, 39), atol=1e-5, rtol=0)
    torch.testing.assert_close(_reconstruct(basis, emb), emb, atol=1e-5, rtol=0)


def test_basis_is_capped_by_p_and_by_width():
    emb = torch.randn(100, 2, 16)
    assert celeb_basis(emb, p=10).shape == (2, 11, 16)
    full = celeb_basis(emb)  # p' = d: the directions span the whole space
    assert full.shape == (2, 17, 16)
    torch.testing.assert_close(_reconstruct(full, emb), emb, atol=1e-5, rtol=0)


def test_repeated_names_give_zero_directions_past_the_rank():
    torch.manual_seed(1)
    emb = torch.randn(12, 2, 32)
    emb[6:, 0] = emb[:6, 0]  # slot 0 (first names) has only 6 distinct vectors: rank 5 once centred
    basis = celeb_basis(emb)
    assert basis.shape == (2, 12, 32)
    norms = basis[:, 1:].norm(dim=-1)
    torch.testing.assert_close(norms[0, :5], torch.ones(5))
    assert torch.all(norms[0, 5:] == 0)
    torch.testing.assert_close(norms[1], torch.ones(11))
    torch.testing.assert_close(_reconstruct(basis, emb), emb, atol=1e-5, rtol=0)


# -- the real CLIP tokenizer -----------------------------------------------------------------------
@needs_bpe
def test_real_clip_tokenizer_keeps_hundreds_of_two_token_names():
    from sid.testing import clip_tokenizer

    tokenizer = clip_tokenizer()
    names = load_celeb_names()
    ids, kept = celeb_token_ids(tokenizer, names)
    print(f"{len(kept)} of {len(names)} names are two single CLIP tokens")  # 645 of 960 when written
    # StableIdentity kept 326 names, Celeb Basis used 646
    assert 326 <= len(kept) < len(names), len(kept)
    assert ids.shape == (len(kept), 2) and ids.dtype == torch.long
    assert "Tom Hanks" in kept and "Daniel Kaluuya" not in kept
    i = kept.index("Tom Hanks")
    assert ids[i].tolist() == tokenizer("tom hanks", add_special_tokens=False).input_ids


@needs_bpe
def test_only_two_word_names_of_single_tokens_survive():
    from sid.testing import clip_tokenizer

    ids, kept = celeb_token_ids(clip_tokenizer(), ["Tom Hanks", "Daniel Kaluuya", "Tom", "Tom Tom Hanks"])
    assert kept == ["Tom Hanks"] and ids.shape == (1, 2)
    empty, none = celeb_token_ids(clip_tokenizer(), ["Daniel Kaluuya"])
    assert none == [] and empty.shape == (0, 2)


@needs_bpe
def test_build_prior_reads_the_input_embeddings():
    from sid.testing import clip_tokenizer, tiny_text_encoder

    encoder = tiny_text_encoder(32)
    prior = build_prior(clip_tokenizer(), encoder)
    n = len(prior.names)
    assert isinstance(prior, CelebPrior) and n >= 326
    assert prior.emb.shape == (n, 2, 32) and prior.emb.dtype == torch.float32
    torch.testing.assert_close(prior.emb, encoder.get_input_embeddings().weight.detach()[prior.ids])
    assert prior.token_dim == 32
    assert prior.mean.shape == prior.std.shape == (2, 32)
    assert prior.basis.shape == (2, 1 + 32, 32)  # p' = min(512, n - 1, d) = d
    assert prior.emb.grad_fn is None  # a detached copy: training never touches the encoder


@needs_bpe
def test_build_prior_refuses_a_tokenizer_that_splits_the_names():
    from sid.testing import clip_tokenizer, tiny_text_encoder

    with pytest.raises(BadInput, match="celebrity names"):
        build_prior(clip_tokenizer(), tiny_text_encoder(32), names=["Tom Hanks", "Daniel Kaluuya"])
