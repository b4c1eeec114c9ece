"""Replicas of real checkpoint files in their real layouts, with tiny (or given) weights.

Lightning 1.0.8 dumps (callbacks keyed by the ModelCheckpoint class, two Adam states, lr
schedulers, hyper-parameters as AttributeDict / DictConfig / argparse.Namespace), the legacy
non-zip format, a whole Net2NetTransformer checkpoint, an OpenAI-style TorchScript CLIP archive,
and hostile pickles whose payload creates a marker file.

Lightning is not needed: while a dump is pickled, stand-in modules named like Lightning's are put
in `sys.modules` (and removed after), so the pickle records Lightning's global names.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import open_clip
import torch
import yaml
from omegaconf import OmegaConf

from engine.tiny import SEED, TINY_VQGAN_CONFIGS, register_tiny_clip_configs
from engine.vqgan import build_vqgan, parse_config

MODEL_CHECKPOINT = "pytorch_lightning.callbacks.model_checkpoint"
PARSING = "pytorch_lightning.utilities.parsing"


@contextlib.contextmanager
def lightning_names() -> Iterator[tuple[type, type]]:
    """Classes pickled as Lightning 1.0.8's `ModelCheckpoint` and `AttributeDict` (while inside)."""
    class ModelCheckpoint:
        pass

    class AttributeDict(dict):
        def __getattr__(self, key: str) -> Any:
            try:
                return self[key]
            except KeyError as err:
                raise AttributeError(key) from err

        def __setattr__(self, key: str, value: Any) -> None:
            self[key] = value

    modules = {name: types.ModuleType(name) for name in (
        "pytorch_lightning", "pytorch_lightning.callbacks", MODEL_CHECKPOINT,
        "pytorch_lightning.utilities", PARSING)}
    for cls, module in ((ModelCheckpoint, MODEL_CHECKPOINT), (AttributeDict, PARSING)):
        cls.__module__, cls.__qualname__ = module, cls.__name__
        setattr(modules[module], cls.__name__, cls)
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield ModelCheckpoint, AttributeDict
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def tiny_vqgan_weights() -> tuple[dict, dict[str, torch.Tensor]]:
    """The tiny VQModel's `model:` config section and a state dict with a discriminator beside it."""
    section = TINY_VQGAN_CONFIGS["tiny"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 1)
        state = dict(build_vqgan(parse_config(section, "tiny")).state_dict())
        state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    return section, state


def adam_state(tensors: list[torch.Tensor]) -> dict:
    """An Adam optimizer state over `tensors` (two moments each, as large as the weights)."""
    return {"state": {i: {"step": torch.tensor(1000.0), "exp_avg": torch.randn_like(t),
                          "exp_avg_sq": torch.rand_like(t)} for i, t in enumerate(tensors)},
            "param_groups": [{"lr": 4.5e-6, "betas": (0.5, 0.9), "eps": 1e-8, "weight_decay": 0,
                              "amsgrad": False, "params": list(range(len(tensors)))}]}


def lightning_dump(state: dict[str, torch.Tensor], hparams: str, *, extra: Any = None) -> dict:
    """A Lightning 1.0.8 checkpoint dict around `state`; must be pickled inside `lightning_names()`.

    `hparams`: "attributedict" or "dictconfig" (`hyper_parameters`), or "namespace" (`hparams`)."""
    model_checkpoint, attribute_dict = sys.modules[MODEL_CHECKPOINT].ModelCheckpoint, \
        sys.modules[PARSING].AttributeDict
    ae = [v for k, v in state.items() if not k.startswith("loss.")]
    disc = [v for k, v in state.items() if k.startswith("loss.discriminator")]
    dump = {"epoch": 7, "global_step": 123456, "pytorch-lightning_version": "1.0.8",
            "callbacks": {model_checkpoint: {"monitor": "val/rec_loss", "best_model_score": torch.tensor(0.25),
                                             "best_model_path": "logs/checkpoints/last.ckpt"}},
            "optimizer_states": [adam_state(ae), adam_state(disc)],
            "lr_schedulers": [], "state_dict": state}
    params = {"embed_dim": 16, "n_embed": 128, "ddconfig": {"ch_mult": [1, 1, 2, 2], "dropout": 0.0}}
    if hparams == "attributedict":
        dump["hyper_parameters"] = attribute_dict(params, ddconfig=attribute_dict(params["ddconfig"]))
    elif hparams == "dictconfig":
        dump["hyper_parameters"] = OmegaConf.create(params)
    elif hparams == "namespace":
        dump["hparams"] = argparse.Namespace(base=["configs/model.yaml"], gpus="0,", resume="", train=True,
                                             logdir=Path("/work/logs/2020-11-09T13-31-51"))
    else:
        raise ValueError(f"hparams must be attributedict, dictconfig or namespace, not {hparams!r}")
    if extra is not None:
        dump["extra"] = extra
    return dump


