"""A model name → a ready model: resolve, download (verified) or generate, load.

`load_vqgan` and `load_perceptor` take any registered name or alias. `random_weights=True`
builds the real architecture without downloading weights (for speed benchmarks).
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import open_clip
import torch
from huggingface_hub import try_to_load_from_cache

from engine import cache
from engine.checkpoint import CheckpointError, UnsafeCheckpointError
from engine.download import (
    ChecksumLock,
    DownloadError,
    download,
    sha256_file,
    text_config_problem,
    torch_file_problem,
    verified_sha256,
)
from engine.errors import InputError
from engine.locks import exclusive_lock
from engine.param_counts import size_mb
from engine.perceptor import Perceptor, create_open_clip
from engine.pretrained import VQGANSource
from engine.registry import ModelInfo, PerceptorSource, UnknownModelError, registry
from engine.tiny import make_tiny_clip, make_tiny_vqgan, register_tiny_clip_configs
from engine.vqgan import VQGAN, build_vqgan, load_vqgan_files, parse_config, read_config

CONFIG_MAX_BYTES = 1 << 20  # a model config is a few KB of YAML
OFFLINE_ALTERNATIVES = ("or try the untrained tiny models (vqgan_model=tiny perceptors=tiny-vit), or the "
                        "offline demo grid: python -m experiments.demo /tmp/demo-grid")
MAX_CHECKPOINT_BYTES = 16 << 30  # without a known size: the largest known checkpoint (coco, 8.4 GB) and room


# ---------------------------------------------------------------- VQGAN

def vqgan_paths(source: VQGANSource) -> tuple[Path, Path]:
    """Where a VQGAN's config and checkpoint are (or will be) on disk."""
    if source.untrained:
        folder = cache.tiny_dir()
        return folder / f"{source.name}.yaml", folder / f"{source.name}.ckpt"
    folder = cache.vqgan_dir(source.name)
    return (Path(source.local_config) if source.local_config else folder / "config.yaml",
            Path(source.local_checkpoint) if source.local_checkpoint else folder / "last.ckpt")


def fetch_vqgan(source: VQGANSource, *, progress: bool = True, config_only: bool = False) -> tuple[Path, Path]:
    """Make sure a VQGAN's files are on disk, downloading and verifying them if needed."""
    if source.untrained:
        return make_tiny_vqgan(source.name, cache.tiny_dir())
    config_path, ckpt_path = vqgan_paths(source)
    lock = ChecksumLock(cache.lock_file())
    ckpt_cap = int(source.approx_size_mb * 1.5 * 2**20) if source.approx_size_mb else MAX_CHECKPOINT_BYTES
    wanted = [(config_path, source.config_urls, source.config_sha256, "config", CONFIG_MAX_BYTES,
               text_config_problem)]
    if not config_only:
        wanted.append((ckpt_path, source.checkpoint_urls, source.checkpoint_sha256, "checkpoint", ckpt_cap,
                       torch_file_problem))
    for path, urls, sha256, part, cap, check in wanted:
        if path.exists():
            continue
        if not urls:
            raise InputError(f"{source.name}: {part} file {path} does not exist and no URL is known")
        download(urls, path, sha256=sha256, lock=lock, lock_key=f"vqgan/{source.name}/{part}",
                 desc=f"{source.name} {part}", max_size=cap, check=check, relock_hint=relock_hint(source.name),
                 by_hand=vqgan_by_hand(config_path, ckpt_path), progress=progress)
    return config_path, ckpt_path


def vqgan_by_hand(config_path: Path, ckpt_path: Path) -> str:
    """What to do when a VQGAN cannot be downloaded: both of its files, by hand, or the tiny models."""
    where = (f"in {config_path.parent}/" if config_path.parent == ckpt_path.parent
             else f"at {config_path} and {ckpt_path}")
    return f"offline? put both files, {config_path.name} and {ckpt_path.name}, by hand {where}; {OFFLINE_ALTERNATIVES}"


def relock_hint(name: str) -> str:
    """The command that trusts a model's files anew (after an upstream re-upload)."""
    return f"run `python -m engine fetch {name} --relock`"


def load_vqgan(name: str, device: str | torch.device = "cpu", *, random_weights: bool = False,
               progress: bool = True) -> VQGAN:
    """Load a VQGAN by name, frozen and in eval mode, with `.info` telling where it came from."""
    source = registry().vqgan(name)
    if random_weights and not source.untrained:
        model = _random_vqgan(source, progress)
        info = ModelInfo(source.name, source.slug, "random weights", None, untrained=True)
    else:
        config_path, ckpt_path = fetch_vqgan(source, progress=progress)
        key = f"vqgan/{source.name}/checkpoint"
        fresh = ChecksumLock(cache.lock_file()).get(key) is None
        digest = model_sha256(key, ckpt_path)  # a file changed since it was verified is not even parsed
        downloaded = not (source.local_checkpoint or source.untrained)
        with _evict_if_refused(key, ckpt_path, downloaded, _origin(source, ckpt_path), fresh):
            model = load_vqgan_files(config_path, ckpt_path)
        info = ModelInfo(source.name, source.slug, _origin(source, ckpt_path), digest, source.untrained)
    model.info = info
    return model.to(device)


