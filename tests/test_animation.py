"""engine.animation against pytti's `zoom_2d`: zoom in pixels, translate, rotate, sampling and infill modes."""
from __future__ import annotations

import pytest
import torch

from engine.animation import apply_motion, motion_grid

EXACT = dict(atol=1e-5, rtol=0)


def _image(n: int = 1, height: int = 33, width: int = 49, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _blob(height: int, width: int, x: float, y: float, sigma: float = 1.5) -> torch.Tensor:
    """(1, 3, H, W) Gaussian spot centred at pixel (x, y) (column, row)."""
    rows = torch.arange(height, dtype=torch.float64).view(-1, 1)
    cols = torch.arange(width, dtype=torch.float64).view(1, -1)
    spot = torch.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma ** 2))
    return spot.expand(1, 3, height, width).float()


def _centroid(image: torch.Tensor) -> tuple[float, float]:
    mass = image[0, 0].double()
    rows = torch.arange(mass.shape[0], dtype=torch.float64).view(-1, 1)
    cols = torch.arange(mass.shape[1], dtype=torch.float64).view(1, -1)
    return float((mass * cols).sum() / mass.sum()), float((mass * rows).sum() / mass.sum())


def test_zoom_is_pixels_per_frame_as_in_pytti():
    # pytti: the grid is scaled by (W - zoom_x) / W and (H - zoom_y) / H: zoom 3 on 256x128
    grid = motion_grid(128, 256, zoom_x=3, zoom_y=3, infill_mode="black")
    assert float(grid[0, 0, -1, 0]) == pytest.approx(253 / 256, abs=1e-6)
    assert float(grid[0, -1, 0, 1]) == pytest.approx(125 / 128, abs=1e-6)
    assert float(grid[0, 0, 0, 0]) == pytest.approx(-253 / 256, abs=1e-6)


def test_three_zoom_moves_magnify_each_axis_by_its_own_factor():
    height, width = 48, 96
    cx, cy = (width - 1) / 2, (height - 1) / 2
    image = _blob(height, width, cx + 12, cy - 8, sigma=1.0)
    grid = motion_grid(height, width, zoom_x=4, zoom_y=4, infill_mode="black")
    for _ in range(3):
        image = apply_motion(image, grid, sampling_mode="bilinear", infill_mode="black")
    x, y = _centroid(image)
    assert x - cx == pytest.approx(12 * (96 / 92) ** 3, abs=0.1)  # 1.136x in x
    assert y - cy == pytest.approx(-8 * (48 / 44) ** 3, abs=0.1)  # 1.298x in y: uneven


def test_translate_in_pytti_units_and_directions():
    height, width = 40, 64
    image = _blob(height, width, 30, 20)
    grid = motion_grid(height, width, translate_x=-4, translate_y=2, infill_mode="black")
    x, y = _centroid(apply_motion(image, grid, sampling_mode="bilinear", infill_mode="black"))
    # a pytti pixel is 2/W of the normalised width, (W - 1)/W of a pixel with align_corners=True;
    # translate_x < 0 moves content left, translate_y > 0 moves it up
    assert x == pytest.approx(30 - 4 * (width - 1) / width, abs=0.02)
    assert y == pytest.approx(20 - 2 * (height - 1) / height, abs=0.02)


def test_rotate_is_degrees_counter_clockwise_on_a_square():
    image = _image(height=33, width=33)
    torch.testing.assert_close(apply_motion(image, motion_grid(33, 33, rotate=90), sampling_mode="bilinear"),
                               torch.rot90(image, 1, (-2, -1)), **EXACT)


def test_identity_move_keeps_the_image_in_every_sampling_mode():
    image = _image()
    grid = motion_grid(33, 49, infill_mode="black")
    for mode in ("bicubic", "bilinear", "nearest"):
        torch.testing.assert_close(apply_motion(image, grid, sampling_mode=mode, infill_mode="black"), image, **EXACT)


def test_sampling_modes_differ_on_a_subpixel_move():
    image = _image(height=32, width=32)
    grid = motion_grid(32, 32, translate_x=0.5, infill_mode="black")
    outs = [apply_motion(image, grid, sampling_mode=m, infill_mode="black")
            for m in ("bicubic", "bilinear", "nearest")]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])


def test_infill_modes_fill_the_uncovered_edge():
    width = 256
    image = _image(height=8, width=width)

    def move(infill_mode: str) -> torch.Tensor:
        grid = motion_grid(8, width, translate_x=-4, infill_mode=infill_mode)
        return apply_motion(image, grid, sampling_mode="nearest", infill_mode=infill_mode)

    assert torch.equal(move("black")[..., -1], torch.zeros(1, 3, 8))
    smear = move("smear")
    assert torch.equal(smear[..., -1], image[..., -1])
    # wrap, by pytti's rule: x + 8/256 + 3 (smallest odd >= reach), modulo 2.0001, minus 1 → -0.96895,
    # i.e. column (x + 1) / 2 * 255 = 3.96 → nearest column 4
    wrap = move("wrap")
    assert torch.equal(wrap[..., 1:, -1], image[..., 1:, 4])
    # the same rule sends the top row (y = -1 → 2 mod 2.0001 - 1 = 1) to the bottom row
    assert torch.equal(wrap[..., 0, -1], image[..., -1, 4])
    mirror = move("mirror")
    assert torch.equal(mirror[..., -1], image[..., -5])  # reflected about the last column


def test_grid_is_built_once_and_reused_on_a_batch():
    image = _image(n=3)
    grid = motion_grid(33, 49, translate_x=1.3, rotate=11.0, zoom_x=4.0, zoom_y=2.0)
    out = apply_motion(image, grid)
    for i in range(3):
        torch.testing.assert_close(out[i:i + 1], apply_motion(image[i:i + 1], grid))


@pytest.mark.parametrize("kw", [dict(zoom_x=49), dict(zoom_x=-49), dict(zoom_y=33)])
def test_zoom_beyond_the_image_is_refused(kw):
    with pytest.raises(ValueError, match="zoom_x and zoom_y must be within"):
        motion_grid(33, 49, **kw)


def test_bad_modes_and_shapes_are_refused():
    grid = motion_grid(8, 8)
    with pytest.raises(ValueError, match="sampling_mode must be one of"):
        apply_motion(torch.rand(1, 3, 8, 8), grid, sampling_mode="lanczos")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        apply_motion(torch.rand(3, 8, 8), grid)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    image = _image()
    grid = motion_grid(33, 49, translate_x=2, rotate=3.0, zoom_x=1.0)
    torch.testing.assert_close(apply_motion(image.cuda(), grid.cuda()).cpu(), apply_motion(image, grid), atol=1e-4,
                               rtol=0)
