"""pytti's exponential moving average of the latent (`image_models/ema.py`), as plain tensors.

After a reset to z_0 and updates with z_1 … z_n the average is
sum_k (1 - d) d**(n - k) z_k / (1 - d**(n + 1)): the bias-corrected EMA, equal to z_0 right after a reset.
Saved frames and the image that is moved are decoded from the average, not from the raw z.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DECAY = 0.99


@dataclass
class LatentEMA:
    """The running sums: `biased` like z, `accum` = d**(updates since the reset) as a 0-d tensor."""

    biased: torch.Tensor
    accum: torch.Tensor
    decay: float = DECAY

    @classmethod
    def start(cls, z: torch.Tensor, decay: float = DECAY) -> LatentEMA:
        """An average reset to z (pytti resets when the image is encoded)."""
        ema = cls(torch.zeros_like(z.detach()), torch.ones((), device=z.device, dtype=z.dtype), decay)
        ema.update(z)
        return ema

    @torch.no_grad()
    def update(self, z: torch.Tensor) -> None:
        """Fold in the latest z (after each optimiser step); stays on the device."""
        self.accum.mul_(self.decay)
        self.biased.mul_(self.decay).add_(z.detach(), alpha=1 - self.decay)

    @property
    def average(self) -> torch.Tensor:
        return self.biased / (1 - self.accum)

    def state(self) -> dict[str, torch.Tensor]:
        """For the resume state (host copies)."""
        return {"biased": self.biased.detach().cpu().clone(), "accum": self.accum.detach().cpu().clone()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], device: torch.device) -> LatentEMA:
        return cls(state["biased"].to(device), state["accum"].to(device))