@contextlib.contextmanager
def _evict_if_refused(key: str, path: Path, downloaded: bool, origin: str, fresh: bool) -> Iterator[None]:
    """When loading refuses a file as unsafe (its pickle calls code), nothing of it stays in the
    cache: its checksum record is forgotten and, if we downloaded it, the file is deleted. A file
    refused as no checkpoint at all leaves no record either, where this load made it (`fresh`): the
    real file put there later is then taken."""
    try:
        yield
    except UnsafeCheckpointError as err:
        ChecksumLock(cache.lock_file()).forget(key)
        if not downloaded:
            raise
        for file in {path.resolve(), path}:  # a hub download is a link to a blob
            file.unlink(missing_ok=True)
        raise UnsafeCheckpointError(f"{err}. The downloaded file and its checksum record were deleted; "
                                    f"do not use its source ({origin})") from None
    except CheckpointError:
        if fresh:
            ChecksumLock(cache.lock_file()).forget(key)
        raise


def _random_vqgan(source: VQGANSource, progress: bool) -> VQGAN:
    config_path, _ = vqgan_paths(source)
    if config_path.exists():
        config = read_config(config_path)
    elif source.architecture:
        config = parse_config(source.architecture, source.name)
    else:
        config = read_config(fetch_vqgan(source, progress=progress, config_only=True)[0])
    return build_vqgan(config).eval().requires_grad_(False)


def _origin(source: VQGANSource, path: Path) -> str:
    if source.untrained:
        return f"generated untrained weights {path}"
    return source.local_checkpoint or (source.checkpoint_urls[0] if source.checkpoint_urls else str(path))


def model_sha256(key: str, path: Path) -> str:
    """A model file's sha256, checked against the checksum lock (recorded on first use); a file that
    no longer matches its record is refused. Keys: `vqgan/<name>/config`, `vqgan/<name>/checkpoint`,
    `clip/<name>`."""
    return verified_sha256(ChecksumLock(cache.lock_file()), key, path, relock_hint(key.split("/")[1]))


# ---------------------------------------------------------------- perceptors

def perceptor_weights_path(source: PerceptorSource) -> Path | None:
    """The cached weights file of a perceptor, or None when not on disk yet."""
    if source.untrained:
        path = cache.tiny_dir() / f"{source.name}.pt"
        return path if path.exists() else None
    if source.file:
        return Path(source.file) if os.path.isfile(source.file) else None
    cfg = open_clip.get_pretrained_cfg(source.arch, source.tag or "")
    if not cfg:
        return None
    if cfg.get("hf_hub"):
        # open_clip's convention: "org/model/" (default file name) or "org/model/file.bin"
        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        stem = "open_clip_model" if filename == "open_clip_pytorch_model.bin" else Path(filename).stem
        for candidate in (f"{stem}.safetensors", filename):
            hit = try_to_load_from_cache(repo_id, candidate, cache_dir=str(cache.clip_dir()))
            if isinstance(hit, str):
                return Path(hit)
    if cfg.get("url"):
        path = cache.clip_dir() / os.path.basename(cfg["url"])
        return path if path.exists() else None
    return None


def fetch_perceptor(source: PerceptorSource, *, progress: bool = True) -> Path:
    """Make sure a perceptor's weights are on disk (open_clip's hub download, into our cache)."""
    if source.untrained:
        return make_tiny_clip(source.name, cache.tiny_dir())
    cached = perceptor_weights_path(source)
    if cached:
        return cached
    with exclusive_lock(cache.clip_dir() / f".{source.slug}.lock", what=f"download of {source.name}", wait=True):
        return perceptor_weights_path(source) or _download_perceptor(source, progress)


