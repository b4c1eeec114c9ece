"""The analysis of variance behind `experiments.effects`, for any number of factors: each factor's
main-effect share, the VQGAN × perceptor set interaction, every other interaction together, and the
residual (seed-to-seed noise), as shares of the variance of one run. Pure numpy.

- Sums of squares are of type II, from weighted least-squares fits: a factor's main effect is
  RSS(every main effect but it) − RSS(every main effect), so the factors are treated alike and
  swapping two factors' labels swaps their shares exactly; the VQGAN × perceptor set interaction is
  RSS(main effects) − RSS(main effects + that interaction); the other interactions together are
  what the cells' means explain beyond that; the residual is the runs' spread about their cells'
  means. Missing cells and unequal seeds per cell (unbalanced grids) are fitted as they are;
  degrees of freedom are the ranks the fits gain.
- Each share is a variance: the effect's sum of squares less what noise alone adds to it (its
  degrees of freedom × the noise's mean square), over the number of runs, clipped at 0; the
  residual is the noise's mean square. Unlike shares of the sums of squares, these do not drift
  with the number of seeds (benchmarks/effects_intervals.py).
- With one run per cell there is no noise estimate of its own: the interactions cannot be told
  from noise, their pooled mean square is the residual, and their shares are null.
- 95 % intervals: a percentile bootstrap over seeds (a seed is drawn with all its runs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

PAIR = ("vqgan", "perceptor_set")  # the factors whose interaction is reported on its own
INTERACTION = "interaction"  # VQGAN × perceptor set
OTHER = "other_interactions"  # every other interaction, together
RESIDUAL = "residual"
RESAMPLES = 1000
CONFIDENCE = 0.95
RNG_SEED = 0  # the bootstrap's draws, fixed so that a result repeats


def share_names(factors: Sequence[str]) -> list[str]:
    """The shares of an analysis of `factors` (the first two are VQGAN and perceptor set), in order."""
    return [*factors, INTERACTION, *([OTHER] if len(factors) > len(PAIR) else []), RESIDUAL]


@dataclass
class Design:
    """The runs of one measure, coded: each factor's level per run, the cells, the bootstrap units."""

    y: np.ndarray
    factors: list[str]
    codes: list[np.ndarray]  # per factor: the level code of each run
    levels: list[list[str]]  # per factor: its levels
    unit: np.ndarray  # bootstrap unit (seed) per run
    cell: np.ndarray = field(init=False)
    replicated: bool = field(init=False)

    def __post_init__(self) -> None:
        _, self.cell = np.unique(np.stack(self.codes, axis=1), axis=0, return_inverse=True)
        self.cell = self.cell.ravel()
        self.replicated = len(self.y) > len(np.unique(self.cell))


def _dummies(codes: np.ndarray, n: int) -> np.ndarray:
    """Indicator columns of levels 1..n-1 (level 0 is the intercept's)."""
    return (codes[:, None] == np.arange(1, n)[None, :]).astype(float)


def fits(d: Design) -> list[np.ndarray]:
    """The design matrices: every main effect but one (per factor), every main effect, and every main
    effect with the VQGAN × perceptor set interaction."""
    ones = np.ones((len(d.y), 1))
    mains = [_dummies(c, len(levels)) for c, levels in zip(d.codes, d.levels)]
    pair = d.codes[0] * len(d.levels[1]) + d.codes[1]
    pair_columns = (pair[:, None] == np.unique(pair)[None, :]).astype(float)
    without = [np.hstack([ones, *(m for j, m in enumerate(mains) if j != i)]) for i in range(len(mains))]
    every = np.hstack([ones, *mains])
    return [*without, every, np.hstack([every, pair_columns])]


def weighted_rss(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Residual sum of squares of the weighted least-squares fit of y on x, for each row of
    weights `w` (R, N) at once (pseudo-inverse: a resample may leave a level out)."""
    xtw = x.T[None, :, :] * w[:, None, :]
    beta = np.linalg.pinv(xtw @ x, hermitian=True) @ (xtw @ y)[..., None]
    residual = y[None, :] - (x @ beta)[..., 0]
    return (w * residual ** 2).sum(axis=1)


def cell_rss(d: Design, w: np.ndarray) -> np.ndarray:
    """Weighted sum of squares of the runs about their cells' means, per row of `w`."""
    onehot = (d.cell[:, None] == np.unique(d.cell)[None, :]).astype(float)
    count, total = w @ onehot, (w * d.y) @ onehot
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0) @ onehot.T
    return (w * (d.y[None, :] - mean) ** 2).sum(axis=1)


