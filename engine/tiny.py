"""Tiny untrained models, made deterministically and saved in the real checkpoint formats.

They exist for tests, demos and CI: random weights from a fixed seed, loaded through the same
code path as pretrained checkpoints. Nothing they produce says anything about a real model.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Iterator

import open_clip
import torch
import yaml

from engine.fsutil import atomic_path, atomic_write
from engine.locks import exclusive_lock
from engine.vqgan import GUMBELVQ, VQMODEL, build_vqgan, parse_config

SEED = 20211121

_DDCONFIG = {"double_z": False, "z_channels": 16, "resolution": 64, "in_channels": 3, "out_ch": 3,
             "ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [8], "dropout": 0.0}
_LOSS = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
         "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 10000,
                    "disc_weight": 0.8, "codebook_weight": 1.0}}
TINY_VQGAN_CONFIGS = {
    "tiny": {"target": VQMODEL, "params": {
        "embed_dim": 16, "n_embed": 128, "ddconfig": _DDCONFIG, "lossconfig": _LOSS}},
    "tiny-gumbel": {"target": GUMBELVQ, "params": {
        "embed_dim": 16, "n_embed": 128, "kl_weight": 1e-8, "ddconfig": _DDCONFIG, "lossconfig": _LOSS,
        "temperature_scheduler_config": {"target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
                                         "params": {"warm_up_steps": 0, "max_decay_steps": 1000001,
                                                    "lr_start": 0.9, "lr_max": 0.9, "lr_min": 1.0e-06}}}},
}

_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
TINY_CLIP_CONFIGS = {
    "tiny-vit": {"embed_dim": 32, "text_cfg": _TEXT, "vision_cfg": {
        "image_size": 32, "patch_size": 8, "width": 64, "head_width": 32, "layers": 2}},
    "tiny-rn": {"embed_dim": 32, "text_cfg": _TEXT, "vision_cfg": {
        "image_size": 64, "layers": [1, 1, 1, 1], "width": 16}},
}


def make_tiny_vqgan(name: str, folder: Path) -> tuple[Path, Path]:
    """Write `<folder>/<name>.yaml` and `<name>.ckpt` (Lightning format) unless present; return both.

    Processes sharing the folder take turns; the later ones find the files made."""
    config_path, ckpt_path = folder / f"{name}.yaml", folder / f"{name}.ckpt"
    if config_path.exists() and ckpt_path.exists():
        return config_path, ckpt_path
    with exclusive_lock(folder / f".{name}.lock", what=f"generation of {name}", wait=True):
        if not (config_path.exists() and ckpt_path.exists()):
            _write_tiny_vqgan(name, config_path, ckpt_path)
    return config_path, ckpt_path


def _write_tiny_vqgan(name: str, config_path: Path, ckpt_path: Path) -> None:
    model_section = TINY_VQGAN_CONFIGS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = build_vqgan(parse_config(model_section, name))
        state = dict(model.state_dict())
        # Real checkpoints carry the discriminator too; the loader must skip it.
        state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    with atomic_path(ckpt_path) as tmp:
        torch.save({"state_dict": state, "global_step": 0, "epoch": 0}, tmp)
    atomic_write(config_path, yaml.safe_dump({"model": model_section}, sort_keys=False))


def register_tiny_clip_configs(folder: Path) -> None:
    """Write the tiny open_clip model configs and register them with open_clip."""
    for name, config in TINY_CLIP_CONFIGS.items():
        path = folder / f"{name}.json"
        if not path.exists():
            atomic_write(path, json.dumps(config, indent=2))
        if name not in open_clip.list_models():
            open_clip.add_model_config(path)


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[None]:
    """Mute open_clip's "no pretrained weights loaded" warning."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def make_tiny_clip(name: str, folder: Path) -> Path:
    """Write `<folder>/<name>.pt` (an open_clip state dict) unless present; return its path."""
    register_tiny_clip_configs(folder)
    weights = folder / f"{name}.pt"
    if weights.exists():
        return weights
    with exclusive_lock(folder / f".{name}.lock", what=f"generation of {name}", wait=True):
        if not weights.exists():
            with torch.random.fork_rng(devices=[]), quiet_open_clip():
                torch.manual_seed(SEED)
                model = open_clip.create_model(name, pretrained=None)  # random weights, as intended
            with atomic_path(weights) as tmp:
                torch.save(model.state_dict(), tmp)
    return weights
