"""Read the grid's score-stage outputs: the bias matrix and per-frame image statistics."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import pandas as pd

log = logging.getLogger(__name__)
BIAS_COLUMNS = ["vqgan", "generator", "judge", "similarity"]
STATS_COLUMNS = ["cell", "vqgan", "generator", "frame", "step", "colourfulness", "saturation",
                 "contrast", "edge_density", "palette"]
STATS = ["colourfulness", "saturation", "contrast", "edge_density"]


class Scores(NamedTuple):
    bias: pd.DataFrame | None
    stats: pd.DataFrame | None


def scores_dir(root: str | Path, scores: str | Path | None = None) -> Path | None:
    """`scores` if given, else `<root>/../scores` where that folder exists."""
    if scores:
        return Path(scores)
    default = Path(root).resolve().parent / "scores"
    return default if default.is_dir() else None


def _read(path: Path, columns: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        log.warning("ignoring %s: %s", path, e)
        return None
    if missing := set(columns) - set(df.columns):
        log.warning("ignoring %s: no column %s", path, ", ".join(sorted(missing)))
        return None
    return df


def load_scores(folder: Path | None) -> Scores:
    """The score files in `folder`; each is None where absent or unreadable."""
    if folder is None:
        return Scores(None, None)
    return Scores(_read(folder / "bias_matrix.csv", BIAS_COLUMNS),
                  _read(folder / "image_stats.csv", STATS_COLUMNS))
