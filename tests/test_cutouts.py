"""Tests for engine.cutouts: sampling law, rendering, augmentations, determinism."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.cutouts import Cutouts, cut_size_bounds, render_cutouts, sample_cutouts


EXACT = dict(atol=1e-5, rtol=0)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample(n: int = 16, height: int = 32, width: int = 64, seed: int = 0, **kw) -> Cutouts:
    args = dict(cut_size=16, cut_pow=1.0, border=0.0, augment=False) | kw
    return sample_cutouts(n, height, width, generator=_gen(seed), **args)


def test_cut_size_bounds():
    assert cut_size_bounds(32, 64, 16) == (16, 32)
    assert cut_size_bounds(64, 48, 224) == (48, 48)
    assert cut_size_bounds(10, 10, 10) == (10, 10)


@pytest.mark.parametrize("augment", [False, True])
def test_shapes_and_range_for_several_sizes(augment):
    image = torch.rand(1, 3, 32, 64)
    cutouts = _sample(8, augment=augment)
    assert cutouts.theta.shape == (8, 2, 3)
    assert cutouts.colour.shape == (8, 3)
    assert cutouts.noise_std.shape == (8,)
    for size in [(32, 32), (64, 64), (24, 40)]:
        out = render_cutouts(image, cutouts, size, _gen(1))
        assert out.shape == (8, 3, *size)
        assert out.dtype == image.dtype
        if not augment:  # only noise may leave [0, 1]
            assert out.min() >= 0 and out.max() <= 1


def test_side_within_bounds_and_square_in_pixels():
    height, width = 48, 80
    min_size, max_size = cut_size_bounds(height, width, 20)
    for cut_pow in (0.3, 1.0, 3.0):
        theta = _sample(4000, height, width, cut_size=20, cut_pow=cut_pow).theta
        side_x, side_y = theta[:, 0, 0] * width, theta[:, 1, 1] * height
        torch.testing.assert_close(side_x, side_y)
        assert side_x.min() >= min_size - 1e-4 and side_x.max() <= max_size + 1e-4
        if cut_pow == 1.0:  # uniform sides span the whole range
            assert side_x.min() < min_size + 1 and side_x.max() > max_size - 1


def test_cut_pow_shifts_mean_side():
    def mean_side(cut_pow: float) -> float:
        return (_sample(4000, 48, 80, cut_size=8, cut_pow=cut_pow).theta[:, 0, 0] * 80).mean()

    small, uniform, large = mean_side(3.0), mean_side(1.0), mean_side(0.3)
    assert small < uniform < large
    # E[u**p] = 1 / (p + 1): 8 + 40 / (p + 1).
    assert abs(uniform - 28.0) < 1.0


def _grid(theta: torch.Tensor, size: int = 16) -> torch.Tensor:
    return F.affine_grid(theta, [theta.shape[0], 3, size, size], align_corners=False)


def _extent(theta: torch.Tensor) -> torch.Tensor:
    """Per-crop max |x|, |y| of the crop's edges (normalised): |centre| + half side."""
    return theta[:, :, 2].abs() + theta[:, :, :2].abs().sum(-1)


def test_border_zero_keeps_crops_inside():
    theta = _sample(2000, 32, 64, cut_size=4, cut_pow=1.0, border=0.0).theta
    assert _grid(theta).abs().max() <= 1
    assert _extent(theta).max() <= 1 + 1e-5


def test_border_extends_reach_by_border_times_max_size():
    height, width, border = 32, 64, 0.25
    theta = _sample(4000, height, width, cut_size=4, border=border).theta
    grow = border * min(height, width)  # pixels on every side
    limit = torch.tensor([1 + 2 * grow / width, 1 + 2 * grow / height])
    extent = _extent(theta)
    assert (extent <= limit + 1e-5).all()
    assert (extent.max(0).values > limit - 0.02).all()  # and the reach is used in full


def test_whole_image_crop_reproduces_resized_image():
    image = torch.rand(1, 3, 40, 40)
    cutouts = _sample(3, 40, 40, cut_size=40, cut_pow=1.0)
    identity = torch.eye(2, 3).expand(3, 2, 3)
    torch.testing.assert_close(cutouts.theta, identity)
    for size in [(40, 40), (24, 24), (64, 64)]:
        out = render_cutouts(image, cutouts, size, _gen(1))
        expected = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, expected.expand_as(out), **EXACT)


