"""The celebrity-name prior: where well-known people's names sit in a text encoder's input-embedding space.

Both methods land a new person among celebrities rather than anywhere in the 49k-word vocabulary:
StableIdentity scales its output by the per-dimension std of celebrity name embeddings and shifts it by
their mean (AdaIN), Celeb Basis spans it with their principal directions. Each method uses its own
paper's list (``sid/data``, MIT, see NOTICE.md) the way its official code does: slot 0 is the first
BPE token of each name, slot 1 the second. StableIdentity's 326 names are each two single tokens
(first and last name), kept as pairs; Celeb Basis's 691 names give each slot the distinct tokens at
that position, so its slots hold different numbers of vectors.

A SentencePiece tokenizer (FLUX's T5) splits words into pieces that each open with the word marker
"▁", and the identity's two added tokens stand for two whole words. There, slot k is the first
piece of word k of the name (first name, last name): the piece that carries the word's start, as
CLIP's single-token names do. Names of fewer than two words are dropped; the rest are kept as pairs
or per-slot distinct pieces as the method says.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any

import torch

from sid.errors import BadInput

MIN_NAMES = 20  # below this the per-dimension statistics are noise, not a prior
BASIS_SIZE = 512  # Celeb Basis keeps 512 principal directions per slot
NUM_SLOTS = 2  # first and second name token
WORD_MARK = "\u2581"  # SentencePiece's word-start marker
FIRST_TOKENS, WORD_PIECES = "first two tokens", "first piece of each of the first two words"


@dataclass(frozen=True)
class PriorList:
    """A packaged name list and how its method turns it into per-slot token embeddings."""

    file: str
    distinct_per_slot: bool  # True: each slot keeps its distinct tokens (Celeb Basis); False: name pairs


PRIOR_LISTS: dict[str, PriorList] = {
    "stableidentity": PriorList("stableidentity_celeb_names.txt", distinct_per_slot=False),
    "celebbasis": PriorList("celebbasis_wiki_names_v2.txt", distinct_per_slot=True),
}


def load_names(file: str) -> list[str]:
    """The packaged names of ``file``, one per line, as written (blank lines and # comments skipped)."""
    text = resources.files("sid.data").joinpath(file).read_text(encoding="utf-8")
    names = (" ".join(line.split()) for line in text.splitlines())
    return [n for n in names if n and not n.startswith("#")]


def first_two_tokens(tokenizer: Any, names: list[str]) -> tuple[torch.Tensor, list[str]]:
    """(n, 2) ids of each name's first two BPE tokens (positions 1 and 2 after BOS), and those names.

    Both papers' code takes exactly these positions. Names of a single token have no second one and
    are dropped.
    """
    ids = tokenizer(names, add_special_tokens=False).input_ids if names else []
    kept = [(name, row[:NUM_SLOTS]) for name, row in zip(names, ids, strict=True) if len(row) >= NUM_SLOTS]
    rows = [row for _, row in kept]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, NUM_SLOTS), [name for name, _ in kept]


def first_pieces_of_words(tokenizer: Any, names: list[str]) -> tuple[torch.Tensor, list[str]]:
    """(n, 2) ids of the first piece of each name's first and second word, and those names.

    Each word is tokenized alone (SentencePiece marks it as a word start either way); a bare "▁"
    piece, which SentencePiece emits before a word whose marked form is not in its vocabulary, is
    skipped so the slot holds the word's own first piece.
    """
    kept = [(name, name.split()[:NUM_SLOTS]) for name in names if len(name.split()) >= NUM_SLOTS]
    words = [w for _, pair in kept for w in pair]
    pieces = tokenizer(words, add_special_tokens=False).input_ids if words else []
    bare = tokenizer.convert_tokens_to_ids(WORD_MARK)
    firsts = [next((i for i in row if i != bare), None) for row in pieces]
    rows = [firsts[2 * j : 2 * j + 2] for j in range(len(kept))]
    good = [(name, row) for (name, _), row in zip(kept, rows, strict=True) if None not in row]
    ids = torch.tensor([row for _, row in good], dtype=torch.long).reshape(-1, NUM_SLOTS)
    return ids, [name for name, _ in good]


