"""VQGAN autoencoders in taming-transformers format, built from taming's modules.

Only the parts needed to encode and decode are built and loaded (encoder, decoder, the two 1x1
convolutions and the codebook): no discriminator, no LPIPS, no transformer, no Lightning.
Three config targets are understood: `VQModel`, `GumbelVQ`, and the first stage of a
`Net2NetTransformer`.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from taming.modules.diffusionmodules.model import Decoder, Encoder
from torch import nn

from engine.checkpoint import CheckpointError, load_checkpoint, preview_keys

VQMODEL = "taming.models.vqgan.VQModel"
GUMBELVQ = "taming.models.vqgan.GumbelVQ"
NET2NET = "taming.models.cond_transformer.Net2NetTransformer"
KNOWN_TARGETS = (VQMODEL, GUMBELVQ, NET2NET)

# State-dict prefixes of the parts we build; everything else in a checkpoint (loss.*, the
# transformer, cond_stage_model.*) is ignored.
_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.")
# Buffers taming's quantizers may carry that decoding never needs.
_IGNORED_KEYS = {"quantize.used"}
# Where a Net2NetTransformer checkpoint keeps its VQGAN.
FIRST_STAGE = "first_stage_model."

class VQGAN(nn.Module):
    """A VQGAN autoencoder: encode images to latents z, quantize z, decode z to images in [0, 1]."""

    def __init__(self, target: str, ddconfig: Mapping[str, Any], embed_dim: int, n_embed: int):
        super().__init__()
        if target not in (VQMODEL, GUMBELVQ):
            raise CheckpointError(f"VQGAN target must be one of {VQMODEL}, {GUMBELVQ}; got {target!r}")
        ddconfig = dict(ddconfig)
        self.target = target
        self.gumbel = target == GUMBELVQ
        self.embed_dim, self.n_embed = embed_dim, n_embed
        self.factor = downsampling_factor(ddconfig)
        z_channels = ddconfig["z_channels"]
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.quantize = nn.Module()
        if self.gumbel:  # taming's GumbelQuantize names: proj (logits over codes), embed (codebook)
            self.quantize.proj = nn.Conv2d(z_channels, n_embed, 1)
            self.quantize.embed = nn.Embedding(n_embed, embed_dim)
        else:  # taming's VectorQuantizer2 name: embedding (codebook)
            self.quantize.embedding = nn.Embedding(n_embed, embed_dim)

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors, shape (n_embed, embed_dim)."""
        return (self.quantize.embed if self.gumbel else self.quantize.embedding).weight

    def codebook_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel min and max of the codebook, shaped (1, C, 1, 1), for clamping z."""
        book = self.codebook.detach()
        return book.min(0).values[None, :, None, None], book.max(0).values[None, :, None, None]

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] → latents z (N, embed_dim, H/f, W/f) in codebook space."""
        h = self.quant_conv(self.encoder((image * 2 - 1).to(self.dtype))).float()
        if not self.gumbel:
            return h
        codes = self.quantize.proj(h).argmax(1)  # the hard choice GumbelVQ makes at eval time
        return self.quantize.embed(codes).permute(0, 3, 1, 2)

    def quantize_st(self, z: torch.Tensor) -> torch.Tensor:
        """Snap each latent vector to its nearest code; gradients pass straight through to z."""
        return z + (self.nearest_codes(z) - z).detach()

    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """The nearest codebook vector to each position of z (no gradient)."""
        book = self.codebook.detach()
        flat = z.detach().movedim(1, -1).reshape(-1, self.embed_dim)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.T + book.pow(2).sum(1)[None]
        q = book[dist.argmin(1)]
        return q.view(*z.shape[:1], *z.shape[2:], self.embed_dim).movedim(-1, 1)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the encoder and decoder weights (`engine.precision`); inputs are cast to it, outputs are fp32."""
        return self.post_quant_conv.weight.dtype

    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Latents (N, embed_dim, h, w) → images (N, 3, h*f, w*f) in [0, 1] (clamp=False: not clamped)."""
        image = self.decoder(self.post_quant_conv(z.to(self.dtype))).float().add(1).div(2)
        return image.clamp(0, 1) if clamp else image


