"""engine.cutouts against pytti's pytti_classic sampler and augmentations."""
from __future__ import annotations

import math

import pytest
import torch

from engine.cutouts import (BORDER_MODES, colour_matrix, crop_corners, crop_sides, render_cutouts,
                            sample_cutouts)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample(n: int = 64, height: int = 32, width: int = 48, **kw):
    kw = {"cut_size": 16, "cut_pow": 1.0, "border": 0.25, "augment": False, **kw}
    return sample_cutouts(n, height, width, rng=_gen(kw.pop("seed", 0)), **kw)


def test_full_height_squares_when_the_perceptor_is_larger_than_the_image():
    # 256x128 at 224 px: clip(r, 224/128, 1) = 1, so every crop is 128 px (pytti's study)
    sides = crop_sides(500, 128, 256, 224, 1.0, _gen(), torch.device("cpu"))
    assert torch.equal(sides, torch.full((500,), 128.0))


def test_side_law_is_pytti_classic():
    # side = floor(m * clip(N(0.8, 0.3), cut/m, 1) ** cut_pow); m = 100, cut 20
    g = _gen(3)
    sides = crop_sides(20000, 100, 150, 20, 2.0, g, torch.device("cpu"))
    r = (0.8 + 0.3 * torch.randn(20000, generator=_gen(3))).clamp(0.2, 1.0)
    assert torch.equal(sides, (100 * r ** 2).floor())
    assert sides.min() >= 4 and sides.max() == 100
    assert (sides == 100).float().mean() == pytest.approx(0.25, abs=0.02)  # P(N(0.8, 0.3) > 1)


def test_clamp_border_puts_a_quarter_of_crops_at_each_edge():
    # pytti, W=256, side=128, padding=64: floor(u * 257 - 64) clamped to [0, 129] → 64/257 at 0
    side = torch.full((40000,), 128.0)
    x0 = crop_corners(side, 256, 0.25, "clamp", _gen(1))
    assert x0.min() == 0 and x0.max() == 128  # pytti's 129 (a crop one pixel short) stops at 128
    assert (x0 == 0).float().mean() == pytest.approx(64 / 257, abs=0.01)
    assert (x0 == 128).float().mean() == pytest.approx(65 / 257, abs=0.01)
    assert torch.equal(crop_corners(side, 256, 0.0, "clamp", _gen(1)).clamp(0, 128),
                       crop_corners(side, 256, 0.0, "clamp", _gen(1)))


def test_padded_border_modes_reach_outside_by_the_padding():
    side = torch.full((20000,), 20.0)
    x0 = crop_corners(side, 100, 0.1, "mirror", _gen(2))  # padding 10 px
    assert x0.min() == -10 and x0.max() == 100 - 20 + 10


@pytest.mark.parametrize("mode", BORDER_MODES)
def test_plain_crop_is_the_right_pixels(mode):
    image = torch.rand(1, 3, 24, 40, generator=_gen(5))
    cutouts = _sample(1, 24, 40, cut_size=8, border_mode=mode)
    cutouts.box[:] = torch.tensor([[5.0, 3.0, 8.0]])  # 8x8 crop at column 5, row 3: pixel-exact
    out = render_cutouts(image, cutouts, _gen())
    torch.testing.assert_close(out, image[..., 3:11, 5:13], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode, column", [("mirror", 1), ("smear", 0), ("wrap", 39)])
def test_border_modes_fill_outside_as_pytti_pads(mode, column):
    image = torch.rand(1, 3, 24, 40, generator=_gen(5))
    cutouts = _sample(1, 24, 40, cut_size=8, border_mode=mode)
    cutouts.box[:] = torch.tensor([[-1.0, 3.0, 8.0]])  # starts one column left of the image
    out = render_cutouts(image, cutouts, _gen())
    torch.testing.assert_close(out[..., 0], image[..., 3:11, column], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., 1:], image[..., 3:11, 0:7], atol=1e-5, rtol=0)


def test_black_border_is_zero_outside():
    image = torch.rand(1, 3, 24, 40, generator=_gen(5))
    cutouts = _sample(1, 24, 40, cut_size=8, border_mode="black")
    cutouts.box[:] = torch.tensor([[-2.0, 3.0, 8.0]])
    out = render_cutouts(image, cutouts, _gen())
    torch.testing.assert_close(out[..., :2], torch.zeros(1, 3, 8, 2), atol=1e-5, rtol=0)


