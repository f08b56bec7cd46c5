"""Models that stay loaded between jobs: an LRU cache the loaders ask through ``sid.pipelines.RESIDENT``.

A job changes the pipeline it borrows: rendering adds identity tokens to the tokenizer and rows to the
text encoder's embedding and swaps the scheduler; learning adds placeholder tokens. Each object is
kept with a pristine copy of those small parts (tokenizers, schedulers, embedding sizes) and handed
out restored, so a job through the server sees exactly what a fresh load would show it (same pixels).
The large weights (UNet, VAE, encoders) are shared, never copied.

When the device runs short of memory, the least recently used models are dropped first.
"""

from __future__ import annotations

import copy
import gc
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TEXT_PAIRS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
CPU_ENTRIES = 4  # models kept on a CPU-only server (no device memory to measure)
HEADROOM = 0.15  # fraction of device memory kept free before loading another model


@dataclass
class Entry:
    obj: Any
    tokenizers: dict[str, Any] = field(default_factory=dict)  # attribute -> pristine copy
    vocab: dict[str, int] = field(default_factory=dict)  # text encoder attribute -> embedding rows
    scheduler: Any = None


def _snapshot(obj: Any) -> Entry:
    entry = Entry(obj)
    for tok_attr, enc_attr in TEXT_PAIRS:
        tokenizer, encoder = getattr(obj, tok_attr, None), getattr(obj, enc_attr, None)
        if tokenizer is not None and encoder is not None:
            entry.tokenizers[tok_attr] = copy.deepcopy(tokenizer)
            entry.vocab[enc_attr] = encoder.get_input_embeddings().weight.shape[0]
    if getattr(obj, "scheduler", None) is not None:
        entry.scheduler = copy.deepcopy(obj.scheduler)
    return entry


def _restore(entry: Entry) -> Any:
    obj = entry.obj
    for tok_attr, enc_attr in TEXT_PAIRS:
        if tok_attr in entry.tokenizers:
            setattr(obj, tok_attr, copy.deepcopy(entry.tokenizers[tok_attr]))
            encoder = getattr(obj, enc_attr)
            if encoder.get_input_embeddings().weight.shape[0] != entry.vocab[enc_attr]:
                encoder.resize_token_embeddings(entry.vocab[enc_attr], mean_resizing=False)
    if entry.scheduler is not None:
        obj.scheduler = copy.deepcopy(entry.scheduler)
    return obj


class ResidentModels:
    """Loaded models of one device, least recently used first."""

    def __init__(self, device: str, max_entries: int | None = None) -> None:
        self.device = device
        self.max_entries = max_entries if max_entries is not None else (CPU_ENTRIES if device == "cpu" else 0)
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.loads = 0  # how many times a model was loaded (tests and the benchmark read it)

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
            return _restore(self.entries[key])
        self._make_room()
        obj = self._load(load)
        self.entries[key] = _snapshot(obj)
        self.loads += 1
        return obj

    def _load(self, load: Callable[[], Any]) -> Any:
        import torch

        while True:
            try:
                return load()
            except torch.OutOfMemoryError:
                if not self.entries:
                    raise
                self.evict()

    def _make_room(self) -> None:
        while self.entries and self._short():
            self.evict()

    def _short(self) -> bool:
        if self.max_entries:
            return len(self.entries) >= self.max_entries
        import torch

        if not self.device.startswith("cuda") or not torch.cuda.is_available():
            return False
        free, total = torch.cuda.mem_get_info(torch.device(self.device))
        return free < HEADROOM * total

    def evict(self) -> None:
        """Drop the least recently used model and give its memory back."""
        self.entries.popitem(last=False)
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def names(self) -> list[str]:
        return list(self.entries)
