"""pytti's cutouts (`Perceptor/cutouts/samplers.py` and `augs.py`, "pytti_classic"), batched.

Each perceptor gets its own cutouts at its own input size: `sample_cutouts` draws N square crops
and their augmentations, `render_cutouts` makes them in one `grid_sample` plus one batched colour
map. Every random draw takes an explicit `torch.Generator` (`rng`); nothing waits for the device.

Crop sizes and places (pytti_classic):
- side = floor(m · clip(r, cut_size / m, 1) ** cut_pow) pixels, r ~ N(0.8, 0.3), m = min(H, W);
  when cut_size > m every crop is a full m × m square (`torch.clamp` with min > max gives max).
- `border_mode` clamp: the top-left corner is floor(u · (W − side + 1 + 2p) − p), p = round(W · border),
  clamped into the image; so about a `border` share of crops sits at each edge. Other border modes
  pad the image by p (mirror: reflect, smear: replicate, wrap: circular, black: zeros) and let the
  corner start up to min(side, p) outside.
Augmentations (kornia, in this order): horizontal flip p 0.3; affine p 0.8 with rotation ±30° and
translation ±10 % of the side, border padding; perspective p 0.4 moving each corner inward by up to
10 % of the side per axis, zero padding; hue ±0.01 turn and saturation ×(1 ± 0.01) p 0.7; random
erasing p 0.7 of 10–40 % of the area, aspect ratio in [0.3, 1/0.3], filled with 0. Then noise:
std ~ U(0, 0.1) per cutout. augment=False gives plain crops, without noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from engine.gridsample import grid_sample as deterministic_grid_sample

BORDER_MODES = ("clamp", "mirror", "smear", "wrap", "black")
FLIP_P = 0.3
AFFINE_P, MAX_DEGREES, MAX_TRANSLATE = 0.8, 30.0, 0.1
PERSPECTIVE_P, DISTORTION = 0.4, 0.2
JITTER_P, MAX_HUE, MAX_SATURATION = 0.7, 0.01, 0.01
ERASE_P, ERASE_AREA, ERASE_RATIO = 0.7, (0.1, 0.4), (0.3, 1 / 0.3)
NOISE_FAC = 0.1
_LUMA = (0.299, 0.587, 0.114)  # Rec. 601


@dataclass
class Cutouts:
    """N square crops of `size` × `size` pixels.

    `box` (N, 3): x0, y0, side in image pixels (the crop is columns [x0, x0 + side), rows [y0, y0 + side)).
    `warp` (N, 3, 3): output → input normalised (align_corners=False) coordinates of the perspective.
    `affine` (N, 2, 3): → crop normalised coordinates of the flip and affine, applied after `warp`.
    `colour` (N, 3, 3): hue and saturation as one RGB matrix. `erase` (N, 4): x0, y0, x1, y1 of the
    erased rectangle in [0, 1] output coordinates (empty when not erased). `noise_std` (N,).
    """

    box: torch.Tensor
    warp: torch.Tensor
    affine: torch.Tensor
    colour: torch.Tensor
    erase: torch.Tensor
    noise_std: torch.Tensor
    size: int
    border_mode: str = "clamp"


def _uniform(shape: int | tuple[int, ...], low: float, high: float, rng: torch.Generator,
             device: torch.device) -> torch.Tensor:
    shape = (shape,) if isinstance(shape, int) else shape
    return low + (high - low) * torch.rand(shape, generator=rng, device=device)


def _chance(n: int, p: float, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """1.0 where an augmentation applies (probability p), else 0.0."""
    return (torch.rand(n, generator=rng, device=device) < p).float()


def crop_sides(n: int, height: int, width: int, cut_size: int, cut_pow: float, rng: torch.Generator,
               device: torch.device) -> torch.Tensor:
    """pytti_classic's crop side in pixels (module docstring), as floats."""
    max_size = min(height, width)
    r = 0.8 + 0.3 * torch.randn(n, generator=rng, device=device)
    r = r.clamp(min=cut_size / max_size, max=1.0)
    return (max_size * r ** cut_pow).floor().clamp(min=1)


