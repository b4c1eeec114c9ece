"""Validate params.yaml's content into a `Grid`: every problem found is listed at once (docs/grid.md)."""
from __future__ import annotations

import itertools
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from experiments.grid.entries import (
    perceptor_set_entries,
    seed_entries,
    vary_entries,
    vqgan_entries,
)
from experiments.grid.layout import (
    INPUTS_DIR,
    METRICS_DIR,
    PARAMS_FILE,
    SCORES_DIR,
    STAMPS_DIR,
    partial_dir,
)
from experiments.grid.model import CELL_KEYS, Cell, Grid, GridError, Model

TOP_KEYS = ("experiment", "out_dir", "grid", "settings")
GRID_KEYS = ("vqgan_models", "perceptors", "seeds")  # required; `vary` is optional
OPTIONAL_GRID_KEYS = ("vary",)
MAX_CELLS = 2000  # more cells than this is taken for a slip (days of GPU time for the study's settings)
_EXPERIMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*(?:_[A-Za-z0-9-]+)*$")  # no '__', no '.'


def build_grid(params: Mapping[str, Any], origin: str = PARAMS_FILE, root: Path = Path(".")) -> Grid:
    """Validate params (names, duplicates, slugs, seeds, settings, input files under `root`) into a Grid."""
    from engine.registry import registry

    try:
        reg = registry()
    except ValueError as err:  # a broken user models file
        raise GridError(str(err)) from err
    problems: list[str] = []
    missing = [k for k in TOP_KEYS if k not in params]
    if missing:
        problems.append(f"missing {', '.join(missing)} (see docs/grid.md)")
    experiment = _experiment(params, problems)
    out_dir = params.get("out_dir", "")
    if "out_dir" in params:
        problems += _check_out_dir(out_dir)
    grid = _grid_section(params, problems)
    vqgans = vqgan_entries(grid["vqgan_models"], reg, problems) if "vqgan_models" in grid else {}
    perceptor_sets = perceptor_set_entries(grid["perceptors"], reg, problems) if "perceptors" in grid else {}
    settings = _settings_section(params, problems)
    problems += _check_settings(settings, root)
    vary = vary_entries(grid.get("vary"), settings, problems)
    seed = _seed(settings)
    seeds = (seed, *(seed_entries(grid["seeds"], seed, problems) if "seeds" in grid else ()))
    count = len(vqgans) * len(perceptor_sets) * len(seeds) * math.prod(len(levels) for levels in vary.values())
    if count > MAX_CELLS:
        problems.append(f"the grid has {count} cells ({len(vqgans)} VQGANs × {len(perceptor_sets)} perceptor sets × "
                        f"{' × '.join(f'{len(v)} {k}' for k, v in vary.items()) or 'no varied setting'} × "
                        f"{len(seeds)} seeds), more than {MAX_CELLS}: shrink grid.vary or the model lists")
        count = 0
    cells = _cells(experiment, vqgans, perceptor_sets, seeds, vary) if experiment and count else ()
    problems += _check_collisions(cells)
    if problems:
        raise GridError(f"{origin}: the grid cannot run:\n" + "\n".join(f"  - {p}" for p in problems))
    return Grid(experiment, str(PurePosixPath(out_dir)), settings, vqgans, perceptor_sets, seeds, cells, vary)


def _experiment(params: Mapping[str, Any], problems: list[str]) -> str:
    """The experiment name, '' where it is missing or unfit for cell names."""
    experiment = params.get("experiment", "")
    if isinstance(experiment, str) and _EXPERIMENT.match(experiment):
        return experiment
    if "experiment" in params:
        problems.append(f"experiment={experiment!r}: use letters, digits and '-', words joined by single "
                        "'_' (cell folders are <experiment>__<vqgan>_<perceptors>, split on '__' then '_')")
    return ""


