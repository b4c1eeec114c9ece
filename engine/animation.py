"""pytti's 2D animation (`Transforms.zoom_2d` / `apply_grid`): one affine warp of the image per frame.

The sampling grid depends only on the settings and the image size, so it is built once per run
on the host (`motion_grid`) and reused every frame (`apply_motion`): nothing here waits for the device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.settings import INFILL_MODES, SAMPLING_MODES

_PADDING = {"mirror": "reflection", "smear": "border", "black": "zeros", "wrap": "zeros"}


def motion_grid(height: int, width: int, *, translate_x: float = 0, translate_y: float = 0, rotate: float = 0,
                zoom_x: float = 0, zoom_y: float = 0, infill_mode: str = "wrap") -> torch.Tensor:
    """The (1, H, W, 2) grid (align_corners=True) that samples one frame's move, as pytti builds it.

    - zoom_x / zoom_y: pixels per frame; the grid is scaled by (W - zoom_x) / W and (H - zoom_y) / H,
      so content is magnified by W / (W - zoom_x) in x (an uneven zoom when W != H).
    - translate_x: pixels per frame, positive moves content right; translate_y: positive moves it up.
      A pixel here is 2 / W of the normalised width (pytti's unit; align_corners=True spans W - 1).
    - rotate: degrees per frame, applied in normalised coordinates: theta = R(rotate) diag(zx, zy).
    - infill_mode wrap: when the grid leaves [-1, 1], coordinates are wrapped as pytti does:
      add the smallest odd integer >= the largest |coordinate|, take the remainder modulo 2.0001, subtract 1.
    """
    if not (abs(zoom_x) < width and abs(zoom_y) < height):
        raise ValueError(f"zoom_x and zoom_y must be within (-width, width) and (-height, height) pixels, "
                         f"got {zoom_x}, {zoom_y} for {width}x{height}")
    zx, zy = (width - zoom_x) / width, (height - zoom_y) / height
    tx, ty = -translate_x * 2 / width, translate_y * 2 / height
    cos, sin = math.cos(math.radians(rotate)), math.sin(math.radians(rotate))
    theta = torch.tensor([[[zx * cos, -zy * sin, tx], [zx * sin, zy * cos, ty]]], dtype=torch.float64)
    grid = F.affine_grid(theta, [1, 1, height, width], align_corners=True)
    if infill_mode == "wrap":
        reach = float(grid.abs().max())
        if reach > 1:
            offset = math.ceil(reach)
            offset += 1 - offset % 2  # odd
            grid = grid.add(offset).remainder(2.0001).sub(1)
    return grid.float()


def apply_motion(image: torch.Tensor, grid: torch.Tensor, *, sampling_mode: str = "bicubic",
                 infill_mode: str = "wrap") -> torch.Tensor:
    """Warp image (N, C, H, W) with a `motion_grid`; outside the image: mirror, smear, black or wrap."""
    if image.ndim != 4:
        raise ValueError(f"image must have shape (N, C, H, W), got {tuple(image.shape)}")
    if sampling_mode not in SAMPLING_MODES or infill_mode not in INFILL_MODES:
        raise ValueError(f"sampling_mode must be one of {SAMPLING_MODES} and infill_mode one of {INFILL_MODES}, "
                         f"got {sampling_mode!r}, {infill_mode!r}")
    grid = grid.to(image.device, image.dtype).expand(image.shape[0], -1, -1, -1)
    return F.grid_sample(image, grid, mode=sampling_mode, padding_mode=_PADDING[infill_mode], align_corners=True)
