"""How wide are the 95 % intervals of experiments/effects.py's shares, by the number of seeds?

    python benchmarks/effects_intervals.py [--repeats 20] [--seeds 2 3 5 8 12]

Simulates the study's grid (5 VQGANs × 8 perceptor entries) with a measure made of a VQGAN
effect, a perceptor effect, an interaction and seed noise (standard deviations `SD`; a seed
also shifts every cell alike, as a shared starting point would), runs the analysis with its
bootstrap over seeds, and prints per number of seeds the median share, the median width of its
interval and how often the interval holds the share the same grid shows at 400 seeds, over
`--repeats` simulated grids. No images: the measure is drawn directly.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.effects import SHARES, decompose, design

VQGANS, ENTRIES = 5, 8
TARGET_SEEDS = 400
SD = {"vqgan": 1.0, "perceptor_set": 0.6, "interaction": 0.4, "seed": 0.2, "noise": 0.5}


def effects(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One grid's fixed effects: per VQGAN, per perceptor entry, per cell (interaction)."""
    return (rng.normal(0, SD["vqgan"], VQGANS), rng.normal(0, SD["perceptor_set"], ENTRIES),
            rng.normal(0, SD["interaction"], (VQGANS, ENTRIES)))


def simulate(fixed: tuple[np.ndarray, np.ndarray, np.ndarray], seeds: int, rng: np.random.Generator) -> pd.DataFrame:
    """The grid's measure table at `seeds` seeds: its effects plus seed shift and noise."""
    a, b, ab = fixed
    shift = rng.normal(0, SD["seed"], seeds)
    y = a[:, None, None] + b[None, :, None] + ab[:, :, None] + shift + rng.normal(0, SD["noise"], (*ab.shape, seeds))
    i, j, s = np.meshgrid(range(VQGANS), range(ENTRIES), range(seeds), indexing="ij")
    return pd.DataFrame({"run": np.arange(y.size), "vqgan": [f"v{k}" for k in i.ravel()],
                         "perceptor_set": [f"p{k}" for k in j.ravel()], "seed": s.ravel(), "m": y.ravel()})


def row(seeds: int, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    """Over `repeats` grids: the median share, the median width of its interval, and how often
    the interval holds the grid's share at `TARGET_SEEDS` seeds (its value without seed noise)."""
    out: dict[str, float] = {"seeds": seeds}
    found = []
    for _ in range(repeats):
        fixed = effects(rng)
        target = decompose(design(simulate(fixed, TARGET_SEEDS, rng), "m"), resamples=0)
        found.append((decompose(design(simulate(fixed, seeds, rng), "m")), target))
    for k in SHARES:
        out[k] = float(np.median([r[k] for r, _ in found]))
        out[f"{k} width"] = float(np.median([r["high"][k] - r["low"][k] for r, _ in found]))
        out[f"{k} covered"] = float(np.mean([r["low"][k] <= t[k] <= r["high"][k] for r, t in found]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5, 8, 12])
    args = parser.parse_args()
    rng = np.random.default_rng(2024)
    start = time.perf_counter()
    table = pd.DataFrame([row(s, args.repeats, rng) for s in args.seeds])
    print(f"{VQGANS} VQGANs × {ENTRIES} perceptor entries; sd {SD}; {args.repeats} grids per row: median "
          f"share, median 95 % interval width (bootstrap over seeds), share of intervals holding the "
          f"{TARGET_SEEDS}-seed value")
    for k in SHARES:
        cols = {"seeds": "seeds", k: "share", f"{k} width": "width", f"{k} covered": "covered"}
        print(f"\n{k}\n" + table[list(cols)].rename(columns=cols).to_string(
            index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
