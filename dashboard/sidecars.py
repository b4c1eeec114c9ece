"""What a run's settings file (ours or pytti's), or failing that its name, says about the run.

Files are read defensively: at most `MAX_JSON_BYTES`, nested at most `MAX_JSON_DEPTH` deep,
and every field the catalog uses is type-checked, so a bad file is a `MetadataError` naming
what is wrong, never a crash.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

#: pytti's perceptor switches and the slug each one gets in folder names (id without '/').
PYTTI_PERCEPTORS = {
    "ViTB32": "ViT-B32", "ViTB16": "ViT-B16", "ViTL14": "ViT-L14",
    "ViTL14_336px": "ViT-L14@336px", "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4",
    "RN50x16": "RN50x16", "RN50x64": "RN50x64",
}
MAX_JSON_BYTES = 4_000_000
MAX_JSON_DEPTH = 32
RERUN_RE = re.compile(r"^(?P<stem>.*)\((?P<k>\d+)\)$")
REPLICATE_RE = re.compile(r"^(?P<cell>.+)__seed-(?P<seed>\d+)$")  # the grid's replicates (grid.seeds)
_KINDS = {dict: "an object", list: "a list", str: "a string"}


class MetadataError(ValueError):
    """A settings file exists but cannot be read."""


@dataclass
class Meta:
    """What a settings file (or, failing that, the folder name) says about a run."""

    source: str
    vqgan: str = "?"
    perceptors: list[str] = field(default_factory=list)
    experiment: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    save_every: int = 1
    expected_frames: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    untrained: bool = False  # made with a random-weight model: says nothing about a checkpoint


def split_rerun(name: str) -> tuple[str, int]:
    """`ns(2)` -> (`ns`, 2); `ns` -> (`ns`, 0)."""
    m = RERUN_RE.match(name)
    return (m["stem"], int(m["k"])) if m else (name, 0)


def split_replicate(name: str) -> tuple[str, int | None]:
    """`<cell>__seed-7` (a replicate of the grid) -> (`<cell>`, 7); other names -> (name, None)."""
    m = REPLICATE_RE.match(split_rerun(name)[0])
    return (m["cell"], int(m["seed"])) if m else (split_rerun(name)[0], None)


def parse_cell_name(name: str) -> tuple[str, str | None, list[str]]:
    """`<experiment>__<vqgan>_<p1>_<p2>[__seed-<n>]` -> (experiment, vqgan, [p1, p2]); slugs
    never hold `_`."""
    experiment, sep, rest = split_replicate(name)[0].rpartition("__")
    if not sep:
        return "", None, []
    vqgan, *perceptors = rest.split("_")
    return experiment, vqgan or None, perceptors


def parse_setting_name(name: str, keys: Iterable[str]) -> tuple[str, dict[str, str]] | None:
    """`<experiment>_<key>-<value>_<key>-<value>` (pytti's other experiment families, no `__`)
    -> (experiment, {key: value}). `keys` are the setting names that may appear (they may hold
    `_`; the longest wins); a value runs to the next `_<key>-`. None for any other name."""
    stem = split_rerun(name)[0]
    names = sorted({k for k in keys if k}, key=len, reverse=True)
    if "__" in stem or not names:
        return None
    matches = list(re.finditer(rf"_({'|'.join(map(re.escape, names))})-", stem))
    if not matches or matches[0].start() == 0:
        return None
    ends = [m.start() for m in matches[1:]] + [len(stem)]
    values = {m[1]: stem[m.end():end] for m, end in zip(matches, ends)}
    return (stem[:matches[0].start()], values) if all(values.values()) else None


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
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise MetadataError(f"unreadable {path.name}: {size} bytes, more than {MAX_JSON_BYTES}")
        obj = parse(path.read_bytes().decode("utf-8"))
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


def _scene_count(scenes: Any) -> int:
    if isinstance(scenes, list):
        return len(scenes)
    return len([s for s in str(scenes or "").split("||") if s.strip()])


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
        save_every=max(to_int(settings.get("save_every")) or 1, 1), settings=settings,
        untrained=any(m.get("untrained") is True for m in [vqgan, *entries]),
    )


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
    save_every = max(to_int(settings.get("save_every")) or 1, 1)
    steps = to_int(settings.get("steps_per_scene"))
    expected = steps * _scene_count(settings.get("scenes")) // save_every if steps else None
    return Meta(
        source="pytti",
        vqgan=(_text(settings.get("vqgan_model")) or "?") if image_model == "VQGAN" else image_model,
        perceptors=pytti_perceptors(settings, f"unreadable {path.name}"),
        seed=to_int(settings.get("seed")),
        width=to_int(settings.get("width")), height=to_int(settings.get("height")),
        save_every=save_every, expected_frames=expected, settings=settings,
    )


def from_name(name: str) -> Meta:
    """What a grid folder name `<experiment>__<vqgan>_<perceptors>` says."""
    experiment, vqgan, perceptors = parse_cell_name(name)
    return Meta(source="folder name", vqgan=vqgan or "?", perceptors=perceptors,
                experiment=experiment or None, seed=split_replicate(name)[1])