def sums_of_squares(d: Design, w: np.ndarray) -> np.ndarray:
    """(R, shares): each factor's, the VQGAN × perceptor set interaction's, the other interactions'
    (where there are more than two factors) and the residual sum of squares, per row of weights."""
    rss = [weighted_rss(x, d.y, w) for x in fits(d)]
    *without, every, pair = rss
    cells = cell_rss(d, w)
    columns = [r - every for r in without] + [every - pair]
    columns += [pair - cells] if len(d.factors) > len(PAIR) else []
    return np.clip(np.stack([*columns, cells], axis=1), 0.0, None)


def degrees_of_freedom(d: Design) -> np.ndarray:
    """Of each share: the rank its fit gains (the residual: runs − cells)."""
    ranks = [np.linalg.matrix_rank(x) for x in fits(d)]
    *without, every, pair = ranks
    cells = len(np.unique(d.cell))
    df = [every - r for r in without] + [pair - every]
    df += [cells - pair] if len(d.factors) > len(PAIR) else []
    return np.array([*df, len(d.y) - cells], dtype=float)


def variance_shares(ss: np.ndarray, d: Design, runs: np.ndarray) -> np.ndarray:
    """(R, shares) shares of the variance of one run: each effect's variance, its sum of squares less
    what noise alone adds (df × the noise's mean square) over the number of runs, clipped at 0; the
    residual is the noise's mean square. Without replicates the interactions' pooled mean square is
    the noise (their shares NaN). Rows sum to 1 (NaN where every share is 0)."""
    df = degrees_of_freedom(d)
    mains, interactions = len(d.factors), slice(len(d.factors), ss.shape[1] - 1)
    if d.replicated:
        noise = ss[:, -1] / df[-1] if df[-1] > 0 else np.zeros(len(ss))
    else:
        pooled = df[interactions].sum()
        noise = ss[:, interactions].sum(axis=1) / pooled if pooled > 0 else np.zeros(len(ss))
    parts = np.clip((ss[:, :-1] - df[:-1] * noise[:, None]) / runs[:, None], 0.0, None)
    if not d.replicated:
        parts[:, mains:] = np.nan
    out = np.column_stack([parts, noise])
    total = np.nansum(out, axis=1, keepdims=True)
    return np.divide(out, total, out=np.full_like(out, np.nan), where=total > 0)


def bootstrap_weights(unit: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R, N) weights: each run's count when the units (seeds) are drawn with replacement."""
    n_units = int(unit.max()) + 1
    draws = rng.integers(0, n_units, size=(resamples, n_units))
    counts = np.stack([np.bincount(row, minlength=n_units) for row in draws])
    return counts[:, unit].astype(float)


def rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def decompose(d: Design, resamples: int = RESAMPLES, seed: int = RNG_SEED) -> dict[str, Any]:
    """One measure's shares, with 95 % bootstrap intervals where some cell has replicates."""
    names = share_names(d.factors)
    ones = np.ones((1, len(d.y)))
    point = variance_shares(sums_of_squares(d, ones), d, ones.sum(axis=1))[0]
    result: dict[str, Any] = {k: rounded(v) for k, v in zip(names, point)}
    result["low"] = result["high"] = None
    units = int(d.unit.max()) + 1
    if d.replicated and units > 1 and resamples > 0:
        weights = bootstrap_weights(d.unit, resamples, np.random.default_rng(seed))
        boot = variance_shares(sums_of_squares(d, weights), d, weights.sum(axis=1))
        boot = boot[~np.isnan(boot[:, 0])]
        tail = 100 * (1 - CONFIDENCE) / 2
        low, high = np.percentile(boot, [tail, 100 - tail], axis=0)
        result["low"] = {k: rounded(v) for k, v in zip(names, low)}
        result["high"] = {k: rounded(v) for k, v in zip(names, high)}
    return result