def test_known_crop_is_the_right_pixels():
    # Crop 16 px of a 32x64 image with its top-left at pixel (row 8, col 40): theta by hand.
    image = torch.rand(1, 3, 32, 64)
    side, top, left = 16, 8, 40
    cx, cy = (2 * left + side) / 64 - 1, (2 * top + side) / 32 - 1
    theta = torch.tensor([[[side / 64, 0, cx], [0, side / 32, cy]]])
    cutouts = Cutouts(theta=theta, colour=torch.ones(1, 3), noise_std=torch.zeros(1))
    out = render_cutouts(image, cutouts, (side, side), _gen())
    torch.testing.assert_close(out, image[..., top:top + side, left:left + side], **EXACT)


def test_no_augmentation_without_augment():
    cutouts = _sample(500, augment=False)
    assert (cutouts.theta[:, 0, 0] > 0).all() and (cutouts.theta[:, 1, 1] > 0).all()
    assert (cutouts.theta[:, 0, 1] == 0).all() and (cutouts.theta[:, 1, 0] == 0).all()
    assert (cutouts.colour == 1).all()
    assert (cutouts.noise_std == 0).all()
    # No noise: the render does not depend on the render generator.
    image = torch.rand(1, 3, 32, 64)
    assert torch.equal(render_cutouts(image, cutouts, (8, 8), _gen(1)),
                       render_cutouts(image, cutouts, (8, 8), _gen(2)))


def test_augmentations_with_augment():
    height, width = 32, 64
    cutouts = _sample(500, height, width, augment=True)
    # In pixels the linear part is s * k * R(angle) @ diag(±1, 1): a flipped similarity.
    pixel = cutouts.theta[:, :, :2] * torch.tensor([width, height]).view(1, 2, 1)
    flip = torch.linalg.det(pixel).sign()
    assert 0.35 < (flip < 0).float().mean() < 0.65
    rotation = pixel * torch.stack([flip, torch.ones_like(flip)], -1).unsqueeze(1)
    torch.testing.assert_close(rotation[:, 0, 0], rotation[:, 1, 1])
    torch.testing.assert_close(rotation[:, 1, 0], -rotation[:, 0, 1])
    angle = torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0]).rad2deg()
    assert angle.abs().max() <= 15 + 1e-4 and angle.abs().max() > 10
    assert ((cutouts.colour >= 0.9) & (cutouts.colour <= 1.1)).all()
    assert (cutouts.colour != 1).all()
    assert cutouts.colour.min() < 0.91 and cutouts.colour.max() > 1.09
    assert ((cutouts.noise_std >= 0) & (cutouts.noise_std <= 0.1)).all()
    assert (cutouts.noise_std > 0).all() and cutouts.noise_std.max() > 0.09
    # Noise comes from the render generator.
    image = torch.rand(1, 3, height, width)
    a = render_cutouts(image, cutouts, (8, 8), _gen(1))
    assert torch.equal(a, render_cutouts(image, cutouts, (8, 8), _gen(1)))
    assert not torch.equal(a, render_cutouts(image, cutouts, (8, 8), _gen(2)))


def test_augment_scale_jitter_about_the_crop_centre():
    plain = _sample(500, 32, 64, cut_size=32, seed=3)  # min_size = max_size = 32
    augmented = _sample(500, 32, 64, cut_size=32, seed=3, augment=True)
    # Same seed, same crops: augmentation keeps each crop's centre and jitters its size by <= 5%.
    assert torch.equal(plain.theta[:, :, 2], augmented.theta[:, :, 2])
    scale = augmented.theta[:, 0, :2].norm(dim=-1) * 64 / 32
    assert scale.min() >= 0.95 - 1e-5 and scale.max() <= 1.05 + 1e-5
    assert scale.min() < 0.96 and scale.max() > 1.04


def _identity_crops(colour: list[list[float]]) -> Cutouts:
    n = len(colour)
    return Cutouts(theta=torch.eye(2, 3).expand(n, 2, 3), colour=torch.tensor(colour),
                   noise_std=torch.zeros(n))