def write_vqgan_replica(folder: Path, kind: str, *, extra: Any = None) -> tuple[Path, Path, dict]:
    """Write `<kind>.yaml` and `<kind>.ckpt` into `folder`; return both and the VQGAN's weights.

    Kinds: lightning-attributedict, lightning-dictconfig, lightning-namespace, legacy (a Lightning
    dump in the non-zip format), net2net (a whole Net2NetTransformer checkpoint; plain VQModel config)."""
    folder.mkdir(parents=True, exist_ok=True)
    section, state = tiny_vqgan_weights()
    config_path, ckpt_path = folder / f"{kind}.yaml", folder / f"{kind}.ckpt"
    config_path.write_text(yaml.safe_dump({"model": section}))
    weights = {k: v for k, v in state.items() if not k.startswith("loss.")}
    if kind == "net2net":
        saved = {**{f"first_stage_model.{k}": v for k, v in state.items()},
                 **{f"cond_stage_model.{k}": torch.zeros_like(v) for k, v in weights.items()},
                 "transformer.tok_emb.weight": torch.randn(128, 32), "transformer.head.weight": torch.randn(128, 32)}
        torch.save({"state_dict": saved, "epoch": 3}, ckpt_path)
        return config_path, ckpt_path, weights
    hparams = "attributedict" if kind == "legacy" else kind.removeprefix("lightning-")
    with lightning_names():
        torch.save(lightning_dump(state, hparams, extra=extra), ckpt_path,
                   _use_new_zipfile_serialization=kind != "legacy")
    return config_path, ckpt_path, weights


def write_torchscript_clip(path: Path, arch: str = "tiny-vit") -> dict[str, torch.Tensor]:
    """Trace a tiny open_clip CLIP (OpenAI's key layout) and save it, in fp16 like OpenAI's files,
    as a TorchScript archive; return its weights as saved."""
    register_tiny_clip_configs(path.parent)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 2)
        model = open_clip.create_model(arch, pretrained=None).eval()
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI files are TorchScript
        traced = torch.jit.trace(model, (torch.rand(1, 3, *size), torch.randint(0, 49408, (1, 77))),
                                 strict=False, check_trace=False)
    traced.half()
    traced.save(str(path))
    return {k: v.clone() for k, v in traced.state_dict().items()}


def _payloads(marker: Path) -> dict[str, tuple[Callable, tuple]]:
    code = f"open({str(marker)!r}, 'w').close()"
    return {"posix.system": (os.system, (f"touch '{marker}'",)),
            "builtins.exec": (exec, (code,)),
            "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],)),
            "builtins.eval": (eval, (code,))}


HOSTILE_GLOBALS = ("posix.system", "builtins.exec", "subprocess.Popen", "builtins.eval")


class Hostile:
    """Pickles as a call of `global_name` (one of HOSTILE_GLOBALS) that would create `marker`."""

    def __init__(self, global_name: str, marker: Path):
        self.call = _payloads(marker)[global_name]

    def __reduce__(self) -> tuple[Callable, tuple]:
        return self.call


def write_hostile_vqgan(folder: Path, global_name: str, marker: Path) -> tuple[Path, Path]:
    """A Lightning-format tiny VQGAN whose pickle also calls `global_name` (creating `marker`)."""
    config_path, ckpt_path, _ = write_vqgan_replica(folder, "lightning-attributedict",
                                                    extra=Hostile(global_name, marker))
    return config_path, ckpt_path
