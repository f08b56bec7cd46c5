"""The papers' augmentation chains: colour jitter, flip, crop and paste, all applied to every sample."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sid.augment import CHAINS, augment_batch, colour_jitter, draw, geometry


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- colour --------------------------------------------------------------------------------------------
def test_hue_shift_matches_colorsys() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    shift = torch.tensor([0.01, -0.3], dtype=torch.float64)
    order = torch.tensor([[3, 0, 1, 2]] * 2)  # hue first; the other ops with factor 1 change nothing
    factors = torch.stack([torch.ones(2), torch.ones(2), torch.ones(2), shift], 1).double()
    out = colour_jitter(x, order, factors)
    for b in range(2):
        for i in range(4):
            for j in range(5):
                h, s, v = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
                expected = colorsys.hsv_to_rgb((h + shift[b].item()) % 1.0, s, v)
                np.testing.assert_allclose(out[b, :, i, j].numpy(), expected, atol=1e-9)


def test_brightness_contrast_saturation_in_the_drawn_order() -> None:
    torch.manual_seed(1)
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    f_b, f_c, f_s = 1.2, 0.8, 1.1
    factors = torch.tensor([[f_b, f_c, f_s, 0.0]], dtype=torch.float64)

    def grey(y: torch.Tensor) -> torch.Tensor:
        return 0.2989 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]

    def by_hand(ops: list[str]) -> torch.Tensor:
        y = x.clone()
        for op in ops:
            if op == "b":
                y = (y * f_b).clamp(0, 1)
            elif op == "c":
                y = (f_c * y + (1 - f_c) * grey(y).mean()).clamp(0, 1)
            elif op == "s":
                y = (f_s * y + (1 - f_s) * grey(y)).clamp(0, 1)
        return y

    first = colour_jitter(x, torch.tensor([[0, 1, 2, 3]]), factors)
    second = colour_jitter(x, torch.tensor([[2, 1, 3, 0]]), factors)
    torch.testing.assert_close(first, by_hand(["b", "c", "s"]))
    torch.testing.assert_close(second, by_hand(["s", "c", "b"]))
    assert not torch.allclose(first, second)  # the order matters, so it is drawn per sample


# -- geometry ------------------------------------------------------------------------------------------
def _two_step_reference(stack: torch.Tensor, d, mode: str) -> torch.Tensor:
    """The papers' code, step by step: flip, crop, resize back, shrink, paste on zeros."""
    out = []
    size = stack.shape[-1]
    for i in range(stack.shape[0]):
        x = stack[i : i + 1]
        if d.flips[i]:
            x = x.flip(-1)
        t, left = int(d.top[i]), int(d.left[i])
        x = x[..., t : t + d.crop, left : left + d.crop]
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=True)
        h, w = int(d.height[i]), int(d.width[i])
        x = F.interpolate(x, size=(h, w), mode=mode, align_corners=True)
        canvas = torch.zeros_like(stack[i : i + 1])
        y0, x0 = int(d.pos_y[i]), int(d.pos_x[i])
        canvas[..., y0 : y0 + h, x0 : x0 + w] = x
        out.append(canvas)
    return torch.cat(out)


@pytest.mark.parametrize("method", list(CHAINS))
def test_one_resampling_equals_the_papers_two_on_linear_images(method: str) -> None:
    """Linear ramps are reproduced exactly by bilinear resampling, so both must agree to rounding."""
    size, n = 32, 24
    ramp = torch.linspace(0, 1, size, dtype=torch.float64)
    stack = torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size)])[None].expand(
        n, -1, -1, -1
    )
    d = draw(n, size, _gen(3), method)
    torch.testing.assert_close(
        geometry(stack, d, "bilinear"), _two_step_reference(stack, d, "bilinear"), atol=1e-6, rtol=0
    )


def test_stableidentity_always_crops_and_pastes() -> None:
    size, n = 64, 400
    d = draw(n, size, _gen(4), "stableidentity")
    assert d.crop == 48  # s - s // 4, as 384 of 512
    assert d.top.min() >= 0 and d.top.max() <= 16 and len(set(d.top.tolist())) > 8
    assert (d.height >= 32).all() and (d.height <= 64).all() and d.height.float().std() > 5
    ratio = d.width.double() / d.height.double()
    assert ((ratio > 0.87) & (ratio < 1.11)).all()
    assert ((d.pos_y >= 0) & (d.pos_y + d.height <= size) & (d.pos_x + d.width <= size)).all()
    assert 0.4 < d.flips.double().mean() < 0.6
    assert ((d.factors[:, :3] >= 0.8) & (d.factors[:, :3] <= 1.2)).all() and d.factors[
        :, 3
    ].abs().max() <= 0.01
    assert len({tuple(o) for o in d.order.tolist()}) == 24  # every op order occurs


def test_celebbasis_pastes_from_a_tenth_and_never_crops() -> None:
    d = draw(400, 64, _gen(5), "celebbasis")
    assert d.crop == 64 and (d.top == 0).all() and (d.left == 0).all()
    assert d.height.min() < 12 and (d.height >= 6).all()
    assert CHAINS["celebbasis"].mode == "bilinear" and CHAINS["stableidentity"].mode == "bicubic"


@pytest.mark.parametrize("method", list(CHAINS))
def test_augment_batch_moves_every_mask_channel_like_the_image(method: str) -> None:
    size, n = 32, 16
    torch.manual_seed(0)
    image = torch.rand(3, size, size) * 2 - 1
    ramp = torch.linspace(0.1, 1, size)  # never 0 inside the face, so 0 means background
    mask = torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size)])  # 2 channels (face, hair)
    images, masks, flips = augment_batch(image, mask, n, _gen(7), method)
    assert (
        images.shape == (n, 3, size, size) and masks.shape == (n, 2, size, size) and flips.dtype == torch.bool
    )
    d = draw(n, size, _gen(7), method)  # the same generator state gives the same draws
    assert torch.equal(flips, d.flips)
    expected = geometry(mask.expand(n, -1, -1, -1), d, CHAINS[method].mode).clamp(0, 1)
    torch.testing.assert_close(masks, expected)
    outside = expected.sum(dim=1) == 0  # the black background around the pasted face
    assert outside.any()
    assert (images.permute(1, 0, 2, 3)[:, outside] == -1).all()


def test_every_sample_is_augmented() -> None:
    """No sample is left as it was: the papers apply the whole chain every time."""
    size, n = 32, 32
    torch.manual_seed(2)
    image = torch.rand(3, size, size) * 2 - 1
    images, _, _ = augment_batch(image, torch.ones(1, size, size), n, _gen(8), "stableidentity")
    diff = (images - image).abs().flatten(1).amax(dim=1)
    assert (diff > 0.05).all()