def crop_corners(side: torch.Tensor, length: int, border: float, border_mode: str, rng: torch.Generator,
                 ) -> torch.Tensor:
    """pytti_classic's top-left corner along one axis of `length` pixels (module docstring).

    pytti lets a clamped corner reach length − side + 1 (a crop one pixel short); here it stops at
    length − side, the last corner where the crop fits.
    """
    padding = min(round(length * border), length)
    reach = length - side + 1
    u = torch.rand(side.shape, generator=rng, device=side.device)
    if border_mode == "clamp":
        corner = (u * (reach + 2 * padding) - padding).floor()
        return torch.minimum(corner.clamp(min=0), length - side)
    pad = side.clamp(max=padding)
    return (u * (reach + 2 * pad) - pad).floor()


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) homographies mapping 4 points src (N, 4, 2) onto dst; no host sync (solve_ex)."""
    x, y = src.unbind(-1)
    u, v = dst.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)
    b = torch.cat([u, v], 1)
    h = torch.linalg.solve_ex(a, b)[0]
    return torch.cat([h, torch.ones_like(h[:, :1])], 1).view(-1, 3, 3)


def _corners(device: torch.device) -> torch.Tensor:
    """(4, 2) corners (-1, -1), (1, -1), (1, 1), (-1, 1), made on the device (a host tensor copied
    to CUDA every step would make the host wait)."""
    k = torch.arange(4, device=device)
    x = ((k == 1) | (k == 2)).float() * 2 - 1
    return torch.stack([x, (k >= 2).float() * 2 - 1], -1)


def colour_matrix(hue: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3): saturation ×s about each pixel's luma, then a hue turn (fraction of a full turn)
    as a rotation about the grey axis."""
    eye = torch.eye(3, dtype=hue.dtype, device=hue.device)
    grey = torch.zeros_like(eye)
    for channel, weight in enumerate(_LUMA):
        grey[:, channel] = weight
    saturate = saturation[:, None, None] * eye + (1 - saturation)[:, None, None] * grey
    angle = 2 * math.pi * hue
    a = 1 / math.sqrt(3)  # the grey axis (a, a, a)
    cross = torch.zeros_like(eye)  # [axis]_x
    cross[0, 1], cross[0, 2], cross[1, 2] = -a, a, -a
    cross = cross - cross.T
    turn = (angle.cos()[:, None, None] * eye + angle.sin()[:, None, None] * cross
            + (1 - angle.cos())[:, None, None] * torch.full_like(eye, a * a))
    return turn @ saturate


def sample_cutouts(n: int, height: int, width: int, *, cut_size: int, cut_pow: float, border: float,
                   border_mode: str = "clamp", augment: bool, rng: torch.Generator,
                   device: torch.device | str | None = None) -> Cutouts:
    """Sample n cutouts of an H×W image for a perceptor of input size `cut_size` (module docstring).
    Tensors are made on `device` (default: the rng's device)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}x{width}")
    if cut_size < 1:
        raise ValueError(f"cut_size must be >= 1, got {cut_size}")
    if not cut_pow > 0:
        raise ValueError(f"cut_pow must be > 0, got {cut_pow}")
    if not (border >= 0 and math.isfinite(border)):
        raise ValueError(f"border must be a finite number >= 0, got {border}")
    if border_mode not in BORDER_MODES:
        raise ValueError(f"border_mode must be one of {', '.join(BORDER_MODES)}, got {border_mode!r}")
    device = rng.device if device is None else torch.device(device)
    side = crop_sides(n, height, width, cut_size, cut_pow, rng, device)
    x0 = crop_corners(side, width, border, border_mode, rng)
    y0 = crop_corners(side, height, border, border_mode, rng)
    box = torch.stack([x0, y0, side], -1)
    eye = torch.eye(3, device=device).expand(n, 3, 3)
    if not augment:
        return Cutouts(box, eye.clone(), eye[:, :2].clone(), eye.clone(), torch.zeros(n, 4, device=device),
                       torch.zeros(n, device=device), cut_size, border_mode)

    flip = 1 - 2 * _chance(n, FLIP_P, rng, device)
    on = _chance(n, AFFINE_P, rng, device)
    angle = on * _uniform(n, -math.radians(MAX_DEGREES), math.radians(MAX_DEGREES), rng, device)
    shift = on[:, None] * _uniform((n, 2), -2 * MAX_TRANSLATE, 2 * MAX_TRANSLATE, rng, device)
    # forward r = R q + t (after the flip); stored inverse q = flip(R^T (r - t))
    inverse = _rotation(angle).transpose(1, 2) * torch.stack([flip, torch.ones_like(flip)], -1)[:, :, None]
    affine = torch.cat([inverse, -(inverse @ shift[:, :, None])], 2)

    on = _chance(n, PERSPECTIVE_P, rng, device)
    corners = _corners(device)
    inward = -corners * DISTORTION * torch.rand(n, 4, 2, generator=rng, device=device) * on[:, None, None]
    warp = _homography(corners + inward, corners.expand(n, 4, 2))  # output → before the perspective

    on = _chance(n, JITTER_P, rng, device)
    hue = on * _uniform(n, -MAX_HUE, MAX_HUE, rng, device)
    saturation = 1 + on * _uniform(n, -MAX_SATURATION, MAX_SATURATION, rng, device)

    on = _chance(n, ERASE_P, rng, device)
    area = _uniform(n, *ERASE_AREA, rng, device)
    low = torch.rand(n, generator=rng, device=device) < 0.5
    ratio = torch.where(low, _uniform(n, ERASE_RATIO[0], 1, rng, device),
                        _uniform(n, 1, ERASE_RATIO[1], rng, device))
    h = (area * ratio).sqrt().clamp(max=1) * on
    w = (area / ratio).sqrt().clamp(max=1) * on
    ex = torch.rand(n, generator=rng, device=device) * (1 - w)
    ey = torch.rand(n, generator=rng, device=device) * (1 - h)
    erase = torch.stack([ex, ey, ex + w, ey + h], -1)

    noise_std = _uniform(n, 0, NOISE_FAC, rng, device)
    return Cutouts(box, warp, affine, colour_matrix(hue, saturation), erase, noise_std, cut_size, border_mode)


def _fold(index: torch.Tensor, length: int, border_mode: str) -> torch.Tensor:
    """Pixel-index coordinates outside [0, length - 1] mapped as the padding mode does."""
    if border_mode == "mirror":
        period = 2 * max(length - 1, 1)
        folded = index.remainder(period)
        return torch.where(folded > length - 1, period - folded, folded)
    if border_mode == "smear":
        return index.clamp(0, length - 1)
    if border_mode == "wrap":
        return index.remainder(length)
    return index  # clamp (always inside) and black (zeros padding)


def render_cutouts(image: torch.Tensor, cutouts: Cutouts, rng: torch.Generator,
                   mean: Sequence[float] | torch.Tensor = (0.0, 0.0, 0.0),
                   std: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Render cutouts of image (1, 3, H, W) in [0, 1] → (N, 3, S, S), normalised as (x − mean) / std,
    with their noise drawn from `rng` (`cutout_noise`, then `render_with_noise`)."""
    return render_with_noise(image, cutouts, cutout_noise(cutouts, rng, image.dtype), mean, std)


