"""The grid's entries: `slug: registry name` mappings of VQGANs and perceptors, and the seeds.

Each function appends what is wrong to `problems` (so every problem is listed at once) and
returns the entries that are right.
"""
from __future__ import annotations

import difflib
import itertools
import re
from typing import Any, Iterable

from experiments.grid.model import Model

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")  # safe in stage names, params paths and folder names


def resolve(kind: str, name: Any, reg: Any, where: str, problems: list[str]) -> Model | None:
    """The registry's model `name` of `kind` ("vqgan" or "perceptor"), else None with the problem."""
    from engine.registry import UnknownModelError

    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: expected a model name, got {name!r}")
        return None
    try:
        source = reg.vqgan(name.strip()) if kind == "vqgan" else reg.perceptor(name.strip())
    except UnknownModelError as err:
        hint = "" if "python -m engine models" in str(err) else " (see `python -m engine models`)"
        problems.append(f"{where}: {err}{hint}")
        return None
    if not _SLUG.match(source.slug):
        problems.append(f"{where}: the slug {source.slug!r} of {source.name!r} cannot name a DVC stage or "
                        "params path (letters, digits and '-' only); give it a `slug:` in the user models file")
        return None
    return Model(kind, source.name, source.slug, bool(source.untrained))


def suggest_entries(kind: str, names: Iterable[Any], reg: Any) -> list[str]:
    """`slug: name` grid entries (YAML) for the names that resolve (perceptors joined by '+')."""
    lines = []
    for name in names:
        models = [resolve(kind, n, reg, "", []) for n in (str(name).split("+") if kind == "perceptor" else [name])]
        if all(models):
            key = "_".join(m.slug for m in models)
            value = "+".join(m.name for m in models)
            lines.append(f"{key}: {value!r}" if re.search(r"[:+]", value) else f"{key}: {value}")
    return lines


def _is_mapping(value: Any, kind: str, where: str, example: str, reg: Any, problems: list[str]) -> bool:
    """Grid entries must be a non-empty `slug: name` mapping; a list gets the mapping to write."""
    if isinstance(value, list):
        hint = suggest_entries(kind, value, reg)
        problems.append(f"{where} must be a mapping of slug: name (the slugs name the DVC stages)"
                        + (f", e.g. {{{', '.join(hint)}}}" if hint else ""))
        return False
    if not isinstance(value, dict) or not value:
        problems.append(f"{where} must be a non-empty mapping of slug: registry name, e.g. {example}")
        return False
    return True


def vqgan_entries(value: Any, reg: Any, problems: list[str]) -> dict[str, Model]:
    """grid.vqgan_models: slug → model, each key its model's slug, each model once."""
    where = "grid.vqgan_models"
    if not _is_mapping(value, "vqgan", where, "{imagenet: imagenet_16384}", reg, problems):
        return {}
    entries: dict[str, Model] = {}
    seen: dict[str, str] = {}
    for key, name in value.items():
        model = resolve("vqgan", name, reg, f"{where}.{key}", problems)
        if model is None:
            continue
        if str(key) != model.slug:
            problems.append(f"{where}: the key {key!r} for {model.name!r} must be its slug: "
                            f"write `{model.slug}: {model.name}`")
            continue
        if model.name in seen:
            problems.append(f"duplicate cells: {where}.{seen[model.name]} and .{key} are both {model.name!r}")
            continue
        seen[model.name] = str(key)
        entries[model.slug] = model
    return entries


def _perceptor_set(key: Any, names: Any, reg: Any, problems: list[str]) -> tuple[Model, ...] | None:
    """One perceptor set of grid.perceptors: its models, the key their slugs joined by '_'."""
    where = f"grid.perceptors.{key}"
    if isinstance(names, str):
        names = names.split("+")
    if not isinstance(names, list) or not names:
        problems.append(f"{where}: expected perceptor names joined by '+' or a list; got {names!r:.100}")
        return None
    models = [resolve("perceptor", n, reg, where, problems) for n in names]
    if not all(models):
        return None
    slugs = [m.slug for m in models]
    if len(set(slugs)) != len(slugs):
        problems.append(f"{where}: lists the same perceptor twice ({'+'.join(slugs)})")
        return None
    if str(key) != "_".join(slugs):
        value_text = "+".join(m.name for m in models)
        problems.append(f"grid.perceptors: the key {key!r} for {value_text!r} must be its slugs joined by '_': "
                        f"write `{'_'.join(slugs)}: {value_text!r}`")
        return None
    return tuple(models)


