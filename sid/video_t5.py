"""FLUX.1 identities in a text-to-video model conditioned on the same T5-v1.1-XXL: LTX-Video.

FLUX's identity has two halves; LTX-Video reads prompts with T5-v1.1-XXL alone, so the identity's
``t5`` half goes into its text encoder, where it stands as it stood in FLUX's. LTX-Video rather than
CogVideoX: both condition on T5-v1.1-XXL, but LTX-Video's 2B transformer makes a clip in seconds and
fits a 24 GB GPU, where CogVideoX-5B takes minutes (CogVideoX-2B's smaller model is weaker).
LTXPipeline has no textual-inversion loader, so the rows are added here the way diffusers' loader adds
them (``<sid-name>``, ``<sid-name>_1``) and the prompt expanded by diffusers' own rule. The vectors
only mean the person in the T5 they were learned with: a video model whose T5 has another
fingerprint is refused.
"""

from __future__ import annotations

from typing import Any

from sid.errors import IncompatibleIdentity
from sid.families import FLUX, family_of_identity
from sid.prompts import add_placeholder_tokens, identity_token
from sid.store import Identity

T5_SLOT = "t5"  # FLUX's T5 half
LTX_PIPELINE = "LTXPipeline"
LTX_SIZE = (704, 480)  # LTX-Video's native clip size
LTX_GUIDANCE = 3.0  # LTX-Video's card


def load_t5_identities(pipe: Any, identities: list[Identity]) -> None:
    """Each FLUX identity's T5 rows into the video pipeline's T5 (idempotent); any other identity, or
    a T5 with another fingerprint than the identity was learned with, is refused in one line."""
    import torch

    from sid.prompts import fingerprint

    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    model_print = fingerprint(encoder, tokenizer.vocab_size)
    for identity in identities:
        family = family_of_identity(identity.widths)
        if family.key != FLUX.key:
            raise IncompatibleIdentity(
                f"{identity.name} was learned for {family.label}; this video model reads T5 prompts like "
                f"{FLUX.name}, not like {family.name}",
                "learn the person on flux-dev or flux-schnell, or use the video model of its family",
            )
        learned = identity.fingerprints.get(T5_SLOT)
        if learned != model_print:
            raise IncompatibleIdentity(
                f"the video model's T5 ({model_print}) is not the one {identity.name} was learned with "
                f"({learned or 'unrecorded'})",
                "use a video model conditioned on the T5 of the identity's FLUX model",
            )
        token = identity_token(identity.name)
        if token in tokenizer.get_vocab():
            continue
        vectors = torch.from_numpy(identity.vectors[T5_SLOT])
        ids = add_placeholder_tokens(tokenizer, encoder, token, len(vectors))
        with torch.no_grad():
            encoder.get_input_embeddings().weight[ids] = vectors.to(encoder.dtype)


def expand_tokens(text: str, tokenizer: Any) -> str:
    """``<sid-name>`` -> ``<sid-name> <sid-name>_1``: diffusers' multi-vector rule, for pipelines
    without its loader."""
    from diffusers.loaders import TextualInversionLoaderMixin

    return TextualInversionLoaderMixin._maybe_convert_prompt(None, text, tokenizer)  # self is unused
