"""Bilinear `grid_sample` (align_corners=False) whose backward is deterministic on CUDA.

`F.grid_sample`'s CUDA backward adds into the input's gradient with atomics, so under
`torch.use_deterministic_algorithms(True)` it raises. Here each of the four corners is read by
advanced indexing, whose backward (`index_put_` with accumulate) has a deterministic CUDA kernel,
and weighted by differentiable bilinear weights: same values and gradients as `F.grid_sample`
(tested on CPU), at the cost of four gathered copies of the output.
"""
from __future__ import annotations

import torch

PADDING_MODES = ("zeros", "border")


def grid_sample(image: torch.Tensor, grid: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """`F.grid_sample(image, grid, "bilinear", padding_mode, align_corners=False)`: image (B, C, H, W)
    with B 1 (shared by every grid) or N; grid (N, Ho, Wo, 2) of (x, y) in [-1, 1] → (N, C, Ho, Wo)."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode={padding_mode!r}: allowed values are {', '.join(PADDING_MODES)}")
    b, c, h, w = image.shape
    n = grid.shape[0]
    if b not in (1, n):
        raise ValueError(f"image batch {b}: must be 1 or the grid's batch {n}")
    x = ((grid[..., 0] + 1) * w - 1) / 2
    y = ((grid[..., 1] + 1) * h - 1) / 2
    if padding_mode == "border":
        x, y = x.clamp(0, w - 1), y.clamp(0, h - 1)
    x0, y0 = x.detach().floor(), y.detach().floor()
    fx, fy = x - x0, y - y0
    flat = image.transpose(0, 1).reshape(c, b * h * w)
    offset = (torch.arange(n, device=image.device) * (h * w) if b > 1 else torch.zeros(n, device=image.device))
    offset = offset.long().view(n, 1, 1)
    out = image.new_zeros(())
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
        index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long() + offset
        out = out + flat[:, index] * (weight * inside).to(image.dtype)
    return out.transpose(0, 1)
