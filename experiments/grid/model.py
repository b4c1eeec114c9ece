"""The grid's data model: its models, its cells (names, stages) and each cell's engine settings.

A cell's engine settings come from here (`Grid.engine_settings`), so dvc.yaml's cell stages
depend on this module: keep it to what a cell is and runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from engine.errors import InputError, StateError
from engine.runfolder import PERCEPTOR_SET_SEP, cell_name
from experiments.grid.layout import METRICS_DIR

# Engine settings that the grid sets per cell; `settings` may not set them.
CELL_KEYS = ("vqgan_model", "perceptors", "file_namespace", "out_dir", "allow_overwrite")


class GridError(InputError):
    """params.yaml describes a grid that cannot run, or names no such cell; the message says what to do."""


class CellNotReady(StateError):
    """A cell's run is missing, unfinished or damaged; the message names the DVC command that mends it."""


@dataclass(frozen=True)
class Model:
    """One registered model as the grid uses it."""

    kind: str  # "vqgan" or "perceptor"
    name: str  # canonical registry name
    slug: str
    untrained: bool


@dataclass(frozen=True)
class Cell:
    """One VQGAN × one perceptor set (one or more perceptors guiding one run together) × one seed."""

    experiment: str
    vqgan: Model
    set_key: str  # the perceptor set's key in grid.perceptors: its slugs joined by '_'
    perceptors: tuple[Model, ...]
    seed: int
    replicate: bool = False  # False: settings.seed's cell; True: a seed of grid.seeds
    varied: tuple[tuple[str, str], ...] = ()  # (setting, level slug) of each setting of grid.vary

    @property
    def name(self) -> str:
        """The run folder and file namespace (engine.runfolder's cell name): the varied settings'
        `key-level` pairs where there are some, `__seed-<n>` for a replicate."""
        return cell_name(self.experiment, self.vqgan.slug, [p.slug for p in self.perceptors],
                         self.seed if self.replicate else None, self.varied)

    @property
    def stage(self) -> str:
        """The DVC stage that makes this cell (DVC joins matrix values with '-', in dvc.yaml's order:
        VQGAN, perceptor set, each varied setting's level, seed)."""
        parts = [self.vqgan.slug, self.set_key, *(level for _, level in self.varied)]
        return f"replicate@{'-'.join([*parts, str(self.seed)])}" if self.replicate else f"cell@{'-'.join(parts)}"

    @property
    def perceptor_set(self) -> str:
        """The perceptor set as text: its perceptors' slugs joined by '+'."""
        return PERCEPTOR_SET_SEP.join(p.slug for p in self.perceptors)

    @property
    def untrained(self) -> bool:
        return self.vqgan.untrained or any(p.untrained for p in self.perceptors)


@dataclass(frozen=True)
class Grid:
    """A validated grid."""

    experiment: str
    out_dir: str
    settings: dict[str, Any]
    vqgans: dict[str, Model]  # slug → model
    perceptor_sets: dict[str, tuple[Model, ...]]  # key (slugs joined by '_') → models
    seeds: tuple[int, ...]  # settings.seed, then grid.seeds
    cells: tuple[Cell, ...]  # by VQGAN, perceptor set, varied levels, seed
    vary: dict[str, dict[str, Any]] = field(default_factory=dict)  # grid.vary: setting → {level slug: value}

    @property
    def models(self) -> list[Model]:
        """Every distinct model of the grid: VQGANs, then perceptors in order of appearance."""
        return list(self.vqgans.values()) + self.judges

    @property
    def judges(self) -> list[Model]:
        """Every distinct perceptor of the grid, in order of appearance: the bias matrix columns."""
        seen: dict[str, Model] = {}
        for models in self.perceptor_sets.values():
            for model in models:
                seen.setdefault(model.name, model)
        return list(seen.values())

    @property
    def untrained(self) -> bool:
        return any(m.untrained for m in self.models)

    def cell(self, vqgan: str, set_key: str, seed: int | None = None, varied: Mapping[str, str] | None = None) -> Cell:
        """The cell of a VQGAN slug, a perceptor set's key, a seed (default: settings.seed) and a level
        slug of each varied setting."""
        seed = self.seeds[0] if seed is None else seed
        levels = tuple((setting, (varied or {}).get(setting)) for setting in self.vary)
        for cell in self.cells:
            if cell.vqgan.slug == vqgan and cell.set_key == set_key and cell.seed == seed and cell.varied == levels:
                return cell
        varies = "".join(f"; {setting}: {', '.join(slugs)}" for setting, slugs in self.vary.items())
        raise GridError(f"no cell {vqgan!r} × {set_key!r} × seed {seed}{_levels(dict(levels))} in the grid; VQGANs: "
                        f"{', '.join(self.vqgans)}; perceptor sets: {', '.join(self.perceptor_sets)}{varies}; "
                        f"seeds: {', '.join(map(str, self.seeds))}")

    def cell_dir(self, cell: Cell) -> Path:
        return Path(self.out_dir) / cell.name

    def metrics_file(self, cell: Cell) -> Path:
        return METRICS_DIR / f"{cell.name}.json"

    def engine_settings(self, cell: Cell, out_dir: str | Path | None = None) -> dict[str, Any]:
        """The engine settings of one cell (validate with `engine.settings.resolve_settings`)."""
        return {**self.settings, **{setting: self.vary[setting][level] for setting, level in cell.varied},
                "vqgan_model": cell.vqgan.name, "perceptors": [p.name for p in cell.perceptors],
                "file_namespace": cell.name, "seed": cell.seed,
                "out_dir": str(out_dir if out_dir is not None else self.out_dir)}


def _levels(levels: Mapping[str, str | None]) -> str:
    return "".join(f" × {setting}={level}" for setting, level in levels.items())
