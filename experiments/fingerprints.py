"""Fingerprints: what each VQGAN, perceptor set and varied setting does to the picture, per level.

    python -m experiments.fingerprints --root DIR [--experiment NAME] [--json] [--frames final|all] [--scores DIR]

For every level of every factor of one experiment's complete runs (experiments.effects.runs; the
final frame of each run, or `--frames all`):

- `palette`: the level's dominant colours, k-means (scipy) on its pixels in CIELAB
  (experiments.imagestats.lab), as `#rrggbb` with their weights, most weight first;
- `spectrum`: the mean log10 radially averaged power spectrum of luma on the fixed frequency grid
  (`frequencies`, cycles per pixel), and `spectral_slope`, its slope over the mid band;
- `grid_artifact`: the mean of the frames' boundary / interior luma-step ratio at each run's VQGAN
  factor (1: no code grid shows);
- `seconds_per_step` and `wall_time_s`: the mean over the level's runs, from their metrics.

Between every two levels of a factor, `distances`: `palette`, the earth mover's distance between
the two palettes in CIELAB (ΔE*ab as ground distance; scipy's linear programming solves the
transport), and `spectrum`, the root-mean-square difference of the two log10 spectra; and, where
the judge stage wrote `cmmd.json` (`--scores`, default `<root>/../scores`), `cmmd`: per judge,
the CMMD between the two levels' final frames (experiments/judge.py). Torch-free: numpy, scipy,
pandas and Pillow.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine.cli import Parser, error_boundary
from engine.fsutil import BadFile
from experiments import imagestats
from experiments.effects import (
    FRAMES,
    EffectsError,
    factors_of,
    find_runs,
    label,
    pick_experiment,
    usable,
)
from experiments.effects.runs import RunInfo, read_pixels
from experiments.scorefiles import CMMD, read_json, scores_dir

PALETTE_SIZE = 5
SAME = 10.0  # ΔE*ab under which two dominant colours are one colour of the palette
SAMPLE = 20_000  # pixels a level's palette is clustered from, at most
RNG_SEED = 0


# ---------------------------------------------------------------- colours

def lab_to_hex(colour: Sequence[float]) -> str:
    """`#rrggbb` of a CIELAB colour (clipped to sRGB), through LittleCMS as `imagestats.lab` converts."""
    from PIL import Image, ImageCms

    l, a, b = colour
    pixel = np.array([[[round(min(max(l, 0), 100) * 255 / 100), round(min(max(a, -128), 127)),
                        round(min(max(b, -128), 127))]]], dtype=np.int16).astype(np.int8).view(np.uint8)
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    r, g, bl = np.asarray(ImageCms.applyTransform(Image.fromarray(pixel, "LAB"), transform))[0, 0]
    return f"#{r:02x}{g:02x}{bl:02x}"


def palette(pixels: Sequence[np.ndarray], size: int = PALETTE_SIZE) -> list[dict[str, Any]]:
    """The dominant colours of these frames: k-means in CIELAB of up to `SAMPLE` of their pixels,
    `[{"colour": "#rrggbb", "lab": [L, a, b], "weight": w}, ...]`, most weight first."""
    from scipy.cluster.vq import kmeans2

    lab = np.concatenate([imagestats.lab(p).reshape(-1, 3) for p in pixels]).astype(np.float64)
    rng = np.random.default_rng(RNG_SEED)
    if len(lab) > SAMPLE:
        lab = lab[rng.choice(len(lab), SAMPLE, replace=False)]
    k = min(size, len(np.unique(lab, axis=0)))
    centres, label_of = kmeans2(lab, k, seed=rng, minit="++", iter=30)
    colours = merged(list(centres), list(np.bincount(label_of, minlength=k) / len(lab)))
    return [{"colour": lab_to_hex(c), "lab": [round(float(v), 2) for v in c], "weight": round(float(w), 4)}
            for c, w in sorted(colours, key=lambda cw: -cw[1]) if w > 0]


def merged(centres: list[np.ndarray], weights: list[float]) -> list[tuple[np.ndarray, float]]:
    """Colours closer than `SAME` (ΔE*ab) merged, weight-averaged: k-means splits one colour with a
    little noise into several."""
    pairs = [(c, w) for c, w in zip(centres, weights) if w > 0]
    while True:
        close = [(i, j) for i in range(len(pairs)) for j in range(i + 1, len(pairs))
                 if np.linalg.norm(pairs[i][0] - pairs[j][0]) < SAME]
        if not close:
            return pairs
        i, j = close[0]
        (ci, wi), (cj, wj) = pairs[i], pairs[j]
        pairs[i] = ((ci * wi + cj * wj) / (wi + wj), wi + wj)
        del pairs[j]


def palette_distance(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """The earth mover's distance between two palettes in CIELAB (ΔE*ab ground distance)."""
    from scipy.optimize import linprog

    xa, xb = np.array([c["lab"] for c in a]), np.array([c["lab"] for c in b])
    wa, wb = np.array([c["weight"] for c in a]), np.array([c["weight"] for c in b])
    wa, wb = wa / wa.sum(), wb / wb.sum()
    cost = np.linalg.norm(xa[:, None, :] - xb[None, :, :], axis=2)
    rows = np.kron(np.eye(len(a)), np.ones(len(b)))  # each colour of a sends its weight
    cols = np.kron(np.ones(len(a)), np.eye(len(b)))  # each colour of b receives its weight
    result = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([wa, wb]), bounds=(0, None),
                     method="highs")
    return float(result.fun)