def test_colour_multipliers():
    image = torch.rand(1, 3, 16, 16) * 0.5 + 0.25
    luma = 0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]
    out = render_cutouts(image, _identity_crops([[1, 1, 1], [0.5, 1, 1], [1, 0, 1], [1, 1, 0], [1, 2, 1]]),
                         (16, 16), _gen())
    torch.testing.assert_close(out[0], image[0], **EXACT)
    torch.testing.assert_close(out[1], image[0] * 0.5, **EXACT)  # brightness
    torch.testing.assert_close(out[2], luma.mean().expand(3, 16, 16), **EXACT)  # no contrast: flat mean luma
    torch.testing.assert_close(out[3], luma.expand(3, 16, 16), **EXACT)  # no saturation: grey
    mean = luma.mean()
    torch.testing.assert_close(out[4], (image[0] - mean) * 2 + mean, **EXACT)  # contrast


def test_flip_mirrors_the_crop():
    image = torch.rand(1, 3, 32, 64)
    cutouts = _sample(4, cut_size=12)
    mirrored = Cutouts(theta=cutouts.theta * torch.tensor([[-1.0, 1, 1], [1, 1, 1]]),
                       colour=cutouts.colour, noise_std=cutouts.noise_std)
    torch.testing.assert_close(render_cutouts(image, mirrored, (12, 12), _gen()),
                               render_cutouts(image, cutouts, (12, 12), _gen()).flip(-1))


@pytest.mark.parametrize("augment", [False, True])
def test_same_seed_same_cutouts_different_seed_different(augment):
    a, b, c = (_sample(8, augment=augment, seed=s) for s in (5, 5, 6))
    for name in ("theta", "colour", "noise_std"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.theta, c.theta)
    if augment:
        assert not torch.equal(a.colour, c.colour)
        assert not torch.equal(a.noise_std, c.noise_std)


def test_gradient_reaches_image():
    image = torch.rand(1, 3, 32, 64, requires_grad=True)
    out = render_cutouts(image * 0.5 + 0.25, _sample(6, augment=True), (16, 16), _gen())
    out.square().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_tensors_on_generator_device_and_dtype_follows_image():
    cutouts = _sample(4)
    assert cutouts.theta.device == cutouts.colour.device == cutouts.noise_std.device == torch.device("cpu")
    image = torch.rand(1, 3, 32, 64, dtype=torch.float64)
    assert render_cutouts(image, cutouts, (8, 8), _gen()).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    gen = torch.Generator("cuda").manual_seed(0)
    cutouts = sample_cutouts(8, 32, 64, cut_size=16, cut_pow=1.0, border=0.1, augment=True, generator=gen)
    assert cutouts.theta.is_cuda and cutouts.colour.is_cuda and cutouts.noise_std.is_cuda
    image = torch.rand(1, 3, 32, 64, device="cuda", requires_grad=True)
    out = render_cutouts(image, cutouts, (24, 24), gen)
    assert out.is_cuda and out.shape == (8, 3, 24, 24)
    out.sum().backward()
    assert image.grad.abs().sum() > 0


@pytest.mark.parametrize("kw, match", [
    (dict(n=0), "n must be >= 1"),
    (dict(cut_pow=0.0), "cut_pow must be > 0"),
    (dict(cut_pow=float("nan")), "cut_pow must be > 0"),
    (dict(border=-0.1), "border must be >= 0"),
    (dict(cut_size=0), "cut_size must be >= 1"),
    (dict(height=0), "height and width must be >= 1"),
])
def test_validation(kw, match):
    args = dict(n=4, height=32, width=64, cut_size=16, cut_pow=1.0, border=0.0, augment=False) | kw
    with pytest.raises(ValueError, match=match):
        sample_cutouts(args.pop("n"), args.pop("height"), args.pop("width"), generator=_gen(), **args)


def test_render_rejects_batched_image():
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        render_cutouts(torch.rand(2, 3, 8, 8), _sample(2, 8, 8, cut_size=4), (4, 4), _gen())


def test_normalisation_is_folded_into_the_colour_map():
    image = torch.rand(1, 3, 32, 64)
    cutouts = _sample(6, augment=True, seed=3)
    mean, std = torch.tensor([0.48, 0.46, 0.41]), torch.tensor([0.27, 0.26, 0.28])
    plain = render_cutouts(image, cutouts, (16, 16), _gen(4))
    normalised = render_cutouts(image, cutouts, (16, 16), _gen(4), mean=mean, std=std)
    torch.testing.assert_close(normalised, (plain - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), **EXACT)
