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
NUMERIC = ["similarity", "seed", "z", "frame", "step", *STATS]  # text there reads as missing


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
    """The CSV with its numeric columns as numbers; rows without a number where `columns` need
    one are dropped (and logged); None where the file is missing, unreadable or lacks columns."""
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
    numeric = [c for c in NUMERIC if c in df.columns]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    needed = [c for c in numeric if c in columns]
    bad = df[needed].isna().any(axis=1)
    if bad.any():
        log.warning("%s: ignoring %d row(s) without a number in %s", path, int(bad.sum()),
                    ", ".join(needed))
    return df[~bad]


def load_scores(folder: Path | None) -> Scores:
    """The score files in `folder`; each is None where absent or unreadable."""
    if folder is None:
        return Scores(None, None)
    return Scores(_read(folder / "bias_matrix.csv", BIAS_COLUMNS),
                  _read(folder / "image_stats.csv", STATS_COLUMNS))
