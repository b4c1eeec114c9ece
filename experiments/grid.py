"""The grid of params.yaml: VQGAN models × perceptor entries × seeds.

Every stage script reads params.yaml through `load_grid`, which validates the whole grid and
names its cells (docs/grid.md):

    experiment: exp_vqgan_base_perceptors       # folder-name prefix
    out_dir: experiments/images_out
    grid:
      vqgan_models:                             # slug: registry name
        imagenet: imagenet_16384
      perceptors:                               # slugs joined by '_': names joined by '+' (or a list)
        ViT-B32: "ViT-B-32:openai"
        ViT-B32_RN50: "ViT-B-32:openai+RN50:openai"
      seeds: [7, 8]                             # replicates beside settings.seed ([]: none)
    settings: {...}                             # engine settings shared by every cell

The cells of `settings.seed` (the study's seed) keep the study's names; each further seed n of
`grid.seeds` adds a replicate of every cell, `<cell>__seed-<n>`, made by stage
`replicate@<vqgan>-<perceptors>-<n>` (DVC templates have no conditionals, so the replicates
are a second stage group rather than a suffix that appears once a second seed is listed).
`init_image` and `target_images` files must lie in experiments/inputs/, a dependency of every cell.

The keys are the models' registry slugs because DVC's `matrix` iterates them: they become
stage names (`cell@imagenet-ViT-B32`), params paths (`grid.perceptors.ViT-B32`) and the
study's folder names (`exp_vqgan_base_perceptors__imagenet_ViT-B32_RN50`).

`python -m experiments.grid` checks params.yaml and lists the cells;
`python -m experiments.grid suggest NAME ...` prints the grid entries for model names.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

import yaml

PARAMS_FILE = "params.yaml"
# Fixed places, relative to the repository root (where dvc.yaml is and the stages run).
STAMPS_DIR = Path("experiments/model_stamps")  # fetch_models: one stamp per grid entry
METRICS_DIR = Path("experiments/metrics")  # each cell's metrics.json, as a DVC metric
SCORES_DIR = Path("experiments/scores")  # score: bias matrix and image statistics
# Cells in progress (resumable), moved into out_dir when done; VQCLIP_PARTIAL_DIR puts them elsewhere,
# e.g. on storage every node of a cluster mounts, so that a retried cell resumes on any node.
PARTIAL_DIR = Path(os.environ.get("VQCLIP_PARTIAL_DIR") or "experiments/.partial")
INPUTS_DIR = Path("experiments/inputs")  # init_image and target_images files: a dependency of every cell
DEMO_COMMAND = "python -m experiments.demo /tmp/vqclip-demo"
# Engine settings that the grid sets per cell; `settings` may not set them.
CELL_KEYS = ("vqgan_model", "perceptors", "file_namespace", "out_dir", "allow_overwrite")
GRID_KEYS = ("vqgan_models", "perceptors", "seeds")

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")  # safe in stage names, params paths and folder names
_EXPERIMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*(?:_[A-Za-z0-9-]+)*$")  # no '__', no '.'


class GridError(ValueError):
    """params.yaml describes a grid that cannot run; the message lists every problem."""


@dataclass(frozen=True)
class Model:
    """One registered model as the grid uses it."""

    kind: str  # "vqgan" or "perceptor"
    name: str  # canonical registry name
    slug: str
    untrained: bool


@dataclass(frozen=True)
class Cell:
    """One VQGAN × one perceptor entry (one or more perceptors guiding together) × one seed."""

    experiment: str
    vqgan: Model
    perceptor_key: str  # the entry's key in grid.perceptors: its slugs joined by '_'
    perceptors: tuple[Model, ...]
    seed: int
    replicate: bool = False  # False: settings.seed's cell; True: a seed of grid.seeds

    @property
    def name(self) -> str:
        """The run folder and file namespace: the pytti study's name, `__seed-<n>` for a replicate."""
        base = f"{self.experiment}__{self.vqgan.slug}_{self.perceptor_key}"
        return f"{base}__seed-{self.seed}" if self.replicate else base

    @property
    def stage(self) -> str:
        """The DVC stage that makes this cell (DVC joins matrix keys with '-')."""
        if self.replicate:
            return f"replicate@{self.vqgan.slug}-{self.perceptor_key}-{self.seed}"
        return f"cell@{self.vqgan.slug}-{self.perceptor_key}"

    @property
    def generator(self) -> str:
        """The guiding perceptors, slugs joined by '+' (bias matrix rows)."""
        return "+".join(p.slug for p in self.perceptors)


