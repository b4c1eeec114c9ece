"""Read a folder of VQGAN+CLIP runs (ours or pytti's) into a catalog: a DataFrame, a row a run.

The folders are found by `engine.runfolder.walk` (bounded, never following a link to a folder);
each run is read through `read_run` into a row (dashboard/rows.py); `Index` (dashboard/index.py)
re-reads only the folders that changed; loss tables are read only for the runs asked for
(dashboard/losstables.py). A folder that cannot be read is a row whose reason says why.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from engine.runfolder.walk import run_folders

from .grid import levels_text, natural_key, varied_settings
from .index import Index
from .rows import COLUMNS, OLD_COLUMNS

LAZY = ["losses"]  # filled by `losstables.losses` for the runs asked for
SUMMARY = ["run", "experiment", "vqgan", "perceptor_set", "seed", "size", "n_frames", "final_loss",
           "source", "untrained", "status", "reason"]


def load_catalog(root: str | Path, skip: Iterable[Path] = (), index: Index | None = None,
                 quick: bool = False) -> pd.DataFrame:
    """The catalog of every run under `root` (or of `root`, itself a run folder): one row per
    run, columns `COLUMNS`, loss tables not read (`losstables.losses`). Frames of finished runs
    are verified; pass one `index` to re-read only what changed (`quick`: only the folders whose
    own modification time changed, as a served page polls). FileNotFoundError where `root` is
    not a folder."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    index = index or Index()
    rows = index.rows(root, run_folders(root, skip, known=index.unchanged if quick else None))
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"seed": "Int64", "width": "Int64", "height": "Int64"})


def select(df: pd.DataFrame, vqgans: Iterable[str] | None = None,
           perceptors: Iterable[str] | None = None,
           experiments: Iterable[str] | None = None,
           levels: Mapping[str, Iterable[str]] | None = None) -> pd.DataFrame:
    """The runs with frames whose VQGAN, experiment and every perceptor are among those given
    (None = no filter), and whose level of each varied setting of `levels` is among its levels
    (a run that did not vary the setting is kept). `ViT-B32` alone never brings in a
    `ViT-B32+RN50` run."""
    keep = df["n_frames"] > 0
    if vqgans is not None:
        keep &= df["vqgan"].isin(list(vqgans))
    if experiments is not None:
        keep &= df["experiment"].isin(list(experiments))
    if perceptors is not None:
        allowed = set(perceptors)
        keep &= df["perceptors"].map(lambda ps: set(ps) <= allowed)
    for setting, ticked in (levels or {}).items():
        keep &= df["factors"].map(lambda f, s=setting, kept=set(ticked): s not in f or f[s] in kept)
    return df[keep]


def run_size(run: Any) -> tuple[int, int] | None:
    """(width, height) of a catalog row's frames, where its settings say."""
    known = not (pd.isna(run.width) or pd.isna(run.height))
    return (int(run.width), int(run.height)) if known else None


def levels_of(df: pd.DataFrame, setting: str) -> list[str]:
    """The levels of a varied setting among the runs, sorted."""
    return sorted({f[setting] for f in df["factors"] if setting in f}, key=natural_key)


def perceptor_names(df: pd.DataFrame) -> list[str]:
    """Every perceptor slug in the catalog, in order of first appearance."""
    return list(dict.fromkeys(p for ps in df["perceptors"] for p in ps))


def to_table(df: pd.DataFrame) -> str:
    """A readable table of the catalog (with a `varied` column where runs varied settings)."""
    if df.empty:
        return "no runs found"
    table = df[SUMMARY].round({"final_loss": 4}).astype(object)
    if varied_settings(df):
        table.insert(SUMMARY.index("seed") + 1, "varied", [levels_text(f) or None for f in df["factors"]])
    return table.where(table.notna(), "-").to_string(index=False, max_colwidth=60)


def finite(value: Any) -> Any:
    """`value` with every number that is not finite (NaN, ±inf), in dicts and lists too, as None:
    what strict JSON can hold (a metrics.json or sidecar may hold NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def to_json(df: pd.DataFrame, with_losses: bool = False) -> str:
    """The catalog as a strict JSON list of runs (NaN and ±inf as null), renamed fields also
    under their old names (`OLD_COLUMNS`); loss tables (`LAZY`) only `with_losses` (read them
    first with `losstables.losses`)."""
    df = df if with_losses else df.drop(columns=LAZY)
    df = df.assign(**{old: df[new] for old, new in OLD_COLUMNS.items()})
    records = finite(df.astype(object).where(df.notna(), None).to_dict("records"))
    return json.dumps(records, indent=2, default=str, allow_nan=False)