def perceptor_set_entries(value: Any, reg: Any, problems: list[str]) -> dict[str, tuple[Model, ...]]:
    """grid.perceptors, the grid's perceptor sets: key → models guiding one cell together, each set once."""
    example = '{ViT-B32: "ViT-B-32:openai", ViT-B32_RN50: "ViT-B-32:openai+RN50:openai"}'
    if not _is_mapping(value, "perceptor", "grid.perceptors", example, reg, problems):
        return {}
    entries: dict[str, tuple[Model, ...]] = {}
    seen: dict[frozenset, str] = {}
    for key, names in value.items():
        models = _perceptor_set(key, names, reg, problems)
        if models is None:
            continue
        same = frozenset(m.name for m in models)
        if same in seen:
            problems.append(f"duplicate cells: grid.perceptors.{seen[same]} and .{key} use the same perceptors")
            continue
        seen[same] = str(key)
        entries[str(key)] = models
    return entries


def seed_entries(value: Any, seed: Any, problems: list[str]) -> tuple[int, ...]:
    """grid.seeds: distinct non-negative integers other than settings.seed."""
    if not isinstance(value, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in value):
        problems.append(f"grid.seeds={value!r:.100}: expected a list of non-negative integers, the seeds of the "
                        "replicates besides settings.seed, e.g. [1, 2] ([] = settings.seed alone)")
        return ()
    for s in sorted({s for s in value if value.count(s) > 1}):
        problems.append(f"grid.seeds lists {s} twice; each seed makes one replicate of every cell")
    if seed in value:
        problems.append(f"grid.seeds lists {seed}, which is settings.seed: every cell runs with settings.seed "
                        "already (with the study's names); list only the further seeds")
    return tuple(dict.fromkeys(s for s in value if s != seed))


def _fixed(setting: str) -> str | None:
    """Why a setting cannot vary between the grid's cells, or None where it can."""
    from engine.settings import NON_RESULT_KEYS
    from experiments.grid.model import CELL_KEYS

    if setting in CELL_KEYS:
        return "the grid sets it per cell (grid.vqgan_models, grid.perceptors, the cell's name and folder)"
    if setting == "seed":
        return "the grid's seeds are settings.seed and grid.seeds"
    if setting in NON_RESULT_KEYS:
        return "it changes how or where a run is computed, not what it computes, so cells would differ by name only"
    if setting == "pytti_unused":
        return "it is the list of a pytti file's ignored keys, not a setting"
    return None


def _levels(setting: Any, levels: Any) -> dict[str, Any] | list[str]:
    """One setting of grid.vary: its levels (slug → value), or what is wrong with them."""
    from engine.settings import FIELDS

    where = f"grid.vary.{setting}"
    if setting not in FIELDS:
        close = difflib.get_close_matches(str(setting), FIELDS, n=3)
        return [f"{where}: unknown setting" + (f"; did you mean {', '.join(close)}?" if close else
                                               " (see docs/engine.md for the settings)")]
    if reason := _fixed(setting):
        return [f"{where}: {setting} cannot vary between cells: {reason}"]
    if not isinstance(levels, dict) or not levels:
        return [f"{where}={levels!r:.100}: expected a mapping of level slug: value, e.g. {{low: 1.0, high: 2.0}}"]
    bad = [slug for slug in levels if not isinstance(slug, str) or not _SLUG.match(slug)]
    return [f"{where}.{slug}: a level slug names DVC stages and folders: use letters, digits and '-' only"
            for slug in bad] or dict(levels)


def vary_entries(value: Any, settings: dict[str, Any], problems: list[str]) -> dict[str, dict[str, Any]]:
    """grid.vary: setting → {level slug: value}. Each setting is an engine setting that can differ
    between cells, each slug fits a DVC stage name and a folder name, and each combination of
    levels is settings the engine accepts."""
    from engine.settings import FIELDS, SettingsError, resolve_settings

    if value is None or value == {}:
        return {}
    if not isinstance(value, dict):
        problems.append(f"grid.vary={value!r:.100}: expected a mapping of setting: {{level slug: value}}, e.g. "
                        "{scenes: {city: 'a city at night', forest: 'a forest in the fog'}}")
        return {}
    vary: dict[str, dict[str, Any]] = {}
    for setting, levels in value.items():
        found = _levels(setting, levels)
        if isinstance(found, dict):
            vary[setting] = found
        else:
            problems += found
    base = {k: v for k, v in settings.items() if k not in FIELDS or not _fixed(k)}
    seen: set[str] = set()
    for levels in itertools.product(*(v.items() for v in vary.values())):
        try:
            resolve_settings({**base, **{s: v for s, (_, v) in zip(vary, levels)}, "vqgan_model": "x",
                              "perceptors": ["x"], "file_namespace": "x"})
        except SettingsError as err:
            named = ", ".join(f"grid.vary.{s}.{slug}" for s, (slug, _) in zip(vary, levels))
            if str(err) not in seen:
                seen.add(str(err))
                problems.append(f"{named}: the engine refuses it: {err}")
    return vary