@dataclass(frozen=True)
class Grid:
    """A validated grid."""

    experiment: str
    out_dir: str
    settings: dict[str, Any]
    vqgans: dict[str, Model]  # slug → model
    perceptors: dict[str, tuple[Model, ...]]  # entry key → models
    seeds: tuple[int, ...]  # settings.seed, then grid.seeds
    cells: tuple[Cell, ...]  # by VQGAN, perceptor entry, seed

    @property
    def models(self) -> list[Model]:
        """Every distinct model of the grid: VQGANs, then perceptors in order of appearance."""
        return list(self.vqgans.values()) + self.judges

    @property
    def judges(self) -> list[Model]:
        """Every distinct perceptor of the grid, in order of appearance: the bias matrix columns."""
        seen: dict[str, Model] = {}
        for models in self.perceptors.values():
            for model in models:
                seen.setdefault(model.name, model)
        return list(seen.values())

    @property
    def untrained(self) -> bool:
        return any(m.untrained for m in self.models)

    def cell(self, vqgan: str, perceptor: str, seed: int | None = None) -> Cell:
        """The cell of a VQGAN slug, a perceptor key and a seed (default: settings.seed)."""
        seed = self.seeds[0] if seed is None else seed
        for cell in self.cells:
            if cell.vqgan.slug == vqgan and cell.perceptor_key == perceptor and cell.seed == seed:
                return cell
        raise GridError(f"no cell {vqgan!r} × {perceptor!r} × seed {seed} in the grid; VQGANs: "
                        f"{', '.join(self.vqgans)}; perceptor entries: {', '.join(self.perceptors)}; "
                        f"seeds: {', '.join(map(str, self.seeds))}")

    def cell_dir(self, cell: Cell) -> Path:
        return Path(self.out_dir) / cell.name

    def metrics_file(self, cell: Cell) -> Path:
        return METRICS_DIR / f"{cell.name}.json"

    def engine_settings(self, cell: Cell, out_dir: str | Path | None = None) -> dict[str, Any]:
        """The engine settings of one cell (validate with `engine.settings.resolve_settings`)."""
        return {**self.settings, "vqgan_model": cell.vqgan.name,
                "perceptors": [p.name for p in cell.perceptors], "file_namespace": cell.name,
                "seed": cell.seed, "out_dir": str(out_dir if out_dir is not None else self.out_dir)}


# ---------------------------------------------------------------- reading params.yaml

class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise GridError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}: "
                            "each grid entry (and each cell) may appear only once")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as err:
        raise GridError(f"cannot read {path}: {err}") from err
    except GridError as err:
        raise GridError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise GridError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise GridError(f"{path}: expected a mapping with experiment, out_dir, grid and settings")
    return data


def load_grid(path: str | Path = PARAMS_FILE) -> Grid:
    """Read and validate params.yaml; GridError lists every problem found."""
    return build_grid(read_params(path), origin=str(path), root=Path(path).parent)


# ---------------------------------------------------------------- validation

