"""The celebrity-name prior: where well-known people's names sit in a text encoder's input-embedding space.

Both methods land a new person among celebrities rather than anywhere in the 49k-word vocabulary:
StableIdentity scales its output by the per-dimension std of celebrity name embeddings and shifts it by
their mean (AdaIN), Celeb Basis spans it with their principal directions. Each celebrity contributes
two vectors, slot 0 its first name and slot 1 its last name, so only names whose two words are each a
single token of the model's tokenizer are usable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any

import torch

from sid.errors import BadInput

CELEBS_FILE = "celebs.txt"
MIN_NAMES = 20  # below this the per-dimension statistics are noise, not a prior
BASIS_SIZE = 512  # Celeb Basis keeps 512 principal directions per slot


def load_celeb_names() -> list[str]:
    """The packaged celebrity names, one per line, first occurrence kept (case-insensitive)."""
    text = resources.files("sid.data").joinpath(CELEBS_FILE).read_text(encoding="utf-8")
    seen: set[str] = set()
    names = []
    for line in text.splitlines():
        name = " ".join(line.split())
        if name and not name.startswith("#") and name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
    return names


def celeb_token_ids(tokenizer: Any, names: list[str]) -> tuple[torch.Tensor, list[str]]:
    """(n, 2) token ids of the names whose first and last name are each one token, and those names.

    Names of more or fewer than two words are dropped: the prior has exactly two slots.
    """
    pairs = [(name, name.split()) for name in names]
    pairs = [(name, words) for name, words in pairs if len(words) == 2]
    words = [w for _, two in pairs for w in two]
    ids = tokenizer(words, add_special_tokens=False).input_ids if words else []  # one call: 2 per name
    rows, kept = [], []
    for (name, _), first, last in zip(pairs, ids[0::2], ids[1::2], strict=True):
        if len(first) == 1 and len(last) == 1:
            rows.append([first[0], last[0]])
            kept.append(name)
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 2), kept


def celeb_embeddings(token_embedding_weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(n, 2, d) raw rows of the (V, d) input token-embedding matrix (no position embedding), as both use."""
    return token_embedding_weight[ids]


def adain_stats(emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slot, per-dimension mean (2, d) and unbiased std (2, d) over the n celebrities of (n, 2, d)."""
    return emb.mean(dim=0), emb.std(dim=0, unbiased=True)


def celeb_basis(emb: torch.Tensor, p: int = BASIS_SIZE) -> torch.Tensor:
    """(2, 1 + p', d): per slot, row 0 the mean and rows 1.. unit principal directions (PCA by SVD).

    p' = min(p, n - 1, d): centred data of n points has rank at most n - 1. Repeated first names make
    a slot's rank lower still; directions past a slot's numerical rank are zero rows rather than the
    arbitrary null-space vectors an SVD returns there, so mean + coefficients @ directions always stays
    in the celebrities' affine hull. Directions are not scaled by their singular values.
    """
    n, _, d = emb.shape
    keep = min(p, n - 1, d)
    slots = []
    for k in range(emb.shape[1]):
        x = emb[:, k].double()  # (n, d), float64: SVD of near-duplicate rows needs the precision
        mean = x.mean(dim=0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)  # s (min(n, d),), vh (min(n, d), d)
        rank = int((s > s.max() * max(n, d) * torch.finfo(torch.float32).eps).sum())
        directions = vh[:keep].clone()
        directions[rank:] = 0.0
        slots.append(torch.cat([mean[None], directions]))
    return torch.stack(slots).to(emb.dtype)


@dataclass(frozen=True)
class CelebPrior:
    """The celebrities kept for one tokenizer and text encoder, their embeddings and statistics."""

    names: list[str]
    ids: torch.Tensor  # (n, 2) long
    emb: torch.Tensor  # (n, 2, d) float32, CPU

    @property
    def token_dim(self) -> int:
        return self.emb.shape[-1]

    @cached_property
    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return adain_stats(self.emb)

    @property
    def mean(self) -> torch.Tensor:
        """(2, d) per-slot mean, StableIdentity's AdaIN shift."""
        return self._stats[0]

    @property
    def std(self) -> torch.Tensor:
        """(2, d) per-slot unbiased std, StableIdentity's AdaIN scale."""
        return self._stats[1]

    @cached_property
    def basis(self) -> torch.Tensor:
        """(2, 1 + p', d) Celeb Basis: mean then principal directions, per slot."""
        return celeb_basis(self.emb)


def build_prior(tokenizer: Any, text_encoder: Any, names: list[str] | None = None) -> CelebPrior:
    """The celebrity prior of a model's tokenizer and text encoder (fp32, CPU; the encoder is untouched)."""
    names = load_celeb_names() if names is None else names
    ids, kept = celeb_token_ids(tokenizer, names)
    if len(kept) < MIN_NAMES:
        raise BadInput(
            f"only {len(kept)} of {len(names)} celebrity names are two single tokens for this model's "
            f"tokenizer (at least {MIN_NAMES} are needed)",
            "use a Stable Diffusion model with its CLIP tokenizer (sd15, sd21)",
        )
    weight = text_encoder.get_input_embeddings().weight.detach().to("cpu", torch.float32)
    return CelebPrior(kept, ids, celeb_embeddings(weight, ids))
