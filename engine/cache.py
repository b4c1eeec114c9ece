"""Where downloaded and generated model files live.

`VQCLIP_CACHE` sets the cache folder (default `$XDG_CACHE_HOME/vqgan-clip`, else
`~/.cache/vqgan-clip`). `VQCLIP_MODELS` names the user models file (default
`$XDG_CONFIG_HOME/vqgan-clip/models.yaml`, else `~/.config/vqgan-clip/models.yaml`).
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The root of the model cache."""
    if os.environ.get("VQCLIP_CACHE"):
        return Path(os.environ["VQCLIP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vqgan-clip"


def user_models_file() -> Path:
    """The YAML file where users add their own checkpoints and mirrors."""
    if os.environ.get("VQCLIP_MODELS"):
        return Path(os.environ["VQCLIP_MODELS"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "vqgan-clip" / "models.yaml"


def lock_file() -> Path:
    """The checksum lock: sha256 of every first verified download without a published hash."""
    return cache_dir() / "models.lock.json"


def vqgan_dir(name: str) -> Path:
    """Folder of one VQGAN's `config.yaml` and `last.ckpt`."""
    return cache_dir() / "vqgan" / name


def clip_dir() -> Path:
    """The cache folder handed to open_clip (and the Hugging Face hub) for perceptor weights."""
    return cache_dir() / "clip"


def tiny_dir() -> Path:
    """Folder of the generated tiny untrained models."""
    return cache_dir() / "tiny"
