"""Tests for engine.animation.transform_2d: directions, exact shifts, fixed centre, batches."""
from __future__ import annotations

import math

import pytest
import torch

from engine.animation import transform_2d

EXACT = dict(atol=1e-5, rtol=0)


def _image(n: int = 2, height: int = 33, width: int = 49, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _blob(height: int, width: int, x: float, y: float, sigma: float = 1.5) -> torch.Tensor:
    """(1, 3, H, W) Gaussian spot centred at pixel (x, y) (column, row)."""
    rows = torch.arange(height, dtype=torch.float64).view(-1, 1)
    cols = torch.arange(width, dtype=torch.float64).view(1, -1)
    spot = torch.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma ** 2))
    return spot.expand(1, 3, height, width).float()


def _centroid(image: torch.Tensor) -> tuple[float, float]:
    """(x, y) intensity centroid of channel 0 of image 0."""
    mass = image[0, 0].double()
    rows = torch.arange(mass.shape[0], dtype=torch.float64).view(-1, 1)
    cols = torch.arange(mass.shape[1], dtype=torch.float64).view(1, -1)
    return float((mass * cols).sum() / mass.sum()), float((mass * rows).sum() / mass.sum())


def test_identity_returns_input():
    image = _image()
    assert transform_2d(image) is image
    assert transform_2d(image, translate_x=0.0, rotate=0.0, zoom_y=0.0) is image


@pytest.mark.parametrize("k", [1, 3, -2])
def test_translate_x_shifts_columns_exactly(k):
    image = _image()
    out = transform_2d(image, translate_x=k)
    width = image.shape[-1]
    if k > 0:
        torch.testing.assert_close(out[..., k:], image[..., :width - k], **EXACT)
    else:
        torch.testing.assert_close(out[..., :width + k], image[..., -k:], **EXACT)


@pytest.mark.parametrize("k", [3, -1])
def test_translate_y_shifts_rows_exactly(k):
    image = _image()
    out = transform_2d(image, translate_y=k)
    height = image.shape[-2]
    if k > 0:
        torch.testing.assert_close(out[..., k:, :], image[..., :height - k, :], **EXACT)
    else:
        torch.testing.assert_close(out[..., :height + k, :], image[..., -k:, :], **EXACT)


def test_translate_both_axes():
    image = _image(height=20, width=30)
    out = transform_2d(image, translate_x=2, translate_y=-3)
    torch.testing.assert_close(out[..., :-3, 2:], image[..., 3:, :-2], **EXACT)


def test_subpixel_translation_moves_blob():
    out = transform_2d(_blob(32, 48, 20, 16), translate_x=1.5, translate_y=-0.5)
    x, y = _centroid(out)
    assert x == pytest.approx(21.5, abs=0.05) and y == pytest.approx(15.5, abs=0.05)


@pytest.mark.parametrize("kw", [dict(rotate=17.0), dict(zoom_x=10.0, zoom_y=-7.0),
                                dict(rotate=-30.0, zoom_x=5.0, zoom_y=5.0)])
def test_centre_pixel_stays_put(kw):
    image = _image()  # odd sizes: pixel (24, 16) is the exact centre
    out = transform_2d(image, **kw)
    torch.testing.assert_close(out[..., 16, 24], image[..., 16, 24], **EXACT)


def test_rotate_90_is_counter_clockwise_rot90():
    image = _image(height=33, width=33)
    torch.testing.assert_close(transform_2d(image, rotate=90), torch.rot90(image, 1, (-2, -1)), **EXACT)


@pytest.mark.parametrize("degrees", [90.0, 30.0, -45.0])
def test_rotate_moves_point_counter_clockwise_on_non_square_image(degrees):
    height, width = 41, 65
    cx, cy = (width - 1) / 2, (height - 1) / 2
    out = transform_2d(_blob(height, width, cx + 10, cy), rotate=degrees)
    a = math.radians(degrees)
    # Counter-clockwise on screen with y down: (10, 0) → (10 cos a, -10 sin a).
    x, y = _centroid(out)
    assert x == pytest.approx(cx + 10 * math.cos(a), abs=0.1)
    assert y == pytest.approx(cy - 10 * math.sin(a), abs=0.1)


def test_zoom_scales_about_centre_per_axis():
    height, width = 41, 65
    cx, cy = (width - 1) / 2, (height - 1) / 2
    image = _blob(height, width, cx + 8, cy - 6, sigma=1.0)
    x, y = _centroid(transform_2d(image, zoom_x=50))
    assert x == pytest.approx(cx + 12, abs=0.1) and y == pytest.approx(cy - 6, abs=0.1)
    x, y = _centroid(transform_2d(image, zoom_y=50))
    assert x == pytest.approx(cx + 8, abs=0.1) and y == pytest.approx(cy - 9, abs=0.1)
    x, y = _centroid(transform_2d(image, zoom_x=-25, zoom_y=-25))
    assert x == pytest.approx(cx + 6, abs=0.1) and y == pytest.approx(cy - 4.5, abs=0.1)


def test_rotate_then_zoom_then_translate():
    height, width = 41, 65
    cx, cy = (width - 1) / 2, (height - 1) / 2
    out = transform_2d(_blob(height, width, cx + 6, cy), rotate=90, zoom_y=50, translate_x=4)
    x, y = _centroid(out)  # (6, 0) → rotate (0, -6) → zoom y (0, -9) → translate (4, -9)
    assert x == pytest.approx(cx + 4, abs=0.1) and y == pytest.approx(cy - 9, abs=0.1)


def test_batch_matches_single_images():
    image = _image(n=3)
    kw = dict(translate_x=1.3, translate_y=-2.1, rotate=11.0, zoom_x=4.0, zoom_y=2.0)
    out = transform_2d(image, **kw)
    assert out.shape == image.shape
    for i in range(3):
        torch.testing.assert_close(out[i:i + 1], transform_2d(image[i:i + 1], **kw))


def test_gradient_flows():
    image = _image(n=1).requires_grad_()
    transform_2d(image, rotate=5.0, zoom_x=3.0).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    image = _image().cuda()
    out = transform_2d(image, translate_x=2, rotate=3.0, zoom_x=1.0)
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), transform_2d(image.cpu(), translate_x=2, rotate=3.0, zoom_x=1.0),
                               **EXACT)


@pytest.mark.parametrize("kw, match", [(dict(zoom_x=-100), "zoom_x and zoom_y must be > -100"),
                                       (dict(zoom_y=-150), "zoom_x and zoom_y must be > -100")])
def test_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        transform_2d(_image(), **kw)


def test_rejects_non_batched_image():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        transform_2d(torch.rand(3, 8, 8), rotate=1.0)
