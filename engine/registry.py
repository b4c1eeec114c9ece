"""Model names → sources: the built-in table, the tiny test models, and the user models file.

A name resolves to a `VQGANSource` or `PerceptorSource`; nothing here loads weights
(see `engine.factory`). Unknown names raise `UnknownModelError` with the closest matches.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import open_clip
import yaml

from engine.cache import user_models_file
from engine.errors import InputError
from engine.fsutil import read_regular
from engine.pretrained import PRETRAINED_VQGANS, VQGANSource

TINY_VQGANS = (
    VQGANSource("tiny", "tiny", "UNTRAINED tiny VQModel (random weights, for tests and demos)",
                untrained=True),
    VQGANSource("tiny-gumbel", "tiny-gumbel", "UNTRAINED tiny GumbelVQ (random weights, for tests and demos)",
                untrained=True),
)
_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")


@dataclass(frozen=True)
class PerceptorSource:
    """An open_clip architecture with its weights: an open_clip pretrained tag and/or a local file."""

    name: str
    arch: str
    tag: str | None  # open_clip pretrained tag: where to download, and its quick_gelu/mean/std
    slug: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    untrained: bool = False
    file: str | None = None  # a local weights file, used instead of downloading


MAX_USER_FILE_BYTES = 1_000_000


class UnknownModelError(InputError, KeyError):
    """A model name that is not in the registry."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        shown = ", ".join(valid) if len(valid) <= 40 else ", ".join(valid[:40]) + f", ... ({len(valid)} in all; see `python -m engine models`)"
        self.message = f"unknown {kind} {name!r}.{hint} Valid names: {shown}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def safe_slug(text: str) -> str:
    """A name made safe for folder and DVC stage names: no '_', '/', '@', ':' or spaces."""
    return _UNSAFE.sub("-", text).strip("-")


def openai_slug(arch: str) -> str:
    """pytti's folder-name spelling of an OpenAI CLIP: `ViT-B-32` → `ViT-B32`, `ViT-L-14-336` → `ViT-L14-336px`."""
    slug = re.sub(r"^ViT-([A-Za-z])-(\d+)", r"ViT-\1\2", arch)
    return re.sub(r"-(\d+)$", r"-\1px", slug) if slug != arch else slug


def _openai_aliases(arch: str) -> tuple[str, ...]:
    """pytti and OpenAI names for an OpenAI CLIP: ViT-B/32, ViT-B32, ViTB32, ViT-L/14@336px, ..."""
    slug = openai_slug(arch)
    names = {arch, slug, slug.replace("-", "").replace("336px", "_336px")}
    match = re.match(r"^ViT-([A-Za-z])-(\d+)(?:-(\d+))?$", arch)
    if match:
        letter, patch, res = match.groups()
        names.add(f"ViT-{letter}/{patch}" + (f"@{res}px" if res else ""))
        if res:
            names.add(f"ViT-{letter}{patch}@{res}px")
    return tuple(sorted(names))


def _open_clip_perceptors() -> list[PerceptorSource]:
    sources = []
    for arch, tag in open_clip.list_pretrained():
        openai = tag == "openai" and "quickgelu" not in arch
        sources.append(PerceptorSource(
            f"{arch}:{tag}", arch, tag,
            slug=openai_slug(arch) if openai else safe_slug(f"{arch}-{tag}"),
            aliases=_openai_aliases(arch) if openai else (),
            description=f"open_clip {arch} pretrained on {tag}"))
    return sources


TINY_PERCEPTORS = (
    PerceptorSource("tiny-vit", "tiny-vit", None, "tiny-vit",
                    description="UNTRAINED tiny open_clip VisionTransformer (random weights, for tests and demos)",
                    untrained=True),
    PerceptorSource("tiny-rn", "tiny-rn", None, "tiny-rn",
                    description="UNTRAINED tiny open_clip ModifiedResNet (random weights, for tests and demos)",
                    untrained=True),
)


def _read_user_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(read_regular(path, MAX_USER_FILE_BYTES, "user models file").decode("utf-8")) or {}
    except (RecursionError, UnicodeDecodeError) as err:
        raise InputError(f"user models file {path}: {err if isinstance(err, UnicodeDecodeError) else 'nested too deeply'};"
                         " fix the file or remove it") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise InputError(f"user models file {path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}; "
                         "fix the file or remove it") from err
    if not isinstance(data, dict) or set(data) - {"vqgans", "perceptors"}:
        raise InputError(f"user models file {path}: top level must be a mapping with keys "
                         f"'vqgans' and/or 'perceptors', got {data!r:.200}")
    return data


_VQGAN_USER_KEYS = {"slug", "description", "aliases", "config", "checkpoint", "config_urls",
                    "checkpoint_urls", "config_sha256", "checkpoint_sha256"}


