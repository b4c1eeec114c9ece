"""How far apart two sets of images are, and how varied one set is, in a judge's embedding space.

- `cmmd`: CMMD (Jayasumana et al., "Rethinking FID", arXiv 2401.09603), the maximum mean
  discrepancy with a Gaussian RBF kernel of bandwidth σ = 10 between two sets of CLIP image
  embeddings, scaled by 1000 as the paper reports it. Here the unbiased estimator (the U-statistic:
  each set's own pairs without the diagonal), so a set against itself reads about 0 and the value
  can dip below 0 by chance; it needs two images per set. It assumes no Gaussian features and holds
  on small samples, where FID (thousands of images) does not.
- `vendi`: the Vendi score (Friedman & Dieng, arXiv 2210.02410), the exponential of the Shannon
  entropy of the eigenvalues of K/n, K the cosine-similarity matrix of the set: the effective
  number of distinct images, 1 for identical ones, n for n orthogonal ones. Computed here with
  numpy (the authors' `vendi_score` package is unmaintained and breaks on current scipy).

Pure numpy; the judge stage (experiments/judge.py) feeds them each judge's final-frame embeddings.
"""
from __future__ import annotations

import numpy as np

SIGMA = 10.0  # the RBF bandwidth CMMD uses
SCALE = 1000.0  # CMMD's reporting scale


def _kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    squared = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.exp(-np.maximum(squared, 0) / (2 * SIGMA ** 2))


def cmmd(x: np.ndarray, y: np.ndarray) -> float | None:
    """Unbiased CMMD × 1000 between embedding sets x (n, d) and y (m, d); None below two of each."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return None
    kxx, kyy, kxy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(SCALE * (within_x + within_y - 2 * kxy.mean()))


def vendi(x: np.ndarray) -> float | None:
    """The Vendi score of embeddings x (n, d) (normalised here): exp(entropy of eig(K / n)); None below two."""
    if len(x) < 2:
        return None
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    eigenvalues = np.linalg.eigvalsh(unit @ unit.T / len(x))
    p = eigenvalues[eigenvalues > 1e-12]
    return float(np.exp(-(p * np.log(p)).sum()))