def spectrum_distance(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """The RMS difference of two log10 spectra over the frequencies both have."""
    x, y = np.array(a, dtype=float), np.array(b, dtype=float)
    both = ~(np.isnan(x) | np.isnan(y))
    return float(np.sqrt(np.mean((x[both] - y[both]) ** 2))) if both.any() else None


# ---------------------------------------------------------------- levels

def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return _number(float(np.mean(kept))) if kept else None


def _nan_mean(spectra: list[np.ndarray], size: int) -> np.ndarray:
    """The mean of the spectra, frequency by frequency, over those that have it (NaN where none has)."""
    stacked = np.stack(spectra) if spectra else np.full((1, size), np.nan)
    count = (~np.isnan(stacked)).sum(axis=0)
    total = np.nansum(stacked, axis=0)
    return np.divide(total, count, out=np.full(size, np.nan), where=count > 0)


def level_fingerprint(runs: Sequence[RunInfo], frames: str) -> dict[str, Any]:
    """The fingerprint of the runs at one level of a factor."""
    spectra, artifacts, pixels = [], [], []
    for run in runs:
        for image in read_pixels(run.frames[-1:] if frames == "final" else run.frames, run.size):
            pixels.append(image)
            spectra.append(imagestats.power_spectrum(image))
            artifacts.append(imagestats.grid_artifact(image, run.factor))
    spectrum = _nan_mean(spectra, len(imagestats.SPECTRUM_FREQUENCIES))
    return {"runs": len(runs), "palette": palette(pixels) if pixels else [],
            "spectrum": [_number(v) for v in spectrum], "spectral_slope": _number(imagestats.spectrum_slope(spectrum)),
            "grid_artifact": _mean(artifacts), "seconds_per_step": _mean([r.seconds_per_step for r in runs]),
            "wall_time_s": _mean([r.wall_time_s for r in runs])}


def level_of(run: RunInfo, factor: str) -> str:
    return {"vqgan": run.vqgan, "perceptor_set": run.perceptor_set}.get(factor) or dict(run.varied)[factor]


def pairwise(levels: dict[str, dict[str, Any]], distance: Any, key: str) -> dict[str, dict[str, float | None]]:
    """{A: {B: distance(A's key, B's key)}} for every two levels (both ways)."""
    out: dict[str, dict[str, float | None]] = {name: {} for name in levels}
    for a, b in combinations(levels, 2):
        d = distance(levels[a][key], levels[b][key]) if levels[a][key] and levels[b][key] else None
        out[a][b] = out[b][a] = _number(d) if d is not None else None
    return out


def fingerprints(runs: Sequence[RunInfo], experiment: str, frames: str = "final",
                 cmmd: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fingerprints JSON of one experiment's runs (those not complete are left out, named)."""
    if frames not in FRAMES:
        raise EffectsError(f"--frames {frames}: use one of {', '.join(FRAMES)}")
    mine = [r for r in runs if r.experiment == experiment]
    factors = factors_of(mine)
    usable_runs, left = usable(mine, factors)
    kept = []
    for run in usable_runs:  # a frame too large or not a file leaves its run out, named
        try:
            read_pixels(run.frames[-1:], run.size)
            kept.append(run)
        except (OSError, BadFile) as err:
            left.append({"run": run.name, "reason": f"a frame cannot be read ({err})"})
    if not kept:
        raise EffectsError(f"experiment {experiment}: no complete run to fingerprint"
                           + (f" ({len(left)} left out)" if left else ""))
    levels, distances = {}, {}
    for factor in factors:
        names = sorted({level_of(r, factor) for r in kept})
        levels[factor] = {n: level_fingerprint([r for r in kept if level_of(r, factor) == n], frames) for n in names}
        distances[factor] = {"palette": pairwise(levels[factor], palette_distance, "palette"),
                             "spectrum": pairwise(levels[factor], spectrum_distance, "spectrum")}
        judged = {judge: per[factor] for judge, per in (cmmd or {}).items() if factor in per}
        if judged:
            distances[factor]["cmmd"] = judged
    return {"experiment": experiment, "runs": len(kept), "frames": frames, "factors": factors,
            "frequencies": [round(float(f), 6) for f in imagestats.SPECTRUM_FREQUENCIES], "levels": levels,
            "distances": distances, "excluded": left}


# ---------------------------------------------------------------- output

def _figure(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def to_text(doc: dict[str, Any]) -> str:
    """A short table per factor: each level's palette, slope, grid artifact and runtime, then the
    palette distance to each other level."""
    lines = [f"experiment {doc['experiment']}: {doc['runs']} runs, frames: {doc['frames']}"]
    for factor in doc["factors"]:
        levels = doc["levels"][factor]
        rows = [("level", "runs", "palette (weight)", "slope", "grid", "s/step", "wall s", "palette EMD to")]
        for name, fp in levels.items():
            swatch = " ".join(f"{c['colour']}({c['weight']:.2f})" for c in fp["palette"][:3])
            near = ", ".join(f"{other} {_figure(d, 1)}" for other, d in doc["distances"][factor]["palette"][name].items())
            rows.append((name, str(fp["runs"]), swatch, _figure(fp["spectral_slope"]), _figure(fp["grid_artifact"]),
                         _figure(fp["seconds_per_step"]), _figure(fp["wall_time_s"], 0), near))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        lines += ["", f"{label(factor)}:"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    lines += [f"left out: {e['run']} ({e['reason']})" for e in doc["excluded"]]
    return "\n".join(lines)


def print_fingerprints(args: argparse.Namespace) -> None:
    """The command: the fingerprints of one experiment under --root, as tables or JSON."""
    if not args.root.is_dir():
        raise EffectsError(f"--root {args.root}: no such folder")
    runs = find_runs(args.root)
    experiment = pick_experiment(runs, args.experiment, args.root)
    scores = read_json(scores_dir(args.root, args.scores), CMMD) or {}
    doc = fingerprints(runs, experiment, args.frames, scores.get("cmmd"))
    print(json.dumps(doc, indent=2, allow_nan=False) if args.json else to_text(doc))


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="python -m experiments.fingerprints", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="a folder of run folders (ours or pytti's)")
    parser.add_argument("--experiment", help="the experiment (default: the only one)")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the tables")
    parser.add_argument("--frames", choices=FRAMES, default="final",
                        help="the final frame of each run (default), or all its frames")
    parser.add_argument("--scores", type=Path, help="the score files' folder (default: <root>/../scores)")
    args = parser.parse_args(argv)
    return error_boundary(lambda: print_fingerprints(args))


if __name__ == "__main__":
    sys.exit(main())
