"""sid: put a person into a text-to-image diffusion model from one photo."""

__version__ = "0.1.0"