def _grid_section(params: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    grid = params.get("grid") or {}
    if not isinstance(grid, dict):
        problems.append(f"grid must be a mapping with {' and '.join(GRID_KEYS)}; got {grid!r:.100}")
        return {}
    problems += [f"grid.{key}: unknown key; grid has {', '.join(GRID_KEYS + OPTIONAL_GRID_KEYS)}"
                 for key in grid if key not in GRID_KEYS + OPTIONAL_GRID_KEYS]
    if "grid" in params:
        hint = {"seeds": " (write `seeds: []` for settings.seed alone)"}
        problems += [f"grid.{key} is missing{hint.get(key, '')}" for key in GRID_KEYS if key not in grid]
    return grid


def _settings_section(params: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    settings = params.get("settings")
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        problems.append(f"settings must be a mapping of engine settings; got {settings!r:.100}")
        return {}
    return dict(settings)


def _seed(settings: dict[str, Any]) -> int:
    """settings.seed as an int (-1, random, where it is not one: `_check_settings` says so)."""
    seed = settings.get("seed")
    return int(seed) if (type(seed) is int or (type(seed) is float and seed.is_integer())) else -1


def _cells(experiment: str, vqgans: dict[str, Model], perceptor_sets: dict[str, tuple[Model, ...]],
           seeds: tuple[int, ...], vary: dict[str, dict[str, Any]]) -> tuple[Cell, ...]:
    """Every cell, by VQGAN, perceptor set, level of each varied setting and seed (the first seed's
    are the study's cells)."""
    combinations = [tuple(zip(vary, levels)) for levels in itertools.product(*vary.values())]
    return tuple(Cell(experiment, vqgan, key, models, s, replicate=i > 0, varied=varied)
                 for vqgan in vqgans.values() for key, models in perceptor_sets.items() for varied in combinations
                 for i, s in enumerate(seeds))


def _check_out_dir(out_dir: Any) -> list[str]:
    if not isinstance(out_dir, str) or not out_dir.strip():
        return [f"out_dir={out_dir!r}: expected a folder path inside the repository"]
    path = PurePosixPath(out_dir)
    if path.is_absolute() or ".." in path.parts or str(path) == ".":
        return [f"out_dir={out_dir!r}: must be a sub-folder of the repository (DVC outputs live in it), "
                "e.g. experiments/images_out"]
    for fixed in (STAMPS_DIR, METRICS_DIR, SCORES_DIR, partial_dir()):
        fixed = PurePosixPath(fixed.as_posix())
        if path == fixed or fixed in path.parents or path in fixed.parents:
            return [f"out_dir={out_dir!r} overlaps {fixed}, which the pipeline writes itself"]
    return []


def _input_files(resolved: Any) -> list[tuple[str, str]]:
    """(setting, path) of every image file the settings read."""
    from engine.prompts import parse_prompt_list

    files = [("init_image", resolved.init_image)] if resolved.init_image else []
    return files + [("target_images", p.text) for p in parse_prompt_list(resolved.target_images)]


def _check_input(setting: str, path: str, root: Path) -> list[str]:
    inputs = PurePosixPath(INPUTS_DIR.as_posix())
    where = PurePosixPath(path)
    if where.is_absolute() or ".." in where.parts or inputs not in where.parents:
        return [f"settings.{setting}={path!r}: put the file in {inputs}/ and name it from the repository root "
                f"(e.g. {inputs}/{where.name}); that folder is a DVC dependency of every cell, so changing "
                "an image there re-runs them"]
    if not (root / where).is_file():
        return [f"settings.{setting}={path!r}: no such file; put it there (the study's photo is "
                f"{inputs}/GasWorksPark3.jpg) or set init_image: null to start from random codes"]
    return []


def _check_settings(settings: dict, root: Path) -> list[str]:
    from engine.settings import SettingsError, resolve_settings

    problems = [f"settings.{k}: set per cell by the grid; remove it from settings" for k in CELL_KEYS if k in settings]
    values = {k: v for k, v in settings.items() if k not in CELL_KEYS}
    try:
        resolved = resolve_settings({**values, "vqgan_model": "x", "perceptors": ["x"], "file_namespace": "x"})
    except SettingsError as err:
        return problems + [f"settings: {err}"]
    if resolved.seed < 0:
        problems.append(f"settings.seed={resolved.seed}: the grid compares checkpoints at fixed seeds; "
                        "set a non-negative integer (the study used 12345; more seeds go in grid.seeds)")
    for setting, path in _input_files(resolved):
        problems += _check_input(setting, path, root)
    return problems


def _check_collisions(cells: tuple[Cell, ...]) -> list[str]:
    problems = []
    for attr, what in (("stage", "DVC stage name"), ("name", "folder name")):
        seen: dict[str, Cell] = {}
        for cell in cells:
            other = seen.setdefault(getattr(cell, attr), cell)
            if other is not cell and not (other.replicate or cell.replicate) and cell.varied == cells[0].varied:
                # a clash of model slugs repeats with every seed and level: say it once
                problems.append(f"cells {other.vqgan.slug} × {other.set_key} and {cell.vqgan.slug} × "
                                f"{cell.set_key} share the {what} {getattr(cell, attr)!r}; give one "
                                "model another `slug:` in the user models file")
    return problems
