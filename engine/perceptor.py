"""CLIP perceptors: an open_clip model with its tokenizer, input size and normalisation."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.convert import convert_state_dict
from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed
from torch import nn

from engine.checkpoint import CheckpointError, load_weights, preview_keys
from engine.registry import ModelInfo

# Tensors OpenAI's TorchScript CLIP archives carry beside the weights (open_clip rebuilds them).
_NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


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
        dtype = next(self.model.parameters()).dtype  # bf16 under precision=bf16 (`engine.precision`)
        return F.normalize(self.model.encode_image(images.to(dtype)).float(), dim=-1)


def load_open_clip_weights(model: nn.Module, path: str | Path) -> None:
    """Load a weights file into an open_clip model: an open_clip or OpenAI state dict, a safetensors
    file or an OpenAI TorchScript archive, all read by `engine.checkpoint` (no code in them runs)."""
    state = {k: v for k, v in load_weights(path).items() if k.rsplit(".", 1)[-1] not in _NOT_WEIGHTS}
    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for name in ("logit_scale", "logit_bias"):  # a scalar in some files, shape (1,) in others
        if name in state and getattr(model, name, None) is not None:
            state[name] = state[name].reshape(getattr(model, name).shape)
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
           if k in state and state[k].shape != v.shape]
    if missing or unexpected or bad:
        problems = [f"{what} {preview_keys(keys)}" for what, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", bad)) if keys]
        raise CheckpointError(f"{path}: weights do not fit this open_clip architecture: {'; '.join(problems)}. "
                              "Check the perceptor's `arch` in the user models file")
    model.load_state_dict(state)


def create_open_clip(arch: str, weights: str | Path, *, quick_gelu: bool) -> nn.Module:
    """An open_clip model of `arch` holding the weights in the file `weights`."""
    root = logging.getLogger()
    root.addFilter(_no_random_init_notice)  # open_clip says "initialized randomly" before we load
    try:
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
    except RuntimeError as err:  # open_clip's "Model config for ... not found"
        raise CheckpointError(f"perceptor architecture {arch!r}: {err}; see open_clip.list_models()") from None
    finally:
        root.removeFilter(_no_random_init_notice)
    load_open_clip_weights(model, weights)
    return model


def _no_random_init_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("No pretrained weights loaded")
