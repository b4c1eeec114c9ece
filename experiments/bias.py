"""Self-preference: does a judge perceptor score the images its own perceptor guided higher
than the images the other perceptors guided? Pure functions on the score stage's bias table
(`vqgan, perceptor_set, judge, similarity` and, with replicates, `seed`).

- Each judge's similarities are on its own scale (CLIP models differ in how high cosine
  similarities run), so they are z-scored within the judge, per seed: minus the mean, over the
  standard deviation, of every cell that judge scored under that seed.
- The diagonal is the cell guided by the judge alone (perceptor set = judge). Cells guided by a
  pair that includes the judge are neither its own nor the others'.
- A judge's self-preference at a VQGAN is its z for its own cell minus its mean z for the cells
  guided by perceptors that do not include it: how much more it likes its own perceptor's
  images than the others', in its own spread. Per judge it is averaged over the VQGANs, per
  VQGAN over the judges.
- Each seed gives one value; the figure is their mean with a 95 % t-interval (none with one seed).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
PREFERENCE_COLUMNS = ["seed", "vqgan", "judge", "own", "others", "preference", "raw"]
SUMMARY_COLUMNS = ["mean", "low", "high", "seeds"]


def with_seed(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with a `seed` column: one seed, 0, where the table has none (older score files)."""
    return table if "seed" in table.columns else table.assign(seed=0)


def standardise(table: pd.DataFrame, conditions: Sequence[str] = ()) -> pd.DataFrame:
    """`table` with `z` (similarity z-scored within each judge, seed and level of the `conditions`,
    the settings the grid varies: a prompt is compared with itself; NaN where a judge gave every cell
    the same value), `diagonal` (the perceptor set is the judge alone) and `involved` (the judge is
    one of the perceptor set's perceptors)."""
    df = with_seed(table).copy()
    groups = df.groupby(["judge", "seed", *conditions], dropna=False)["similarity"]
    spread = groups.transform("std", ddof=0)
    df["z"] = (df["similarity"] - groups.transform("mean")) / spread.where(spread > 0)
    df["diagonal"] = df["perceptor_set"] == df["judge"]
    df["involved"] = [j in str(g).split("+") for g, j in zip(df["perceptor_set"], df["judge"])]
    return df


def self_preference(table: pd.DataFrame, conditions: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (seed, VQGAN, level of the `conditions`, judge) that has its own cell and at
    least one other: `own` (z of its own cell), `others` (mean z of the cells not involving it),
    `preference` (own - others, in the judge's spread) and `raw` (the same difference in raw
    similarity). A summary averages over the VQGANs and levels within each seed."""
    df = standardise(table, conditions)
    rows = []
    for (seed, vqgan, *_, judge), cells in df.groupby(["seed", "vqgan", *conditions, "judge"], dropna=False,
                                                      sort=True):
        own, others = cells[cells["diagonal"]], cells[~cells["involved"]]
        if own.empty or others.empty:
            continue
        rows.append([seed, vqgan, judge, own["z"].mean(), others["z"].mean(),
                     own["z"].mean() - others["z"].mean(),
                     own["similarity"].mean() - others["similarity"].mean()])
    return pd.DataFrame(rows, columns=PREFERENCE_COLUMNS)


def interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean of per-seed values with its t-interval (`low`, `high`: NaN with fewer than two
    seeds) and the number of seeds."""
    from scipy import stats

    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "seeds": 0}
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "seeds": 1}
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": len(x)}


def summary(preferences: pd.DataFrame, by: str | list[str], value: str = "preference") -> pd.DataFrame:
    """Self-preference per `by` (`judge`, `vqgan` or both): within each seed the mean over the
    rest, then over the seeds the mean and 95 % interval. Columns: `by`, `SUMMARY_COLUMNS`."""
    keys = [by] if isinstance(by, str) else list(by)
    per_seed = preferences.groupby([*keys, "seed"], dropna=False)[value].mean()
    rows = [{**dict(zip(keys, key if isinstance(key, tuple) else (key,))), **interval(seeds.to_numpy())}
            for key, seeds in per_seed.groupby(level=list(range(len(keys))), sort=True)]
    return pd.DataFrame(rows, columns=[*keys, *SUMMARY_COLUMNS])