def cutout_noise(cutouts: Cutouts, rng: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The cutouts' standard normal noise (N, 3, S·S), on the rng's device: the only draw of rendering,
    made apart so that the rendering itself is a pure function (what `compile` compiles)."""
    shape = (cutouts.box.shape[0], 3, cutouts.size ** 2)
    return torch.randn(shape, generator=rng, device=cutouts.box.device, dtype=dtype)


def render_with_noise(image: torch.Tensor, cutouts: Cutouts, noise: torch.Tensor,
                      mean: Sequence[float] | torch.Tensor = (0.0, 0.0, 0.0),
                      std: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """`render_cutouts` with its noise given: image (1, 3, H, W) in [0, 1] → (N, 3, S, S).

    One bilinear grid_sample for all N (crop, flip, affine and perspective composed per output pixel;
    `engine.gridsample`'s on CUDA under deterministic algorithms),
    then erasing and the perspective's empty corners set to 0, the colour matrix and the
    normalisation as one batched matrix product, and `noise` (`cutout_noise`) scaled by each
    cutout's std. Differentiable w.r.t. image; no random draw.
    """
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must have shape (1, 3, H, W), got {tuple(image.shape)}")
    n, size, dtype, device = cutouts.box.shape[0], cutouts.size, image.dtype, image.device
    height, width = image.shape[-2:]
    centres = (torch.arange(size, device=device, dtype=dtype) * 2 + 1) / size - 1
    gy, gx = torch.meshgrid(centres, centres, indexing="ij")
    points = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(1, -1, 3)  # (1, S*S, 3)
    warped = points @ cutouts.warp.to(dtype).transpose(1, 2)
    r = warped[..., :2] / warped[..., 2:]
    inside = (r.abs() <= 1).all(-1)
    q = (torch.cat([r, torch.ones_like(r[..., :1])], -1) @ cutouts.affine.to(dtype).transpose(1, 2)).clamp(-1, 1)
    box = cutouts.box.to(dtype)[:, None, :]
    index = box[..., :2] + (q + 1) * box[..., 2:] / 2 - 0.5  # pixel-index coordinates in the image
    ix = _fold(index[..., 0], width, cutouts.border_mode)
    iy = _fold(index[..., 1], height, cutouts.border_mode)
    grid = torch.stack([(2 * ix + 1) / width - 1, (2 * iy + 1) / height - 1], -1).view(n, size, size, 2)
    padding = "zeros" if cutouts.border_mode == "black" else "border"
    if image.is_cuda and torch.are_deterministic_algorithms_enabled():  # F.grid_sample's CUDA backward uses atomics
        x = deterministic_grid_sample(image, grid, padding).flatten(2)
    else:
        x = F.grid_sample(image.expand(n, -1, -1, -1), grid, mode="bilinear", padding_mode=padding,
                          align_corners=False).flatten(2)
    u = (points[..., :2] + 1) / 2  # [0, 1] output coordinates
    erase = cutouts.erase.to(dtype)[:, None, :]
    erased = ((u >= erase[..., :2]) & (u < erase[..., 2:])).all(-1)
    x = x * (inside & ~erased)[:, None, :].to(dtype)
    mean = torch.as_tensor(mean, dtype=dtype, device=device)
    std = torch.as_tensor(std, dtype=dtype, device=device)
    out = torch.baddbmm((-mean / std)[None, :, None].expand(n, -1, 1), cutouts.colour.to(dtype) / std[:, None], x)
    out = out + noise * (cutouts.noise_std.to(dtype)[:, None, None] / std[:, None])
    return out.view(n, 3, size, size)
