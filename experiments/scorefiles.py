"""The score files, as `engine.runfolder` is the run folder: their names, columns, writers and readers.

The grid's scoring stages write them into one folder (`experiments/scores/`, docs/grid.md); the
effects analysis and the dashboard read them through here. Torch- and scipy-free (pandas), so a
viewer-only install reads them.

| file | stage | content |
|---|---|---|
| `bias_matrix.csv` | judge | `cell,vqgan,perceptor_set,seed,judge,similarity,z`: a row per cell and judge |
| `bias.json` | judge | {vqgan: {perceptor set: {judge: similarity, mean over seeds}}} |
| `self_preference.json` | judge | {"judges": {judge: {mean, low, high, seeds}}, "vqgans": {...}} |
| `image_stats.csv` | imagestats | `cell,vqgan,perceptor_set,seed,frame,step,<statistic>...,palette`: a row per frame |
| `image_stats.json` | imagestats | {vqgan: {perceptor set: {statistic: mean over frames and seeds}}} |
| `cmmd.json` | judge | `{"cmmd": {judge: {factor: {A: {B: CMMD}}}}, "vendi": {judge: {cell: score}}}` |
| `effects.json` | effects | each measure's shares of variance (experiments/effects/) |

The `summary` stage turns the JSON ones into the grid's DVC metrics (experiments/summary.py).
Until the next release the CSVs also carry a perceptor set's old column name, `generator`, with the
same values, and readers take files that have only the old name.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from engine.fsutil import atomic_write

log = logging.getLogger(__name__)

BIAS_MATRIX = "bias_matrix.csv"
BIAS = "bias.json"
SELF_PREFERENCE = "self_preference.json"
IMAGE_STATS = "image_stats.csv"
IMAGE_STATS_SUMMARY = "image_stats.json"
EFFECTS = "effects.json"
CMMD = "cmmd.json"

OLD_NAMES = {"generator": "perceptor_set"}  # column → its new name; written beside it for one release
RUN_COLUMNS = ["cell", "vqgan", "perceptor_set", "seed"]  # which run a row is about
BIAS_COLUMNS = [*RUN_COLUMNS, "judge", "similarity", "z"]
FRAME_COLUMNS = [*RUN_COLUMNS, "frame", "step"]  # image_stats.csv: then one column per statistic, then palette
TEXT = {"cell", "vqgan", "perceptor_set", "judge", "palette"}  # every other column is a number (text: missing)
REQUIRED = {BIAS_MATRIX: ["vqgan", "perceptor_set", "judge", "similarity"],
            IMAGE_STATS: ["vqgan", "perceptor_set", "frame", "step"]}  # what older files have too


def scores_dir(root: str | Path, scores: str | Path | None = None) -> Path | None:
    """`scores` if given, else `<root>/../scores` (the grid's layout) where that folder exists."""
    if scores:
        return Path(scores)
    default = Path(root).resolve().parent / "scores"
    return default if default.is_dir() else None


# ---------------------------------------------------------------- writing

def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_csv(path: Path, table: pd.DataFrame, columns: Sequence[str]) -> Path:
    """`table`'s `columns` as CSV (NaN empty, floats to 6 significant digits), with the old name of a
    renamed column beside it (`OLD_NAMES`), atomically."""
    old = [name for name, new in OLD_NAMES.items() if new in columns]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*columns, *old])
    rows = table[list(columns)].itertuples(index=False)
    writer.writerows([[_cell(v) for v in row] + [_cell(getattr(row, OLD_NAMES[o])) for o in old] for row in rows])
    return atomic_write(path, text.getvalue())


def rounded(value: float) -> float | None:
    """A JSON number: NaN as null, 6 decimals."""
    return None if value is None or math.isnan(value) else round(float(value), 6)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """`data` as indented, strict JSON (no NaN), atomically."""
    return atomic_write(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------- reading

def read_csv(folder: Path | None, name: str) -> pd.DataFrame | None:
    """Score file `name` in `folder` with its numeric columns as numbers and old column names
    renamed; rows without a number where the file's columns need one are dropped (and logged);
    None where the file is missing, unreadable or lacks columns."""
    path = folder / name if folder else None
    if path is None or not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        log.warning("ignoring %s: %s", path, e)
        return None
    df = df.rename(columns={o: n for o, n in OLD_NAMES.items() if n not in df.columns}).drop(
        columns=[o for o in OLD_NAMES if o in df.columns], errors="ignore")
    if missing := set(REQUIRED[name]) - set(df.columns):
        log.warning("ignoring %s: no column %s", path, ", ".join(sorted(missing)))
        return None
    numeric = [c for c in df.columns if c not in TEXT]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    needed = [c for c in numeric if c in REQUIRED[name]]
    bad = df[needed].isna().any(axis=1)
    if bad.any():
        log.warning("%s: ignoring %d row(s) without a number in %s", path, int(bad.sum()), ", ".join(needed))
    return df[~bad].reset_index(drop=True)


def read_json(folder: Path | None, name: str) -> dict[str, Any] | None:
    """Score file `name` (a JSON object) in `folder`; None where it is missing or unreadable."""
    path = folder / name if folder else None
    if path is None or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("ignoring %s: %s", path, e)
        return None
    return doc if isinstance(doc, dict) else None