def build_grid(params: Mapping[str, Any], origin: str = PARAMS_FILE, root: Path = Path(".")) -> Grid:
    """Validate params (names, duplicates, slugs, seeds, settings, input files under `root`) into a Grid."""
    from engine.registry import registry

    problems: list[str] = []
    try:
        reg = registry()
    except ValueError as err:  # a broken user models file
        raise GridError(str(err)) from err

    missing = [k for k in ("experiment", "out_dir", "grid", "settings") if k not in params]
    if missing:
        problems.append(f"missing {', '.join(missing)} (see docs/grid.md)")
    experiment = params.get("experiment", "")
    if "experiment" in params and not (isinstance(experiment, str) and _EXPERIMENT.match(experiment)):
        problems.append(f"experiment={experiment!r}: use letters, digits and '-', words joined by single "
                        "'_' (cell folders are <experiment>__<vqgan>_<perceptors>, split on '__' then '_')")
    out_dir = params.get("out_dir", "")
    if "out_dir" in params:
        problems += _check_out_dir(out_dir)

    grid = params.get("grid") or {}
    if not isinstance(grid, dict):
        problems.append(f"grid must be a mapping with {' and '.join(GRID_KEYS)}; got {grid!r:.100}")
        grid = {}
    for key in grid:
        if key not in GRID_KEYS:
            problems.append(f"grid.{key}: unknown key; grid has {', '.join(GRID_KEYS)}")
    if "grid" in params:
        problems += [f"grid.{key} is missing" + (" (write `seeds: []` for settings.seed alone)" if key == "seeds" else "")
                     for key in GRID_KEYS if key not in grid]
    vqgans = _vqgan_entries(grid["vqgan_models"], reg, problems) if "vqgan_models" in grid else {}
    perceptors = _perceptor_entries(grid["perceptors"], reg, problems) if "perceptors" in grid else {}

    settings = params.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        problems.append(f"settings must be a mapping of engine settings; got {settings!r:.100}")
        settings = {}
    problems += _check_settings(settings, root)
    seed = settings.get("seed")
    seed = int(seed) if (type(seed) is int or (type(seed) is float and seed.is_integer())) else -1
    replicates = _seed_entries(grid["seeds"], seed, problems) if "seeds" in grid else ()
    seeds = (seed, *replicates)

    name = experiment if isinstance(experiment, str) else ""
    cells = tuple(Cell(name, vqgan, key, models, s, replicate=i > 0)
                  for vqgan in vqgans.values() for key, models in perceptors.items() for i, s in enumerate(seeds))
    problems += _check_collisions(cells)
    if problems:
        raise GridError(f"{origin}: the grid cannot run:\n" + "\n".join(f"  - {p}" for p in problems))
    return Grid(experiment, str(PurePosixPath(out_dir)), dict(settings), vqgans, perceptors, seeds, cells)


def _check_out_dir(out_dir: Any) -> list[str]:
    if not isinstance(out_dir, str) or not out_dir.strip():
        return [f"out_dir={out_dir!r}: expected a folder path inside the repository"]
    path = PurePosixPath(out_dir)
    if path.is_absolute() or ".." in path.parts or str(path) == ".":
        return [f"out_dir={out_dir!r}: must be a sub-folder of the repository (DVC outputs live in it), "
                "e.g. experiments/images_out"]
    for fixed in (STAMPS_DIR, METRICS_DIR, SCORES_DIR, PARTIAL_DIR):
        fixed = PurePosixPath(fixed.as_posix())
        if path == fixed or fixed in path.parents or path in fixed.parents:
            return [f"out_dir={out_dir!r} overlaps {fixed}, which the pipeline writes itself"]
    return []


def _model(kind: str, source: Any) -> Model:
    return Model(kind, source.name, source.slug, bool(source.untrained))


def _resolve(kind: str, name: Any, reg: Any, where: str, problems: list[str]) -> Model | None:
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
    return _model(kind, source)


def _suggest_entries(kind: str, names: Iterable[Any], reg: Any) -> list[str]:
    """`slug: name` grid entries (YAML) for the names that resolve."""
    lines = []
    for name in names:
        models = [_resolve(kind, n, reg, "", []) for n in (str(name).split("+") if kind == "perceptor" else [name])]
        if all(models):
            key = "_".join(m.slug for m in models)
            value = "+".join(m.name for m in models)
            lines.append(f"{key}: {value!r}" if re.search(r"[:+]", value) else f"{key}: {value}")
    return lines


def _is_mapping(value: Any, kind: str, where: str, example: str, reg: Any, problems: list[str]) -> bool:
    """Grid entries must be a non-empty `slug: name` mapping; a list gets the mapping to write."""
    if isinstance(value, list):
        hint = _suggest_entries(kind, value, reg)
        problems.append(f"{where} must be a mapping of slug: name (the slugs name the DVC stages)"
                        + (f", e.g. {{{', '.join(hint)}}}" if hint else ""))
        return False
    if not isinstance(value, dict) or not value:
        problems.append(f"{where} must be a non-empty mapping of slug: registry name, e.g. {example}")
        return False
    return True


