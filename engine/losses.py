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


class _ClampWithGrad(torch.autograd.Function):
    """Clamp whose gradient still flows where following it moves the value back into range."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        ctx.low, ctx.high = low, high
        ctx.save_for_backward(x)
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        inward = grad * (x - x.clamp(ctx.low, ctx.high)) >= 0
        return grad * inward, None, None


def clamp_with_grad(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """pytti's `clamp_with_grad`: x clamped to [low, high]; out of range, a gradient step that
    descends toward the range still passes (a plain clamp would give zero gradient there)."""
    return _ClampWithGrad.apply(x, low, high)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """pytti's smoothing loss (L2 total variation): mean over pixels of dx² + dy², the last row and
    column compared with themselves (replicate padding: a zero difference there). Image (1, C, H, W) → scalar.

    Zero-padded differences, not a replicate-padded image: the same bits, forward and backward, and
    `torch.compile` can differentiate it (torch 2.15's meta kernel of `replication_pad2d_backward`
    gets channels_last strides wrong, which fails the compiled backward)."""
    dx = F.pad(image[..., :, 1:] - image[..., :, :-1], (0, 1))
    dy = F.pad(image[..., 1:, :] - image[..., :-1, :], (0, 0, 0, 1))
    return (dx.pow(2) + dy.pow(2)).mean()


def latent_loss(z_q: torch.Tensor, target_codes: torch.Tensor, image: torch.Tensor,
                target_image: torch.Tensor) -> torch.Tensor:
    """pytti's VQGAN image loss (`LatentLoss`): MSE(quantised z, target codes) / 2 + pixel MSE / 10."""
    return F.mse_loss(z_q, target_codes) / 2 + image_mse(image, target_image) / 10


def image_mse(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between two images, resizing `target` to `image` if needed."""
    if target.shape[-2:] != image.shape[-2:]:
        target = F.interpolate(target, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(image, target)