def _download_perceptor(source: PerceptorSource, progress: bool) -> Path:
    if source.file:
        raise InputError(f"perceptor {source.name}: weights file {source.file} does not exist")
    cfg = open_clip.get_pretrained_cfg(source.arch, source.tag or "")
    if not cfg:
        raise InputError(f"perceptor {source.name}: {source.tag!r} is not an open_clip pretrained "
                                f"tag of {source.arch}; valid: {open_clip.list_pretrained_tags_by_model(source.arch)}")
    wheres = [w for w in (cfg.get("hf_hub") and f"https://huggingface.co/{cfg['hf_hub']}", cfg.get("url")) if w]
    hint = (f"offline? put the weights file anywhere and add it to the user models file "
            f"{cache.user_models_file()} as `perceptors: {{'{source.name}': {{file: /path/to/weights}}}}`; "
            f"{OFFLINE_ALTERNATIVES}")
    unreachable = [w for w in wheres if not _reachable(w)]
    if len(unreachable) == len(wheres):  # fail in seconds, not after the hub client's retries
        raise DownloadError(f"could not download perceptor {source.name}: no connection to "
                            f"{', '.join(wheres)}. {hint}")
    try:
        path = Path(open_clip.download_pretrained(cfg, cache_dir=str(cache.clip_dir())))
    except Exception as err:  # the hub client raises many kinds; all mean "not downloaded"
        raise DownloadError(f"could not download perceptor {source.name} from {', '.join(wheres)} "
                            f"({type(err).__name__}: {err}). {hint}") from err
    key = f"clip/{source.name}"
    lock = ChecksumLock(cache.lock_file())
    digest, record = sha256_file(path), lock.get(key)
    if record and record["sha256"] != digest:
        path.unlink()
        raise DownloadError(f"perceptor {source.name}: downloaded weights have sha256 {digest}, but the lock "
                            f"{cache.lock_file()} recorded {record['sha256']}; the file was deleted")
    if not record:
        lock.record(key, digest, path.stat().st_size, wheres[0] if wheres else str(path))
    return path


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the URL's host opens (a quick offline check)."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def load_perceptor(name: str, device: str | torch.device = "cpu", *, random_weights: bool = False,
                   progress: bool = True) -> Perceptor:
    """Load a CLIP perceptor by name or alias, frozen and in eval mode."""
    source = registry().perceptor(name)
    register_tiny_clip_configs(cache.tiny_dir())
    cfg = open_clip.get_pretrained_cfg(source.arch, source.tag or "") or {}
    quick_gelu = bool(cfg.get("quick_gelu"))
    if random_weights and not source.untrained:
        model = open_clip.create_model(source.arch, pretrained=None, force_quick_gelu=quick_gelu)
        info = ModelInfo(source.name, source.slug, "random weights", None, untrained=True)
    else:
        weights = fetch_perceptor(source, progress=progress)
        key, origin = f"clip/{source.name}", _perceptor_origin(source, cfg, weights)
        fresh = ChecksumLock(cache.lock_file()).get(key) is None
        digest = model_sha256(key, weights)
        with _evict_if_refused(key, weights, not (source.file or source.untrained), origin, fresh):
            model = create_open_clip(source.arch, weights, quick_gelu=quick_gelu)
        info = ModelInfo(source.name, source.slug, origin, digest, source.untrained)
    pre = model.visual.preprocess_cfg
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    perceptor = Perceptor(model.eval().requires_grad_(False), open_clip.get_tokenizer(source.arch), info,
                          cfg.get("mean", pre["mean"]), cfg.get("std", pre["std"]), size)
    return perceptor.to(device)


def _perceptor_origin(source: PerceptorSource, cfg: dict, weights: Path) -> str:
    if source.untrained:
        return f"generated untrained weights {weights}"
    return cfg.get("hf_hub") or cfg.get("url") or str(weights)


# ---------------------------------------------------------------- both kinds

def fetch(name: str, *, progress: bool = True, relock: bool = False) -> list[Path]:
    """Download (or generate) the files of a VQGAN or perceptor ahead of time and verify them.

    ``relock=True`` forgets the model's records in the checksum lock first, so the files as they
    are now (cached, or downloaded anew) become the trusted ones."""
    reg = registry()
    try:
        source = reg.vqgan(name)
        keys = [f"vqgan/{source.name}/config", f"vqgan/{source.name}/checkpoint"]
    except UnknownModelError:
        try:
            source = reg.perceptor(name)
            keys = [f"clip/{source.name}"]
        except UnknownModelError:
            raise UnknownModelError("VQGAN or perceptor", name, [*reg.vqgans, *reg.perceptors]) from None
    if relock:
        for key in keys:
            ChecksumLock(cache.lock_file()).forget(key)
    if isinstance(source, VQGANSource):
        paths = list(fetch_vqgan(source, progress=progress))
    else:
        paths = [fetch_perceptor(source, progress=progress)]
    for key, path in zip(keys, paths):
        model_sha256(key, path)
    return paths


def model_table() -> list[dict]:
    """One row per registered model: kind, name, slug, cached, size (MB: on disk when cached, else
    the expected size; a perceptor's from its architecture's parameter count), description."""
    reg = registry()
    rows = []
    for source in reg.vqgans.values():
        files = [p for p in vqgan_paths(source) if p.exists()]
        cached = len(files) == 2
        size = sum(p.stat().st_size for p in files) / 2**20 if cached else source.approx_size_mb
        rows.append({"kind": "vqgan", "name": source.name, "slug": source.slug, "cached": cached,
                     "size_mb": size, "untrained": source.untrained, "aliases": list(source.aliases),
                     "description": source.description})
    register_tiny_clip_configs(cache.tiny_dir())  # the tiny architectures' sizes
    for source in reg.perceptors.values():
        path = perceptor_weights_path(source)
        rows.append({"kind": "perceptor", "name": source.name, "slug": source.slug, "cached": path is not None,
                     "size_mb": path.stat().st_size / 2**20 if path else size_mb(source.arch),
                     "untrained": source.untrained,
                     "aliases": list(source.aliases), "description": source.description})
    return rows
