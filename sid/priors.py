"""The celebrity-name prior: where well-known people's names sit in a text encoder's input-embedding space.

Both methods land a new person among celebrities rather than anywhere in the 49k-word vocabulary:
StableIdentity scales its output by the per-dimension std of celebrity name embeddings and shifts it by
their mean (AdaIN), Celeb Basis spans it with their principal directions. Each method uses its own
paper's list (``sid/data``, MIT, see NOTICE.md) the way its official code does: slot 0 is the first
BPE token of each name, slot 1 the second. StableIdentity's 326 names are each two single tokens
(first and last name), kept as pairs. Celeb Basis's code takes its 691 lines as a sorted set of 646
distinct names and gives each slot every name's token at that position, repeated tokens included
(its ``rm_repeats`` compares tensors by identity and so removes none): 646 rows in slot 0, 638 in
slot 1 (8 names are one token) with CLIP's BPE.

A SentencePiece tokenizer (FLUX's T5) splits words into pieces that each open with the word marker
"▁", and the identity's two added tokens stand for two whole words. There, slot k is the first
piece of word k of the name (first name, last name): the piece that carries the word's start, as
CLIP's single-token names do. Names of fewer than two words are dropped; StableIdentity keeps the
rest as pairs, Celeb Basis as its code would (sorted distinct names, every name's piece per slot).
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
    # True (Celeb Basis): the distinct names, sorted, each slot every token at its position (repeats
    # kept, names of one token in slot 0 only); False (StableIdentity): names of two tokens, as pairs
    by_position: bool


PRIOR_LISTS: dict[str, PriorList] = {
    "stableidentity": PriorList("stableidentity_celeb_names.txt", by_position=False),
    "celebbasis": PriorList("celebbasis_wiki_names_v2.txt", by_position=True),
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


def tokens_by_position(tokenizer: Any, names: list[str]) -> tuple[list[torch.Tensor], list[str]]:
    """Celeb Basis's columns: per slot k, BPE token k of every name that has one, over the distinct
    names in sorted order (its code reads the list into a set and sorts it); and those names."""
    names = sorted(set(names))
    ids = tokenizer(names, add_special_tokens=False).input_ids if names else []
    columns = [[row[k] for row in ids if len(row) > k] for k in range(NUM_SLOTS)]
    return [torch.tensor(c, dtype=torch.long) for c in columns], names


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


def adain_stats(slots: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slot, per-dimension mean (K, d) and unbiased std (K, d) of K slots of (n_k, d) embeddings."""
    means = torch.stack([s.mean(dim=0) for s in slots])
    return means, torch.stack([s.std(dim=0, unbiased=True) for s in slots])


def celeb_basis(slots: list[torch.Tensor], p: int = BASIS_SIZE) -> torch.Tensor:
    """(K, 1 + min(p, d), d): per slot, row 0 the mean and rows 1.. the first p right singular vectors
    of the centred rows, computed as Celeb Basis's code does (fp32 on the CPU, a full SVD).

    The full SVD has d right singular vectors whatever the number of rows, so a slot of rank r < p
    (slot 0: 646 rows of 409 distinct tokens with CLIP's BPE) gets p - r directions past its rank:
    orthonormal completions of the row space that LAPACK picks, not principal directions. They are
    kept, as the official basis keeps them (the coefficients over them move the vectors out of the
    celebrities' span); being an arbitrary choice among equals, they match the official ones bit for
    bit only on the same LAPACK build. Directions are unit length, not scaled by their singular values.
    """
    rows = []
    for emb in slots:
        x = emb.detach().to("cpu", torch.float32)  # (n, d)
        mean = x.mean(dim=0, keepdim=True)
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=True)  # vh (d, d)
        rows.append(torch.cat([mean, vh[:p]]))
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
        """(2, 1 + min(512, d), d) Celeb Basis: mean then principal directions, per slot."""
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
    if spec.by_position and not by_word:
        columns, kept = tokens_by_position(tokenizer, names)
        usable = len(columns[-1])  # names with a token in every slot
    else:
        ids, kept = (
            first_pieces_of_words(tokenizer, sorted(set(names)) if spec.by_position else names)
            if by_word
            else first_two_tokens(tokenizer, names)
        )
        columns, usable = [ids[:, k] for k in range(NUM_SLOTS)], len(kept)
    if usable < MIN_NAMES:
        raise BadInput(
            f"only {usable} of {len(names)} celebrity names have two tokens for this model's tokenizer "
            f"(at least {MIN_NAMES} are needed)",
            "use a model with its own CLIP or T5 tokenizer (a preset such as sd21 or flux-dev)",
        )
    weight = text_encoder.get_input_embeddings().weight.detach().to("cpu", torch.float32)
    return CelebPrior(spec.file, kept, [weight[c] for c in columns], WORD_PIECES if by_word else FIRST_TOKENS)