def downsampling_factor(ddconfig: Mapping[str, Any]) -> int:
    """How many pixels one latent position covers along each side."""
    return 2 ** (len(ddconfig["ch_mult"]) - 1)


def read_config(path: str | Path) -> dict:
    """Read a taming YAML config, returning the VQGAN's `{target, params}`."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path}: cannot read taming config ({err})") from err
    return parse_config(config.get("model") if isinstance(config, dict) else None, str(path))


def parse_config(model: Any, origin: str) -> dict:
    """The VQGAN part of a taming `model:` section (the first stage of a Net2NetTransformer)."""
    if not isinstance(model, dict) or "target" not in model:
        raise CheckpointError(f"{origin}: not a taming config (no model.target)")
    target = model["target"]
    if target == NET2NET:
        model = (model.get("params") or {}).get("first_stage_config")
        if not isinstance(model, dict):
            raise CheckpointError(f"{origin}: Net2NetTransformer config without params.first_stage_config")
        target = model.get("target")
    if target not in (VQMODEL, GUMBELVQ):
        raise CheckpointError(
            f"{origin}: unknown config target {target!r}; supported: {', '.join(KNOWN_TARGETS)}")
    return {"target": target, "params": model.get("params") or {}}


def build_vqgan(config: Mapping[str, Any]) -> VQGAN:
    """Build a VQGAN with random weights from `read_config`'s result."""
    params = config["params"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # taming prints the z shape
            return VQGAN(config["target"], params["ddconfig"], params["embed_dim"], params["n_embed"])
    except KeyError as err:
        raise CheckpointError(f"config params lack {err}; need ddconfig, embed_dim, n_embed") from err
    except (TypeError, ValueError, ZeroDivisionError) as err:  # taming's modules given odd ddconfig values
        raise CheckpointError(f"config params do not describe a taming VQGAN ({err})") from err


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a Lightning checkpoint's `state_dict` (or a bare state dict) safely; the rest of the
    file (optimizer states, callbacks, hyper-parameters) is dropped on return."""
    state = load_checkpoint(path, keep="state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: checkpoint has no state_dict of tensors")
    return state


def select_weights(state: Mapping[str, torch.Tensor], model: VQGAN) -> dict:
    """Pick the weights `model` needs out of a checkpoint of any layout (a VQGAN's own, or a whole
    Net2NetTransformer's `first_stage_model.*`); name any missing or unexpected key."""
    own = model.state_dict()
    bare = any(k in state for k in own)
    prefix = FIRST_STAGE if not bare and any(FIRST_STAGE + k in state for k in own) else ""
    wanted = {k[len(prefix):]: v for k, v in state.items()
              if k.startswith(prefix) and k[len(prefix):].startswith(_PARTS)}
    wanted = {k: v for k, v in wanted.items() if k not in _IGNORED_KEYS}
    missing = sorted(set(own) - set(wanted))
    unexpected = sorted(set(wanted) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {preview_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {preview_keys(unexpected)}")
        raise CheckpointError(f"checkpoint does not fit the {model.target} config: " + "; ".join(parts))
    bad = [f"{k} {tuple(wanted[k].shape)} vs {tuple(own[k].shape)}"
           for k in own if wanted[k].shape != own[k].shape]
    if bad:
        raise CheckpointError(f"checkpoint shapes do not fit the config: {preview_keys(bad)}")
    return {k: v.float() if v.dtype != own[k].dtype else v for k, v in wanted.items()}


def load_vqgan_files(config_path: str | Path, checkpoint_path: str | Path | None) -> VQGAN:
    """Build a VQGAN from a taming config and load its checkpoint (None → random weights).

    With a checkpoint, the model is built without memory and takes the checkpoint's (memory-mapped)
    tensors as they are: loading needs about the weights' size, not twice it."""
    config = read_config(config_path)
    if checkpoint_path is None:
        return build_vqgan(config).eval().requires_grad_(False)
    with torch.device("meta"):
        model = build_vqgan(config)
    state = load_state_dict(checkpoint_path)
    try:
        model.load_state_dict(select_weights(state, model), assign=True)
    except (CheckpointError, RuntimeError) as err:
        raise CheckpointError(f"{checkpoint_path}: {err}") from None
    return model.eval().requires_grad_(False)
