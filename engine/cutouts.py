"""Cutouts: random square crops of an image, resized for a perceptor, in one batched resample.

A step samples one `Cutouts` (the crops and their augmentations) and renders it once per
perceptor at that perceptor's input size, so every perceptor sees the same crops.
Every random draw takes an explicit `torch.Generator`; nothing syncs with the host.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

_MAX_ROTATION = math.radians(15.0)
_SCALE_JITTER = 0.05
_COLOUR_JITTER = 0.1
_MAX_NOISE_STD = 0.1


@dataclass
class Cutouts:
    """N crops: `theta` (N, 2, 3) for F.affine_grid (align_corners=False), output → input
    normalised coordinates; `colour` (N, 3) brightness, contrast, saturation multipliers
    (1 = unchanged); `noise_std` (N,) Gaussian noise std (0 = none)."""

    theta: torch.Tensor
    colour: torch.Tensor
    noise_std: torch.Tensor


def cut_size_bounds(height: int, width: int, cut_size: int) -> tuple[int, int]:
    """(min_size, max_size) of a crop side in pixels: max = min(H, W), min = min(H, W, cut_size)."""
    max_size = min(height, width)
    return min(max_size, cut_size), max_size


def _uniform(n: int, low: float, high: float, generator: torch.Generator,
             device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def sample_cutouts(n: int, height: int, width: int, *, cut_size: int, cut_pow: float, border: float,
                   augment: bool, generator: torch.Generator,
                   device: torch.device | str | None = None) -> Cutouts:
    """Sample n square crops of an H×W image (square in pixels).

    Side s = min_size + (max_size - min_size) * u**cut_pow, u ~ U(0, 1) (see `cut_size_bounds`):
    cut_pow > 1 favours small crops, < 1 large ones. The centre is uniform such that the crop lies
    inside the image grown by `border` * max_size pixels on every side (0 = fully inside; the
    outside is filled by reflection when rendering).

    augment=True adds a horizontal flip (p = 0.5), rotation in ±15° and scale jitter in ±5% about
    the crop centre (these may reach past the bounds above), brightness/contrast/saturation
    multipliers in [0.9, 1.1] and a noise std in [0, 0.1]. augment=False gives pure crops.
    Tensors are made on `device` (default: the generator's device).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}x{width}")
    if cut_size < 1:
        raise ValueError(f"cut_size must be >= 1, got {cut_size}")
    if not cut_pow > 0:
        raise ValueError(f"cut_pow must be > 0, got {cut_pow}")
    if not border >= 0:
        raise ValueError(f"border must be >= 0, got {border}")
    device = generator.device if device is None else torch.device(device)
    min_size, max_size = cut_size_bounds(height, width, cut_size)

    u = torch.rand(n, generator=generator, device=device)
    side = min_size + (max_size - min_size) * u ** cut_pow
    # Centre range in normalised coordinates: |c| <= 1 - (s - 2 * border_px) / dim.
    grow = 2 * border * max_size
    cx = (1 - (side - grow) / width) * _uniform(n, -1, 1, generator, device)
    cy = (1 - (side - grow) / height) * _uniform(n, -1, 1, generator, device)

    if augment:
        flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
        angle = _uniform(n, -_MAX_ROTATION, _MAX_ROTATION, generator, device)
        scale = _uniform(n, 1 - _SCALE_JITTER, 1 + _SCALE_JITTER, generator, device)
        colour = torch.rand(n, 3, generator=generator, device=device)
        colour = 1 + _COLOUR_JITTER * (2 * colour - 1)
        noise_std = _uniform(n, 0, _MAX_NOISE_STD, generator, device)
    else:
        flip = scale = torch.ones(n, device=device)
        angle = torch.zeros(n, device=device)
        colour = torch.ones(n, 3, device=device)
        noise_std = torch.zeros(n, device=device)

    # Linear part diag(s/W, s/H) @ (scale * R(angle)) @ diag(flip, 1): the rotation acts in
    # the crop's square output space, so it is a true rotation in pixels.
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    sx, sy = side / width, side / height
    theta = torch.stack([
        torch.stack([sx * cos * flip, -sx * sin, cx], dim=-1),
        torch.stack([sy * sin * flip, sy * cos, cy], dim=-1),
    ], dim=1)
    return Cutouts(theta=theta, colour=colour, noise_std=noise_std)


_LUMA = (0.299, 0.587, 0.114)  # Rec. 601


def colour_maps(mean_rgb: torch.Tensor, colour: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour jitter of each cutout as an affine map of its pixels: x ↦ A x + b.

    Brightness multiplies; contrast scales about the cutout's mean luma; saturation scales
    about each pixel's luma. All three are linear in x, so they fold into one 3×3 matrix and a
    bias per cutout. `mean_rgb` (N, 3) is each cutout's mean colour; returns A (N, 3, 3), b (N, 3).
    """
    brightness, contrast, saturation = colour.unbind(-1)
    eye = torch.eye(3, dtype=colour.dtype, device=colour.device)
    grey = torch.zeros_like(eye)  # x ↦ luma(x) in every channel; filled on the device, no host copy
    for channel, weight in enumerate(_LUMA):
        grey[:, channel] = weight
    saturate = saturation[:, None, None] * eye + (1 - saturation)[:, None, None] * grey
    matrix = (contrast * brightness)[:, None, None] * saturate
    mean_luma = sum(mean_rgb[:, c] * w for c, w in enumerate(_LUMA))
    pivot = (1 - contrast) * brightness * mean_luma  # saturate keeps grey levels: S·1 = 1
    return matrix, pivot[:, None].expand(-1, 3)


def render_cutouts(image: torch.Tensor, cutouts: Cutouts, size: tuple[int, int],
                   generator: torch.Generator, mean: Sequence[float] | torch.Tensor = (0.0, 0.0, 0.0),
                   std: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Render cutouts of image (1, 3, H, W) in [0, 1] → (N, 3, size[0], size[1]), normalised as
    (x - mean) / std for a perceptor (default: not normalised).

    One bilinear affine_grid + grid_sample (reflection padding) for all N; then the colour
    jitter and the normalisation as one batched affine colour map (`colour_maps`), and Gaussian
    noise drawn from `generator`. Values are not clamped (noise may leave [0, 1], as in the
    Crowson notebooks). Differentiable w.r.t. image.
    """
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must have shape (1, 3, H, W), got {tuple(image.shape)}")
    n = cutouts.theta.shape[0]
    grid = F.affine_grid(cutouts.theta.to(image.dtype), [n, 3, *size], align_corners=False)
    x = F.grid_sample(image.expand(n, -1, -1, -1), grid, mode="bilinear",
                      padding_mode="reflection", align_corners=False).flatten(2)
    mean = torch.as_tensor(mean, dtype=image.dtype, device=image.device)
    std = torch.as_tensor(std, dtype=image.dtype, device=image.device)
    # the contrast pivot (each cutout's mean colour) is treated as a constant: no gradient through it
    matrix, bias = colour_maps(x.detach().mean(-1), cutouts.colour.to(image.dtype))
    out = torch.baddbmm(((bias - mean) / std)[..., None], matrix / std[:, None], x)
    noise = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
    out = out + noise.mul_(cutouts.noise_std.to(image.dtype)[:, None, None] / std[:, None])
    return out.view(n, 3, *size)
