"""Stage `effects` (`python -m experiments.effects --grid params.yaml`): the effects of the grid's
cells from the other scoring stages' files alone, written to experiments/scores/effects.json. It
reads no frame and loads no model: changing the analysis re-runs only this stage."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from experiments.effects.analysis import EffectsError, analyse
from experiments.effects.anova import PAIR
from experiments.effects.runs import with_similarities
from experiments.imagestats import STATS
from experiments.scorefiles import (
    BIAS_MATRIX,
    EFFECTS,
    IMAGE_STATS,
    read_csv,
    write_json,
)

if TYPE_CHECKING:
    from experiments.grid import Grid


def grid_effects(grid: Grid, scores: Path) -> dict[str, Any]:
    """The effects of the grid's cells from their score files: each cell's final frame's statistics
    (image_stats.csv) and each judge's similarity (bias_matrix.csv, where the judge stage wrote it)."""
    stats = read_csv(scores, IMAGE_STATS)
    if stats is None:
        raise EffectsError(f"{scores / IMAGE_STATS}: missing or unreadable; run `dvc repro imagestats` first")
    final = stats.sort_values(["cell", "frame"]).groupby("cell", sort=False).tail(1).set_index("cell")
    factors = [*PAIR, *grid.vary]
    known = [c for c in grid.cells if c.name in final.index]
    table = pd.DataFrame([{"run": c.name, "cell": c.name, "vqgan": c.vqgan.slug, "perceptor_set": c.perceptor_set,
                           **dict(c.varied), "seed": c.seed, **final.loc[c.name, list(STATS)].to_dict()}
                          for c in known], columns=["run", "cell", *factors, "seed", *STATS])
    left = [{"run": c.name, "reason": f"not in {IMAGE_STATS}"} for c in grid.cells if c.name not in final.index]
    return analyse(with_similarities(table, read_csv(scores, BIAS_MATRIX)), grid.experiment, left_out=left,
                   factors=factors)


def write_grid_effects(params: Path) -> None:
    """The stage `effects`: the grid's effects.json beside its other score files."""
    from experiments.grid import SCORES_DIR, load_grid

    grid = load_grid(params)
    effects = grid_effects(grid, SCORES_DIR)
    write_json(SCORES_DIR / EFFECTS, effects)
    print(f"effects: {effects['runs']} runs, {len(effects['measures'])} measures -> {SCORES_DIR / EFFECTS}")