def test_no_augmentation_without_augment():
    cutouts = _sample(8)
    eye = torch.eye(3).expand(8, 3, 3)
    assert torch.equal(cutouts.warp, eye) and torch.equal(cutouts.colour, eye)
    assert torch.equal(cutouts.affine, eye[:, :2]) and not cutouts.noise_std.any()
    assert not (cutouts.erase[:, 2:] - cutouts.erase[:, :2]).any()


def test_augmentation_rates_are_pyttis():
    n = 20000
    c = _sample(n, augment=True, seed=7)
    # a flip makes the 2x2 part's determinant negative
    det = torch.linalg.det(c.affine[:, :, :2])
    assert (det < 0).float().mean() == pytest.approx(0.3, abs=0.015)
    moved = (c.affine[:, :, 2].abs().sum(-1) > 0)
    assert moved.float().mean() == pytest.approx(0.8, abs=0.015)
    angles = torch.atan2(c.affine[:, 1, 0], c.affine[:, 1, 1]).abs()
    assert angles.max() <= math.radians(30) + 1e-5 and angles.max() > math.radians(29)
    assert c.affine[:, :, 2].abs().max() <= 0.2 * math.sqrt(2) + 1e-5
    warped = (c.warp - torch.eye(3)).abs().sum((1, 2)) > 1e-6
    assert warped.float().mean() == pytest.approx(0.4, abs=0.015)
    jittered = (c.colour - torch.eye(3)).abs().sum((1, 2)) > 1e-7
    assert jittered.float().mean() == pytest.approx(0.7, abs=0.015)
    area = (c.erase[:, 2] - c.erase[:, 0]) * (c.erase[:, 3] - c.erase[:, 1])
    assert (area > 0).float().mean() == pytest.approx(0.7, abs=0.015)
    assert area[area > 0].min() >= 0.1 - 1e-5 and area.max() <= 0.4 + 1e-5
    assert c.noise_std.min() >= 0 and c.noise_std.max() <= 0.1


def test_colour_matrix_keeps_grey_and_turns_hue():
    m = colour_matrix(torch.tensor([0.0, 0.01, 0.0]), torch.tensor([1.0, 1.0, 1.01]))
    grey = torch.full((3,), 0.5)
    for i in range(3):
        torch.testing.assert_close(m[i] @ grey, grey)
    torch.testing.assert_close(m[0], torch.eye(3))
    red = torch.tensor([1.0, 0.0, 0.0])
    assert (m[1] @ red)[1] > 0  # a positive hue turn moves red toward green


def test_erased_and_perspective_corners_are_zero_before_normalising():
    image = torch.rand(1, 3, 32, 32, generator=_gen(1)) * 0.5 + 0.25
    c = _sample(1, 32, 32, cut_size=16)
    c.erase[:] = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    out = render_cutouts(image, c, _gen(), mean=mean, std=std)
    torch.testing.assert_close(out[0, :, :8, :8], (-mean / std)[:, None, None].expand(3, 8, 8))
    assert (out[0, :, 8:, 8:] != (-mean / std)[:, None, None]).all()


def test_same_seed_same_cutouts_different_seed_different():
    image = torch.rand(1, 3, 32, 48, generator=_gen(9))
    a = render_cutouts(image, _sample(6, augment=True, seed=1), _gen(1))
    assert torch.equal(a, render_cutouts(image, _sample(6, augment=True, seed=1), _gen(1)))
    assert not torch.equal(a, render_cutouts(image, _sample(6, augment=True, seed=2), _gen(1)))


def test_gradient_reaches_image():
    image = torch.rand(1, 3, 32, 48, generator=_gen(2)).requires_grad_()
    render_cutouts(image, _sample(6, augment=True), _gen()).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


@pytest.mark.parametrize("kw, match", [
    (dict(border=math.inf), "border must be a finite number"),
    (dict(border_mode="reflect"), "border_mode must be one of"),
    (dict(cut_pow=0.0), "cut_pow must be > 0"),
])
def test_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        _sample(4, **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    gen = torch.Generator("cuda").manual_seed(0)
    cutouts = sample_cutouts(8, 32, 48, cut_size=16, cut_pow=1.0, border=0.25, augment=True, rng=gen)
    out = render_cutouts(torch.rand(1, 3, 32, 48, device="cuda"), cutouts, gen)
    assert out.is_cuda and out.shape == (8, 3, 16, 16)
