"""Prompts that name identities, and how identity vectors reach a text encoder.

A prompt word that matches a stored identity ("alice", "Alice's", or forced with "@alice") becomes
the identity's token ``<sid-alice>``. The vectors are loaded with diffusers' own textual-inversion
loader, which adds ``<sid-alice>`` and ``<sid-alice>_1`` to the tokenizer and expands the token in
prompts, so every pipeline with ``TextualInversionLoaderMixin`` (plain, ControlNet, AnimateDiff,
text-to-video) sees them the same way. Training uses the same tokens and templates, so the vectors
stand in the same place (where a first and last name would) when learning and when rendering.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sid.errors import IdentityNotFound, IncompatibleIdentity
from sid.families import Family, family_of_identity, family_of_pipeline, same_family
from sid.names import stop_words
from sid.store import check_scale

if TYPE_CHECKING:
    import torch

    from sid.store import Identity, IdentityStore

WORD = re.compile(r"(?<![\w@<-])(@?)([A-Za-z][A-Za-z0-9_-]*)")


def identity_token(name: str) -> str:
    """The tokenizer token an identity is loaded under."""
    return f"<sid-{name.lower()}>"


@dataclass
class ParsedPrompt:
    text: str  # the prompt with identity names replaced by their tokens
    names: list[str]  # identities used, in order of first appearance, as stored


def parse_prompt(
    prompt: str, store: IdentityStore, warn: Callable[[str], None] | None = None
) -> ParsedPrompt:
    """Replace every whole word that names a stored identity (any case) with its token.

    ``@name`` forces the match and is an error when no such identity exists. An identity stored under
    a common prompt word (before such names were refused) takes that word over: ``warn`` says so once,
    unless the prompt forced it with ``@``.
    """
    known = {n.lower(): n for n in store.names()}
    used: list[str] = []
    warned: set[str] = set()

    def swap(match: re.Match[str]) -> str:
        forced, word = match.group(1), match.group(2)
        name = known.get(word.lower())
        if name is None:
            if forced:
                listing = ", ".join(sorted(known.values())) or "none"
                raise IdentityNotFound(
                    f"@{word} names no stored identity (known: {listing})", "check `sid ls` or drop the @"
                )
            return match.group(0)
        if warn is not None and not forced and name.lower() in stop_words() and name not in warned:
            warned.add(name)
            warn(
                f"{word!r} is a common prompt word but also the stored identity {name!r}: "
                f"it renders as that person (write @{name} to mean the person, "
                f"or rename it with `sid mv {name} NEWNAME`)"
            )
        if name not in used:
            used.append(name)
        return identity_token(name)

    return ParsedPrompt(WORD.sub(swap, prompt), used)


def text_encoders(pipe: Any) -> list[tuple[Any, Any]]:
    """(tokenizer, text_encoder) pairs of a pipeline, first encoder first."""
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def check_compatible(identity: Identity, model: Family) -> dict[str, Any]:
    """The identity's vectors for each text encoder of a model of family ``model``, keyed by the
    identity's slot, in the model's encoder order.

    The identity's family must be the model's: an SD 1.x model never silently takes the CLIP-L half
    of an SDXL identity. The error names both families. A stored file lists its slots by name, not
    by encoder position (safetensors sorts keys), so slots that name the model's own (``te1024`` and
    ``te768`` of a 768 + 1024 model) fit whatever order they come in. A FLUX identity never fits a
    UNet model, nor the reverse, whatever the widths.
    """
    learned = family_of_identity(identity.widths)
    if same_family(learned, model):
        slots = learned.slots
    elif (
        learned.denoiser == model.denoiser
        and dict(zip(model.slots, model.widths, strict=True)) == identity.widths
    ):
        slots = model.slots
    else:
        raise IncompatibleIdentity(
            f"identity {identity.name!r} was learned for {learned.label}, not for {model.label}",
            f"use a model of the identity's family (base: {identity.base_model or 'unknown'}) or re-learn it",
        )
    return {slot: identity.vectors[slot] for slot in slots}


def load_identities(pipe: Any, identities: list[Identity], warn: Any = None) -> None:
    """Load identities into ``pipe`` with diffusers' textual-inversion loader (idempotent).

    A different fingerprint at the same width (a fine-tuned base) is only a warning.
    """
    import torch

    family = family_of_pipeline(pipe)
    for identity in identities:
        token = identity_token(identity.name)
        for (tokenizer, encoder), (slot, vectors) in zip(
            text_encoders(pipe), check_compatible(identity, family).items(), strict=True
        ):
            stored = identity.fingerprints.get(slot)
            if warn is not None and stored and stored != fingerprint(encoder, tokenizer.vocab_size):
                warn(
                    f"{identity.name} was learned on another {vectors.shape[-1]}-d text encoder "
                    f"({identity.base_model}); results may differ"
                )
            if token in tokenizer.get_vocab():
                continue
            table = encoder.get_input_embeddings().weight.detach()
            check_scale(vectors, float(table.float().norm(dim=-1).max()), f"identity {identity.name!r}")
            tensor = torch.from_numpy(vectors).to(encoder.dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pipe.load_textual_inversion(tensor, token=token, tokenizer=tokenizer, text_encoder=encoder)


def add_placeholder_tokens(tokenizer: Any, text_encoder: Any, token: str, count: int) -> list[int]:
    """Add ``token``, ``token_1`` … (diffusers' multi-vector naming) and return their ids.

    Training uses these ids as placeholders: ``inject_vectors`` writes the mapper's output over
    their embedding rows on the fly, so the tokenizer sees exactly what it sees when rendering.
    """
    names = [token] + [f"{token}_{i}" for i in range(1, count)]
    tokenizer.add_tokens(names)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return tokenizer.convert_tokens_to_ids(names)


@dataclass
class VectorSlot:
    """Where a training loop puts the vectors that ``inject_vectors`` writes into the next forward."""

    vectors: torch.Tensor | None = None  # (B, K, sum d), differentiable; set before the encoders run


@contextmanager
def inject_vectors(placeholders: list[tuple[Any, list[int]]]) -> Iterator[VectorSlot]:
    """While active, embeddings of each encoder's placeholder ids come from the yielded slot's ``vectors``.

    ``placeholders`` pairs each text encoder (first encoder first) with its placeholder ids; the
    slot's vectors hold every encoder's part side by side (SDXL: 768 then 1280 dims), and each
    encoder's hook takes its own part. A forward hook on the token-embedding layer replaces the rows at
    placeholder positions, so the text encoder's forward (position embeddings, attention, pooling) is
    the model's own. The loop assigns ``slot.vectors = mapper(face)`` before calling the encoders: the
    data flow stays in sight.
    """
    import torch

    slot = VectorSlot()

    def hook_for(token_ids: list[int], start: int, width: int) -> Callable[..., torch.Tensor]:
        def hook(module: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            if slot.vectors is None:
                raise RuntimeError("inject_vectors: assign slot.vectors before running the text encoder")
            input_ids = inputs[0]  # (B, L)
            vectors = slot.vectors[..., start : start + width].to(output.dtype)  # (B, K, d)
            for k in range(len(token_ids)):
                here = (input_ids == token_ids[k]).unsqueeze(-1)  # (B, L, 1); a Python int: no transfer
                output = torch.where(here, vectors[:, k : k + 1, :], output)
            return output

        return hook

    handles, start = [], 0
    for encoder, token_ids in placeholders:
        layer = encoder.get_input_embeddings()
        handles.append(layer.register_forward_hook(hook_for(token_ids, start, layer.weight.shape[-1])))
        start += layer.weight.shape[-1]
    try:
        yield slot
    finally:
        for handle in handles:
            handle.remove()


def fingerprint(text_encoder: Any, rows: int | None = None) -> str:
    """``width:hash`` of a text encoder's token-embedding matrix, independent of the load dtype.

    Only the first ``rows`` rows (the base vocabulary) count, so tokens added by textual inversion do
    not change it; the result is cached on the encoder, whose base rows never change. Identities
    learned on one text encoder fit any model whose fingerprint matches; a different hash at the same
    width (a fine-tune) still works, only less exactly.
    """
    import hashlib

    import torch

    cache = text_encoder.__dict__.setdefault("_sid_fingerprints", {})
    weight = text_encoder.get_input_embeddings().weight.detach()
    rows = rows or weight.shape[0]
    if rows not in cache:
        data = weight[:rows].to("cpu", torch.float16).contiguous().numpy().tobytes()
        cache[rows] = f"{weight.shape[-1]}:{hashlib.sha256(data).hexdigest()[:16]}"
    return cache[rows]