def is_sentencepiece(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` marks word starts with "▁" (SentencePiece: T5), not CLIP's word ends."""
    return any(t.startswith(WORD_MARK) for t in tokenizer.tokenize("a person"))


def distinct_in_order(ids: torch.Tensor) -> torch.Tensor:
    """The distinct values of a 1-d id tensor, in order of first appearance."""
    seen: dict[int, None] = dict.fromkeys(ids.tolist())
    return torch.tensor(list(seen), dtype=torch.long)


def adain_stats(slots: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slot, per-dimension mean (K, d) and unbiased std (K, d) of K slots of (n_k, d) embeddings."""
    means = torch.stack([s.mean(dim=0) for s in slots])
    return means, torch.stack([s.std(dim=0, unbiased=True) for s in slots])


def celeb_basis(slots: list[torch.Tensor], p: int = BASIS_SIZE) -> torch.Tensor:
    """(K, 1 + p', d): per slot, row 0 the mean and rows 1.. unit principal directions (PCA by SVD).

    Slot k of (n_k, d) has at most min(p, n_k - 1, d) directions (centred data of n points has rank at
    most n - 1); p' is the largest over the slots. Directions past a slot's numerical rank (repeated or
    too few vectors) are zero rows rather than the arbitrary null-space vectors an SVD returns there,
    so mean + coefficients @ directions always stays in that slot's affine hull. Directions are not
    scaled by their singular values.
    """
    keep = max(min(p, s.shape[0] - 1, s.shape[1]) for s in slots)
    rows = []
    for emb in slots:
        n, d = emb.shape
        x = emb.double()  # float64: SVD of near-duplicate rows needs the precision
        mean = x.mean(dim=0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)  # s (min(n, d),), vh (min(n, d), d)
        rank = int((s > s.max() * max(n, d) * torch.finfo(torch.float32).eps).sum())
        directions = torch.zeros(keep, d, dtype=x.dtype)
        usable = min(rank, keep, vh.shape[0])
        directions[:usable] = vh[:usable]
        rows.append(torch.cat([mean[None], directions]))
    return torch.stack(rows).to(slots[0].dtype)


@dataclass(frozen=True)
class CelebPrior:
    """One method's celebrity names for one tokenizer and text encoder, as per-slot token embeddings."""

    file: str  # the packaged list it came from
    names: list[str]  # the names used
    slots: list[torch.Tensor]  # per slot k: (n_k, d) raw input-embedding rows, float32, CPU
    pieces: str = FIRST_TOKENS  # which tokens of a name fill the slots (FIRST_TOKENS or WORD_PIECES)

    @property
    def token_dim(self) -> int:
        return self.slots[0].shape[-1]

    @property
    def slot_sizes(self) -> list[int]:
        return [s.shape[0] for s in self.slots]

    @cached_property
    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return adain_stats(self.slots)

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
        return celeb_basis(self.slots)

    def describe(self) -> dict[str, Any]:
        """What an identity's metadata records of its prior."""
        return {
            "file": self.file,
            "names": len(self.names),
            "slot_sizes": self.slot_sizes,
            "pieces": self.pieces,
        }


def build_prior(
    tokenizer: Any, text_encoder: Any, method: str = "stableidentity", names: list[str] | None = None
) -> CelebPrior:
    """``method``'s celebrity prior for a model's tokenizer and text encoder (fp32, CPU; encoder untouched).

    ``names`` replaces the packaged list (tests); the method still decides how slots are formed, the
    tokenizer which tokens fill them (CLIP BPE: the first two; SentencePiece: each word's first piece).
    """
    spec = PRIOR_LISTS[method]
    names = load_names(spec.file) if names is None else names
    by_word = is_sentencepiece(tokenizer)
    ids, kept = (first_pieces_of_words if by_word else first_two_tokens)(tokenizer, names)
    if len(kept) < MIN_NAMES:
        raise BadInput(
            f"only {len(kept)} of {len(names)} celebrity names have two tokens for this model's tokenizer "
            f"(at least {MIN_NAMES} are needed)",
            "use a model with its own CLIP or T5 tokenizer (a preset such as sd21 or flux-dev)",
        )
    columns = [ids[:, k] for k in range(NUM_SLOTS)]
    if spec.distinct_per_slot:
        columns = [distinct_in_order(c) for c in columns]
    weight = text_encoder.get_input_embeddings().weight.detach().to("cpu", torch.float32)
    return CelebPrior(spec.file, kept, [weight[c] for c in columns], WORD_PIECES if by_word else FIRST_TOKENS)
