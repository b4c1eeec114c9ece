"""pytti-style 2D animation: a per-frame affine warp of the image between frames."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def transform_2d(image: torch.Tensor, *, translate_x: float = 0, translate_y: float = 0,
                 rotate: float = 0, zoom_x: float = 0, zoom_y: float = 0) -> torch.Tensor:
    """Warp image (N, 3, H, W) by one frame's 2D motion; the same warp for every image.

    Conventions, in screen pixels (x right, y down), about the image centre:
    - translate_x / translate_y: pixels per frame; positive moves content right / down.
    - rotate: degrees per frame; positive turns content counter-clockwise on screen.
    - zoom_x / zoom_y: percent per frame; content is scaled by 1 + zoom / 100 along x / y
      (positive zooms in); must be > -100.
    Content is rotated, then zoomed, then translated: p' = Z R p + t.

    One bilinear affine_grid + grid_sample with reflection padding (align_corners=False).
    All zeros returns `image` itself. Integer translations shift pixels exactly (up to float
    rounding in the grid); uncovered edges are filled by reflection.
    """
    if image.ndim != 4:
        raise ValueError(f"image must have shape (N, C, H, W), got {tuple(image.shape)}")
    if not (zoom_x > -100 and zoom_y > -100):
        raise ValueError(f"zoom_x and zoom_y must be > -100 (percent), got {zoom_x}, {zoom_y}")
    if translate_x == translate_y == rotate == zoom_x == zoom_y == 0:
        return image
    n, _, height, width = image.shape
    # Output pixel p samples the input at M^-1 (p - t), M = Z R, with R counter-clockwise on
    # screen (y down): R = [[cos, sin], [-sin, cos]], so R^-1 = [[cos, -sin], [sin, cos]].
    angle = math.radians(rotate)
    cos, sin = math.cos(angle), math.sin(angle)
    ix, iy = 100 / (100 + zoom_x), 100 / (100 + zoom_y)
    inv = [[cos * ix, -sin * iy], [sin * ix, cos * iy]]
    # Normalised (align_corners=False) offsets from the centre are D p with D = diag(2/W, 2/H):
    # theta = [D M^-1 D^-1 | -D M^-1 t].
    d = (2 / width, 2 / height)
    tx, ty = translate_x, translate_y
    theta = [[d[r] * inv[r][c] / d[c] for c in range(2)] + [-d[r] * (inv[r][0] * tx + inv[r][1] * ty)]
             for r in range(2)]
    theta = torch.tensor(theta, dtype=image.dtype, device=image.device).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