def _user_vqgan(name: str, entry: dict, base: VQGANSource | None, path: Path) -> VQGANSource:
    unknown = set(entry) - _VQGAN_USER_KEYS
    if unknown:
        raise InputError(f"{path}: vqgans.{name} has unknown keys {sorted(unknown)}; "
                         f"allowed: {sorted(_VQGAN_USER_KEYS)}")
    base = base or VQGANSource(name, safe_slug(name), f"user checkpoint from {path}")
    source = dataclasses.replace(
        base,
        slug=safe_slug(entry.get("slug", base.slug)),
        description=entry.get("description", base.description),
        aliases=tuple(entry.get("aliases", base.aliases)),
        config_urls=tuple(entry.get("config_urls", ())) + base.config_urls,  # user mirrors first
        checkpoint_urls=tuple(entry.get("checkpoint_urls", ())) + base.checkpoint_urls,
        config_sha256=entry.get("config_sha256", base.config_sha256),
        checkpoint_sha256=entry.get("checkpoint_sha256", base.checkpoint_sha256),
        local_config=str(Path(entry["config"]).expanduser()) if "config" in entry else base.local_config,
        local_checkpoint=str(Path(entry["checkpoint"]).expanduser()) if "checkpoint" in entry else base.local_checkpoint,
    )
    if not (source.local_config or source.config_urls) or not (source.local_checkpoint or source.checkpoint_urls):
        raise InputError(f"{path}: vqgans.{name} needs `config` or `config_urls`, and "
                         "`checkpoint` or `checkpoint_urls`")
    return source


def _user_perceptor(name: str, entry: dict, base: PerceptorSource | None, path: Path) -> PerceptorSource:
    allowed = {"arch", "tag", "file", "slug", "aliases", "description"}
    if not isinstance(entry, dict) or set(entry) - allowed or not (base or "arch" in entry):
        raise InputError(f"{path}: perceptors.{name!r} must be a mapping with `arch` (an open_clip "
                         f"architecture) and optionally {sorted(allowed - {'arch'})}; got {entry!r:.200}")
    base = base or PerceptorSource(name, entry["arch"], None, safe_slug(name),
                                   description=f"user perceptor from {path}")
    source = dataclasses.replace(
        base, arch=entry.get("arch", base.arch), tag=entry.get("tag", base.tag),
        slug=safe_slug(entry.get("slug", base.slug)), aliases=tuple(entry.get("aliases", base.aliases)),
        description=entry.get("description", base.description),
        file=str(Path(entry["file"]).expanduser()) if "file" in entry else base.file)
    if not (source.tag or source.file):
        raise InputError(f"{path}: perceptors.{name!r} needs `file` (a weights file) or `tag` "
                         "(an open_clip pretrained tag)")
    return source


@dataclass(frozen=True)
class Registry:
    """Every known model, by canonical name, with an alias table per kind."""

    vqgans: dict[str, VQGANSource]
    perceptors: dict[str, PerceptorSource]

    def vqgan(self, name: str) -> VQGANSource:
        """Resolve a VQGAN name or alias."""
        return _resolve("VQGAN model", name, self.vqgans)

    def perceptor(self, name: str) -> PerceptorSource:
        """Resolve a perceptor name (`ARCH:TAG`) or alias (`ViT-B/32`, `ViT-B32`, `RN50x4`, ...)."""
        return _resolve("perceptor", name, self.perceptors)


def _resolve(kind: str, name: str, table: dict) -> Any:
    if name in table:
        return table[name]
    for source in table.values():
        if name in source.aliases or name == source.slug:
            return source
    folded = [s for s in table.values() if name.lower() in {n.lower() for n in (s.name, s.slug, *s.aliases)}]
    if len(folded) == 1:
        return folded[0]
    raise UnknownModelError(kind, name, table)


def build_registry(user_file: Path | None = None) -> Registry:
    """The registry of built-in, tiny and user models (`user_file` defaults to `cache.user_models_file()`)."""
    path = user_file or user_models_file()
    user = _read_user_file(path)
    vqgans = {s.name: s for s in (*PRETRAINED_VQGANS, *TINY_VQGANS)}
    for name, entry in (user.get("vqgans") or {}).items():
        if not isinstance(entry, dict):
            raise InputError(f"{path}: vqgans.{name} must be a mapping, got {entry!r:.200}")
        vqgans[name] = _user_vqgan(name, entry, vqgans.get(name), path)
    perceptors = {s.name: s for s in (*_open_clip_perceptors(), *TINY_PERCEPTORS)}
    for name, entry in (user.get("perceptors") or {}).items():
        perceptors[name] = _user_perceptor(name, entry, perceptors.get(name), path)
    _check_unique_slugs("VQGAN", vqgans.values())
    _check_unique_slugs("perceptor", perceptors.values())
    return Registry(vqgans, perceptors)


def _check_unique_slugs(kind: str, sources: Iterable) -> None:
    seen: dict[str, str] = {}
    for source in sources:
        if source.slug in seen:
            raise InputError(f"{kind} slug {source.slug!r} is used by both {seen[source.slug]!r} and "
                             f"{source.name!r}; give one a different `slug` in the user models file")
        seen[source.slug] = source.name


@lru_cache(maxsize=4)
def _cached_registry(path: Path, mtime: float) -> Registry:
    return build_registry(path)


def registry() -> Registry:
    """The current registry, re-read when the user models file changes."""
    path = user_models_file()
    return _cached_registry(path, path.stat().st_mtime if path.exists() else 0.0)


@dataclass(frozen=True)
class ModelInfo:
    """Where a loaded model came from, as recorded with every run."""

    name: str
    slug: str
    source: str  # the file or URL the weights came from, or "random weights"
    sha256: str | None
    untrained: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
