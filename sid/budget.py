"""What fits in free accelerator memory: K identities per learn step, and the bank's encode chunk.

Both are linear cost models, in bytes, asked once the frozen model is loaded (its weights are
already out of the free memory): K identities cost ``fixed + K * per_identity`` on top of the loaded
model, and a chunk of n bank entries ``n * per entry``. The constants below are the one place these
costs live; ``python -m benchmarks.learn --parallel 1,2,4,8,16`` measures peak memory at each K and
prints the fitted ``fixed`` and ``per sample`` in exactly these terms (``benchmarks.bank`` does the
same per bank entry), so a GPU run's numbers replace the estimates here.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
HEADROOM = 0.9  # of the free memory: the caching allocator's fragmentation and cuDNN's workspaces
MAX_DEFAULT_PARALLEL = 16  # K when --parallel is not given never exceeds this
DRAW = 4  # bank entries whose random numbers are drawn together (the chunk the bank always had)
MAX_BANK_CHUNK = 64  # entries augmented and encoded at once, at most


@dataclass(frozen=True)
class ParallelCost:
    """Memory K identities need in the learn loop beyond the loaded model: ``fixed`` whatever K
    (CUDA-graph pools, cuDNN and cuBLAS workspaces, the text encoders' activations of the templates)
    and ``sample`` per training sample (the activations one more sample keeps for the backward, its
    latent bank, its mapper and AdamW state) at ``resolution``², scaled by the pixel count. The bank's
    encodes run before the loop and free their memory (``bank_chunk`` sizes them on their own).
    ``measured`` says whether a GPU run measured the numbers or they are estimates; ``source`` which."""

    fixed: float  # bytes
    sample: float  # bytes per training sample at ``resolution``
    resolution: int
    measured: bool
    source: str

    def per_identity(self, batch: int, resolution: int) -> float:
        """Bytes one more identity costs: ``batch`` samples at ``resolution``² (activations scale with
        the latent's pixel count)."""
        return self.sample * batch * (resolution / self.resolution) ** 2

    def total(self, k: int, batch: int, resolution: int) -> float:
        """Bytes K identities need beyond the loaded model."""
        return self.fixed + k * self.per_identity(batch, resolution)

    def parallel(self, free: float, batch: int, resolution: int, cap: int = MAX_DEFAULT_PARALLEL) -> int:
        """The largest K (1 to ``cap``) whose cost fits ``HEADROOM`` of ``free`` bytes."""
        room = free * HEADROOM - self.fixed
        return int(max(1, min(cap, room // self.per_identity(batch, resolution))))


# by adapter key (sid.adapters). None is a GPU measurement yet: the H100 runs (2026-11-22) measured
# SD2.1-base at 512², K = 1, bf16, bank chunks of 8: 8.8 GB peak with 4.2 GB loaded, i.e. 4.6 GB
# (4.3 GiB) beyond the model; how that splits into fixed and per-sample is the estimate
PARALLEL_COSTS: dict[str, ParallelCost] = {
    "sd": ParallelCost(
        1.5 * GIB,
        3.0 * GIB,
        512,
        False,
        "estimate: 4.5 GiB at K = 1 (H100: the run's peak was 4.3 GiB beyond the loaded model, set by "
        "the bank's encode, so the loop's own is less), split 1.5 fixed + 3.0 per sample; "
        "learn-parallel of benchmarks.gpu fits both",
    ),
    "sdxl": ParallelCost(
        3 * GIB,
        12 * GIB,
        1024,
        False,
        "estimate: SD's per-sample cost x 4 for 1024² latents, not measured (learn-sdxl measures K = 1)",
    ),
    "flux": ParallelCost(
        4 * GIB,
        8 * GIB,
        512,
        False,
        "estimate: a 19-block + 38-block transformer's activations at 1024 image tokens, not measured",
    ),
}


def parallel_cost(adapter_key: str) -> ParallelCost:
    """The family's cost model (SD's for an adapter without its own)."""
    return PARALLEL_COSTS.get(adapter_key, PARALLEL_COSTS["sd"])


def fit_parallel(
    points: list[tuple[int, float]], batch: int, resolution: int, source: str, measured: bool
) -> ParallelCost:
    """A least-squares ``ParallelCost`` from (K, bytes beyond the loaded model) pairs, per sample at
    ``resolution``: what ``PARALLEL_COSTS`` holds, from a benchmark's peaks. One K gives no split:
    all of it is per sample."""
    ks = [float(k) for k, _ in points]
    ys = [float(y) for _, y in points]
    n = len(points)
    mk, my = sum(ks) / n, sum(ys) / n
    var = sum((k - mk) ** 2 for k in ks)
    slope = sum((k - mk) * (y - my) for k, y in zip(ks, ys, strict=True)) / var if var else my / mk
    fixed = my - slope * mk if var else 0.0
    return ParallelCost(fixed, slope / batch, resolution, measured, source)


# bytes of VAE-encoder activations per input pixel of one bank entry, under bf16 autocast (an
# estimate: the H100 run's bank at chunks of 8 and 512² peaked ~4.6 GB over the model, ~0.55 GB an
# entry; benchmarks.bank measures it per chunk size)
BANK_BYTES_PER_PIXEL = 0.55e9 / 512**2


def bank_chunk(free: float | None, resolution: int) -> int:
    """Bank entries to augment and encode at once: as many as half the free memory holds (the loop's
    share is the other half), a multiple of ``DRAW``, at most ``MAX_BANK_CHUNK``; ``DRAW`` when the
    free memory is unknown (CPU: larger batches do not run faster there)."""
    if free is None:
        return DRAW
    fits = int(free * 0.5 // (BANK_BYTES_PER_PIXEL * resolution**2))
    return max(DRAW, min(MAX_BANK_CHUNK, fits // DRAW * DRAW))


def free_bytes(device: str) -> float | None:
    """Memory of a CUDA ``device`` this process can still use, in bytes: the device's free memory
    and the blocks torch's caching allocator holds but no tensor uses (a previous bank chunk's, say);
    None elsewhere (no allocator to ask)."""
    if not device.startswith("cuda"):
        return None
    import torch

    where = torch.device(device)
    free, _ = torch.cuda.mem_get_info(where)
    return float(free + torch.cuda.memory_reserved(where) - torch.cuda.memory_allocated(where))