def _vqgan_entries(value: Any, reg: Any, problems: list[str]) -> dict[str, Model]:
    where = "grid.vqgan_models"
    if not _is_mapping(value, "vqgan", where, "{imagenet: imagenet_16384}", reg, problems):
        return {}
    entries: dict[str, Model] = {}
    seen: dict[str, str] = {}
    for key, name in value.items():
        model = _resolve("vqgan", name, reg, f"{where}.{key}", problems)
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


def _perceptor_entries(value: Any, reg: Any, problems: list[str]) -> dict[str, tuple[Model, ...]]:
    where = "grid.perceptors"
    example = '{ViT-B32: "ViT-B-32:openai", ViT-B32_RN50: "ViT-B-32:openai+RN50:openai"}'
    if not _is_mapping(value, "perceptor", where, example, reg, problems):
        return {}
    entries: dict[str, tuple[Model, ...]] = {}
    seen: dict[frozenset, str] = {}
    for key, names in value.items():
        here = f"{where}.{key}"
        if isinstance(names, str):
            names = names.split("+")
        if not isinstance(names, list) or not names:
            problems.append(f"{here}: expected perceptor names joined by '+' or a list; got {names!r:.100}")
            continue
        models = [_resolve("perceptor", n, reg, here, problems) for n in names]
        if not all(models):
            continue
        slugs = [m.slug for m in models]
        if len(set(slugs)) != len(slugs):
            problems.append(f"{here}: lists the same perceptor twice ({'+'.join(slugs)})")
            continue
        if str(key) != "_".join(slugs):
            value_text = "+".join(m.name for m in models)
            problems.append(f"{where}: the key {key!r} for {value_text!r} must be its slugs joined by '_': "
                            f"write `{'_'.join(slugs)}: {value_text!r}`")
            continue
        same = frozenset(m.name for m in models)
        if same in seen:
            problems.append(f"duplicate cells: {where}.{seen[same]} and .{key} use the same perceptors")
            continue
        seen[same] = str(key)
        entries[str(key)] = tuple(models)
    return entries


def _seed_entries(value: Any, seed: Any, problems: list[str]) -> tuple[int, ...]:
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
            if other is not cell:
                if not (other.replicate or cell.replicate):  # the seed only repeats the clash
                    problems.append(f"cells {other.vqgan.slug} × {other.perceptor_key} and {cell.vqgan.slug} × "
                                    f"{cell.perceptor_key} share the {what} {getattr(cell, attr)!r}; give one "
                                    "model another `slug:` in the user models file")
    return problems


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.grid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=PARAMS_FILE)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("check", help="validate params.yaml and list the cells (default)")
    suggest = sub.add_parser("suggest", help="print grid entries for model names (join perceptors with '+')")
    suggest.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "suggest":
        from engine.registry import registry

        reg, problems = registry(), []
        vq, pe = [], []
        for name in args.names:
            parts = name.split("+")
            if len(parts) == 1 and _resolve("vqgan", name, reg, name, []) is not None:
                vq.append(name)
            elif all(_resolve("perceptor", p, reg, name, problems) for p in parts):
                pe.append(name)
        for title, kind, names in (("vqgan_models", "vqgan", vq), ("perceptors", "perceptor", pe)):
            if names:
                print(f"  {title}:")
                for entry in _suggest_entries(kind, names, reg):
                    print(f"    {entry}")
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0
    try:
        grid = load_grid(args.params)
    except GridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    flag = "  (UNTRAINED models: says nothing about real checkpoints)" if grid.untrained else ""
    print(f"{len(grid.cells)} cells = {len(grid.vqgans)} VQGANs × {len(grid.perceptors)} perceptor entries × "
          f"{len(grid.seeds)} seed{'s' * (len(grid.seeds) > 1)} ({', '.join(map(str, grid.seeds))}){flag}")
    print(f"cell folders in {grid.out_dir}/")
    rows = [("cell", "vqgan", "perceptors", "seed", "DVC stage")]
    rows += [(c.name, c.vqgan.name, "+".join(p.name for p in c.perceptors), str(c.seed), c.stage) for c in grid.cells]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[4])
    return 0


if __name__ == "__main__":
    sys.exit(main())
