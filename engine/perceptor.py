"""CLIP perceptors: an open_clip model with its tokenizer, input size and normalisation."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.registry import ModelInfo


class Perceptor(nn.Module):
    """Embeds texts and images into one space; embeddings come out L2-normalised."""

    def __init__(self, model: nn.Module, tokenizer, info: ModelInfo,
                 mean: Sequence[float], std: Sequence[float], input_size: tuple[int, int]):
        super().__init__()
        self.model, self.tokenizer, self.info = model, tokenizer, info
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → (N, D) unit embeddings."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] → (N, D) unit embeddings; resized to `input_size` if needed."""
        if tuple(images.shape[-2:]) != self.input_size:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False)
        return self.encode_normalised((images - self.mean) / self.std)

    def encode_normalised(self, images: torch.Tensor) -> torch.Tensor:
        """Images already at `input_size` and normalised with `mean` and `std` → (N, D) unit embeddings."""
        return F.normalize(self.model.encode_image(images).float(), dim=-1)
