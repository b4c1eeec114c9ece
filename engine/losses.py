"""Loss functions of the optimiser: small, pure, composed by the caller."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between unit vectors, pairwise: (N, D) × (P, D) → (N, P)."""
    chord = (x[:, None, :] - y[None, :, :]).norm(dim=-1)
    return chord.div(2).clamp(max=1).arcsin().pow(2).mul(2)


def replace_grad(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Value of `forward`, gradient of `backward`."""
    return forward.detach() - backward.detach() + backward


def prompt_losses(image_embeds: torch.Tensor, target_embeds: torch.Tensor,
                  weights: torch.Tensor, stops: torch.Tensor) -> torch.Tensor:
    """Per-prompt loss (P,), averaged over cutouts, with pytti's weight and stop semantics.

    The distance is multiplied by the sign of the weight (negative weights push away) and
    scaled by its magnitude. Once the signed distance falls below `stop`, that prompt stops
    pulling: its value is still reported, but its gradient is zero.
    """
    signed = spherical_distance(image_embeds, target_embeds) * weights.sign()
    return weights.abs() * replace_grad(signed, torch.maximum(signed, stops)).mean(0)


def image_mse(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between two images, resizing `target` to `image` if needed."""
    if target.shape[-2:] != image.shape[-2:]:
        target = F.interpolate(target, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(image, target)
