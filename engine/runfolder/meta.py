"""What a run's settings file (our sidecar or pytti's `_settings.txt`), or failing that its
folder name, says about the run.

Files are read defensively: at most `MAX_JSON_BYTES`, nested at most `MAX_JSON_DEPTH` deep, and
every field used is type-checked, so a bad file is a `MetadataError` naming what is wrong, never
a crash.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.errors import InputError
from engine.fsutil import BadFile, read_regular
from engine.prompts import PromptSyntaxError, parse_scenes
from engine.runfolder.names import (
    PERCEPTOR_SET_SEP,
    PYTTI_PERCEPTORS,
    TABLELESS_FORMATS,
    ZERO_BASED_LOSS_FORMATS,
    parse_cell_name,
)

MAX_JSON_BYTES = 4_000_000
DEFAULT_FACTOR = 16  # the VQGAN downsampling factor of the study's checkpoints
MAX_JSON_DEPTH = 32
_KINDS = {dict: "an object", list: "a list", str: "a string"}


class MetadataError(InputError):
    """A settings file exists but cannot be read."""


@dataclass
class Meta:
    """What a settings file (or, failing that, the folder name) says about a run."""

    source: str  # "ours", "pytti" or "folder name"
    vqgan: str = "?"
    perceptors: list[str] = field(default_factory=list)
    experiment: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    save_every: int = 1
    total_steps: int | None = None  # steps of the whole run, where the settings say
    settings: dict[str, Any] = field(default_factory=dict)
    untrained: bool = False  # made with a random-weight model: says nothing about a checkpoint
    zero_based_losses: bool = False  # losses.csv of format /1: `step` is the 0-based step index
    format: str | None = None  # our sidecar's `format`
    vqgan_factor: int = DEFAULT_FACTOR  # pixels per latent cell side; older and pytti folders: the study's 16
    scenes: list[list[tuple[str, float]]] = field(default_factory=list)  # per scene: its prompts (text, weight)

    @property
    def expected_frames(self) -> int | None:
        return -(-self.total_steps // self.save_every) if self.total_steps else None

    @property
    def perceptor_set(self) -> str:
        """The perceptors that guided the run together: slugs joined by '+' ('?' where unknown)."""
        return PERCEPTOR_SET_SEP.join(self.perceptors) or "?"

    @property
    def has_frame_table(self) -> bool:
        """Whether the engine wrote a frame table for this run (our formats from /3 on)."""
        return self.source == "ours" and self.format not in TABLELESS_FORMATS


def json_depth(value: Any) -> int:
    """How deeply `value` nests lists and objects (a scalar is 0), without recursion."""
    depth, level = 0, [(value, 0)]
    while level:
        item, d = level.pop()
        if isinstance(item, (dict, list)):
            depth = max(depth, d + 1)
            level.extend((v, d + 1) for v in (item.values() if isinstance(item, dict) else item))
    return depth


def read_json_object(path: Path, parse: Callable[[str], Any] = json.loads) -> dict[str, Any]:
    """The JSON object `parse` finds in the file, bounded in size and depth, else MetadataError."""
    try:
        obj = parse(read_regular(path, MAX_JSON_BYTES, "settings file").decode("utf-8"))
    except BadFile as e:
        raise MetadataError(f"unreadable {path.name}: {str(e).removeprefix(str(path)).lstrip(': ')}") from e
    except RecursionError as e:
        raise MetadataError(f"unreadable {path.name}: nested too deeply") from e
    except (OSError, ValueError) as e:  # ValueError: bad UTF-8 or bad JSON
        raise MetadataError(f"unreadable {path.name}: {e}") from e
    if not isinstance(obj, dict):
        raise MetadataError(f"unreadable {path.name}: not a JSON object")
    if json_depth(obj) > MAX_JSON_DEPTH:
        raise MetadataError(f"unreadable {path.name}: nested deeper than {MAX_JSON_DEPTH} levels")
    try:  # `\udcff` escapes decode to text that no page or terminal can take
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise MetadataError(f"unreadable {path.name}: escapes that are not Unicode text ({e.reason})") from e
    return obj


def typed(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """`doc[key]` if it is a `kind` (absent or null: an empty `kind`), else MetadataError."""
    value = doc.get(key)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise MetadataError(f"{where}: {key!r} is {type(value).__name__} {json.dumps(value)[:40]}, "
                            f"expected {_KINDS[kind]}")
    return value


def to_int(value: Any) -> int | None:
    """`value` as an int where it is one (pytti writes some numbers as text), else None."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def to_float(value: Any) -> float | None:
    """`value` as a finite float where it is one (a number, or text of one), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def scene_count(settings: dict[str, Any]) -> int | None:
    """How many scenes the settings' `scenes` hold (pytti's list of scenes, or `||`-separated, as
    `engine.prompts.parse_scenes` splits them)."""
    scenes = settings.get("scenes")
    if isinstance(scenes, list):
        return len(scenes) or None
    try:
        return len(parse_scenes(str(scenes or ""), str(settings.get("scene_prefix") or ""),
                                str(settings.get("scene_suffix") or "")))
    except PromptSyntaxError:
        return None


def total_steps(settings: dict[str, Any]) -> int | None:
    """steps_per_scene × the number of scenes, where both are known."""
    steps, count = to_int(settings.get("steps_per_scene")), scene_count(settings)
    return steps * count if steps and steps > 0 and count else None


def parsed_scenes(settings: dict[str, Any]) -> list[list[tuple[str, float]]]:
    """Each scene's prompts (text, weight) as `engine.prompts.parse_scenes` reads the settings
    (pytti's list of scenes joined by `||`); [] where they do not parse."""
    scenes = settings.get("scenes")
    text = " || ".join(map(str, scenes)) if isinstance(scenes, list) else str(scenes or "")
    try:
        parsed = parse_scenes(text, str(settings.get("scene_prefix") or ""), str(settings.get("scene_suffix") or ""))
    except PromptSyntaxError:
        return []
    return [[(p.text, p.weight) for p in scene] for scene in parsed]


def recorded_scenes(prompts: list[Any], settings: dict[str, Any]) -> list[list[tuple[str, float]]]:
    """Each scene's prompts as the sidecar records them (its `prompts`; image prompts, of no scene,
    left out), else as the settings parse."""
    rows = [p for p in prompts if isinstance(p, dict) and isinstance(to_int(p.get("scene")), int)
            and to_int(p.get("scene")) >= 0 and isinstance(p.get("text"), str) and to_float(p.get("weight")) is not None]
    if not rows:
        return parsed_scenes(settings)
    scenes: list[list[tuple[str, float]]] = [[] for _ in range(1 + max(to_int(p["scene"]) for p in rows))]
    for p in rows:
        scenes[to_int(p["scene"])].append((p["text"], to_float(p["weight"])))
    return scenes


def read_ours(path: Path) -> Meta:
    """Our `<ns>_settings.json` sidecar (docs/run-folder-format.md)."""
    doc = read_json_object(path)
    where = f"unreadable {path.name}"
    settings = typed(doc, "settings", dict, where)
    models = typed(doc, "models", dict, where)
    vqgan = typed(models, "vqgan", dict, f"{where}: models")
    entries = typed(models, "perceptors", list, f"{where}: models")
    if not all(isinstance(p, dict) for p in entries):
        raise MetadataError(f"{where}: models.perceptors holds a non-object")
    perceptors = [_text(p.get("slug")) or _text(p.get("name")) or "?" for p in entries]
    fallback = [p for p in typed(settings, "perceptors", list, f"{where}: settings") if _text(p)]
    return Meta(
        source="ours", vqgan=_text(vqgan.get("slug")) or _text(settings.get("vqgan_model")) or "?",
        perceptors=perceptors or fallback,
        experiment=_text(doc.get("experiment")) or _text(settings.get("experiment")),
        seed=to_int(doc.get("seed", settings.get("seed"))),
        width=to_int(settings.get("width")), height=to_int(settings.get("height")),
        save_every=max(to_int(settings.get("save_every")) or 1, 1), total_steps=total_steps(settings),
        settings=settings, untrained=any(m.get("untrained") is True for m in [vqgan, *entries]),
        zero_based_losses=doc.get("format") in ZERO_BASED_LOSS_FORMATS, format=_text(doc.get("format")),
        vqgan_factor=_factor(vqgan.get("factor")),
        scenes=recorded_scenes(typed(doc, "prompts", list, where), settings),
    )


def _factor(value: Any) -> int:
    """A recorded downsampling factor (a power of two from 2 to 64), else the study's 16."""
    factor = to_int(value)
    return factor if factor in {2, 4, 8, 16, 32, 64} else DEFAULT_FACTOR


def pytti_perceptors(settings: dict[str, Any], where: str = "settings") -> list[str]:
    """The perceptors of a pytti run, as pytti's `load_clip` picks them: with `use_mmc`, exactly
    the `mmc_models` (id without '/'), the switches ignored even when true; otherwise the
    switches that are true."""
    if _flag(settings.get("use_mmc")):
        models = typed(settings, "mmc_models", list, where)
        if not all(isinstance(m, dict) and _text(m.get("id")) for m in models):
            raise MetadataError(f"{where}: an mmc_models entry has no text 'id'")
        slugs = [m["id"].replace("/", "") for m in models]
    else:
        slugs = [slug for switch, slug in PYTTI_PERCEPTORS.items() if _flag(settings.get(switch))]
    return list(dict.fromkeys(slugs))


def read_pytti(path: Path) -> Meta:
    """pytti's `<ns>_settings.txt`: a JSON object, then a `b'<time>: <scene>'` line per scene."""
    settings = read_json_object(path, lambda text: json.JSONDecoder().raw_decode(text.lstrip())[0])
    image_model = _text(settings.get("image_model")) or "VQGAN"
    return Meta(
        source="pytti",
        vqgan=(_text(settings.get("vqgan_model")) or "?") if image_model == "VQGAN" else image_model,
        perceptors=pytti_perceptors(settings, f"unreadable {path.name}"),
        seed=to_int(settings.get("seed")),
        width=to_int(settings.get("width")), height=to_int(settings.get("height")),
        save_every=max(to_int(settings.get("save_every")) or 1, 1), total_steps=total_steps(settings),
        settings=settings, scenes=parsed_scenes(settings),
    )


def read_settings_file(path: Path) -> Meta:
    """Our sidecar (`.json`) or pytti's settings file (`.txt`)."""
    return read_ours(path) if path.suffix == ".json" else read_pytti(path)


def from_name(name: str) -> Meta:
    """What a grid folder name `<experiment>__<vqgan>_<perceptors>[__seed-<n>]` says."""
    cell = parse_cell_name(name)
    if cell is None:
        return Meta(source="folder name")
    return Meta(source="folder name", vqgan=cell.vqgan, perceptors=list(cell.perceptors),
                experiment=cell.experiment, seed=cell.seed)
