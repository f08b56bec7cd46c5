"""Models that stay loaded between jobs: an LRU cache the loaders ask through ``sid.pipelines.RESIDENT``.

A job changes the pipeline it borrows: rendering adds identity tokens to the tokenizer and rows to the
text encoder's embedding and swaps the scheduler; learning adds placeholder tokens. Each object is kept
with a pristine copy of those small parts (tokenizers, schedulers, embedding sizes) and handed out as a
fresh load would show it, so a job through the server renders the same pixels as the CLI:
- after a job that only *reads* identities (render, video, 3d, eval), their tokens stay loaded as long as
  no identity file changed: ``load_identities`` skips a token already there, and an identity's rows are
  the same whatever ids its tokens got, so the next render is not slowed by a reload;
- after a learn, or once any identity file changed (re-learned, imported, renamed), the tokenizers and
  embeddings go back to the snapshot.
The restore runs between jobs (``release``), off the next job's clock. The large weights (UNet, VAE,
encoders) are shared, never copied. When the device runs short of memory, the least recently used
models are dropped first.
"""

from __future__ import annotations

import copy
import gc
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_PAIRS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
READERS = ("render", "video", "3d", "eval")  # job kinds whose identity tokens may stay loaded
CPU_ENTRIES = 4  # models kept on a CPU-only server (no device memory to measure)
HEADROOM = 0.15  # fraction of device memory kept free before loading another model


@dataclass
class Entry:
    obj: Any
    tokenizers: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # attribute -> (pickled, length)
    vocab: dict[str, int] = field(default_factory=dict)  # text encoder attribute -> embedding rows
    scheduler: Any = None
    kept_for: tuple | None = None  # ``store_state`` under which the loaded identity tokens are current


def _snapshot(obj: Any) -> Entry:
    entry = Entry(obj)
    for tok_attr, enc_attr in TEXT_PAIRS:
        tokenizer, encoder = getattr(obj, tok_attr, None), getattr(obj, enc_attr, None)
        if tokenizer is not None and encoder is not None:
            # pickled: loading it back is faster than copy.deepcopy of a CLIP tokenizer
            entry.tokenizers[tok_attr] = (pickle.dumps(tokenizer), len(tokenizer))
            entry.vocab[enc_attr] = encoder.get_input_embeddings().weight.shape[0]
    if getattr(obj, "scheduler", None) is not None:
        entry.scheduler = copy.deepcopy(obj.scheduler)
    return entry


def _dirty(entry: Entry) -> bool:
    """Whether a job added tokens (identities, placeholders) since the snapshot."""
    obj = entry.obj
    return any(len(getattr(obj, attr)) != n for attr, (_, n) in entry.tokenizers.items()) or any(
        getattr(obj, attr).get_input_embeddings().weight.shape[0] != n for attr, n in entry.vocab.items()
    )


def _restore(entry: Entry) -> None:
    obj = entry.obj
    for tok_attr, enc_attr in TEXT_PAIRS:
        if tok_attr in entry.tokenizers:
            setattr(obj, tok_attr, pickle.loads(entry.tokenizers[tok_attr][0]))
            encoder = getattr(obj, enc_attr)
            if encoder.get_input_embeddings().weight.shape[0] != entry.vocab[enc_attr]:
                encoder.resize_token_embeddings(entry.vocab[enc_attr], mean_resizing=False)
    entry.kept_for = None


def store_state(root: Path) -> tuple:
    """Every identity file's name, size, mtime and inode: changes whenever one is written or removed."""
    try:
        return tuple(sorted((p.name, *_stat(p)) for p in root.glob("*.safetensors")))
    except OSError:
        return ("unreadable",)


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


class ResidentModels:
    """Loaded models of one device, least recently used first, for the store at ``store_root``."""

    def __init__(self, device: str, store_root: Path, max_entries: int | None = None) -> None:
        self.device = device
        self.store_root = store_root
        self.max_entries = max_entries if max_entries is not None else (CPU_ENTRIES if device == "cpu" else 0)
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.loads = 0  # how many times a model was loaded
        self.job_state: tuple = ()  # ``store_state`` when the running job began

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
            entry = self.entries[key]
            if _dirty(entry) and entry.kept_for != store_state(self.store_root):
                _restore(entry)  # an identity changed since its tokens were kept (``release`` ran before)
            if entry.scheduler is not None:
                entry.obj.scheduler = copy.deepcopy(entry.scheduler)  # a few small arrays
            return entry.obj
        self._make_room()
        obj = self._load(load)
        self.loads += 1
        try:
            self.entries[key] = _snapshot(obj)
        except Exception:  # a part that cannot be copied: this model is used once, not kept
            pass
        return obj

    def begin(self) -> None:
        """Before a job: the store as the job will first read it."""
        self.job_state = store_state(self.store_root)

    def release(self, kind: str) -> None:
        """After a job of ``kind``: keep a reader's identity tokens if no identity file changed while it
        ran, else put the snapshot back."""
        keep = kind in READERS and store_state(self.store_root) == self.job_state
        for key, entry in list(self.entries.items()):
            try:
                if not _dirty(entry):
                    continue
                if keep:
                    entry.kept_for = self.job_state
                else:
                    _restore(entry)
            except Exception:  # never reuse what could not be put back: the next job loads it afresh
                del self.entries[key]

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
