"""Which export format each tool loads: one table for ``sid export --help``, the formats and the docs.

Standard library only: the CLI builds its help from it, and ``sid --help``/``sid ls`` import nothing heavy.
"""

from __future__ import annotations

FORMATS = ("sid", "diffusers", "a1111", "comfyui", "invokeai")
# tool -> (the --format it takes, how it loads the file); docs/formats.md says the same at length
TOOLS: dict[str, tuple[str, str]] = {
    "AUTOMATIC1111 / Forge": ("a1111", "put the file in embeddings/; its name is the trigger word"),
    "ComfyUI": ("comfyui", 'put it in models/embeddings/; prompt "embedding:NAME"'),
    "InvokeAI": ("invokeai", "install it as an embedding; InvokeAI refuses the diffusers and sid layouts"),
    "diffusers": ("diffusers", "pipe.load_textual_inversion(file); SDXL, FLUX: one call per encoder"),
    "sid": ("sid", "sid import: vectors, metadata and the face thumbnail"),
}
