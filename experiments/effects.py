"""What drives the look: each measure's variance split into the VQGAN's share, the perceptor
entry's, their interaction and the residual (seed-to-seed noise).

    python -m experiments.effects --root DIR [--experiment NAME] [--json] [--frames final|all]
                                  [--scores DIR]
    python -m experiments.effects --grid params.yaml     # stage `effects`: from the score files

A measure is one image statistic of experiments/imagestats.py (of each run's final frame, or the
mean over its frames) or, where the score stage wrote them, one judge's similarity to the prompt.
The split is a two-way analysis of variance on the runs:

- sums of squares of type II, from least-squares fits of the models `VQGAN`, `perceptor set`,
  `VQGAN + perceptor set` and the cell means: VQGAN = RSS(perceptor set) − RSS(additive), perceptor set =
  RSS(VQGAN) − RSS(additive), interaction = RSS(additive) − RSS(cells), residual = RSS(cells).
  Both factors are treated alike, so swapping the labels swaps the shares exactly; a missing
  cell or unequal seeds per cell (unbalanced) are fitted as they are.
- each share is of the variance of one run's measure across the grid: an effect's variance is
  its sum of squares less what the noise alone adds to it (its degrees of freedom × the noise's
  mean square), over the number of runs, clipped at 0; the residual is the noise's mean square
  (seed-to-seed variance). Unlike shares of the sums of squares, these do not drift with the
  number of seeds (benchmarks/effects_intervals.py).
- With one run per cell there is no noise estimate of its own: the interaction cannot be told
  from noise, and its mean square is reported as residual (`interaction`: null).
- 95 % intervals: percentile bootstrap over seeds (a seed is resampled with all its runs),
  where some cell has more than one run. A run without a seed is its own unit.
- A measure that does not vary gets no shares and a reason; runs that are not complete are
  left out and named, as are the grid's missing cells.

Pure numpy/pandas on images and CSVs: no torch, and nothing of the dashboard.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd

from engine.cli import Parser, error_boundary
from engine.errors import InputError
from experiments import imagestats
from experiments.imagestats import STATS
from experiments.scorefiles import BIAS_MATRIX, EFFECTS, IMAGE_STATS, read_csv, write_json

if TYPE_CHECKING:
    from engine.runfolder import RunRecord
    from experiments.grid import Grid

FACTORS = ("vqgan", "perceptor_set")
SHARES = ("vqgan", "perceptor_set", "interaction", "residual")
LABELS = {"vqgan": "VQGAN", "perceptor_set": "perceptor set", "interaction": "interaction", "residual": "residual"}
FRAMES = ("final", "all")
SIMILARITY = "similarity:"  # measure name prefix: similarity to the prompt under a judge
RESAMPLES = 1000
CONFIDENCE = 0.95
CONSTANT = 1e-9  # relative spread under which a measure counts as constant
ROUGH_SEEDS = 8  # fewer seeds: the intervals undercover (benchmarks/effects_intervals.py)
RNG_SEED = 0  # the bootstrap's draws, fixed so that a result repeats


class EffectsError(InputError):
    """Input the analysis cannot use; the message names the value and what is allowed."""


@dataclass(frozen=True)
class RunInfo:
    """One run as the analysis sees it (from a run folder, or a dashboard catalog row)."""

    name: str
    experiment: str
    vqgan: str
    perceptor_set: str  # slugs joined by '+'
    seed: int | None
    frames: tuple[Path, ...]
    status: str
    reason: str = ""
    cell: str = ""  # the run's file namespace (a grid cell's name), without pytti's re-run suffix


@dataclass
class Design:
    """The runs of one measure, coded: factor levels, cells and bootstrap units."""

    y: np.ndarray
    a: np.ndarray  # VQGAN code per run
    b: np.ndarray  # perceptor set code per run
    cell: np.ndarray
    unit: np.ndarray  # bootstrap unit (seed) per run
    levels: tuple[list[str], list[str]]
    replicated: bool = field(init=False)

    def __post_init__(self) -> None:
        self.replicated = len(self.y) > len(np.unique(self.cell))


# ---------------------------------------------------------------- finding runs

def find_runs(root: Path) -> list[RunInfo]:
    """Every run under `root` (ours or pytti's), read through engine.runfolder; links to
    folders are not followed."""
    from engine.runfolder import is_run_folder, read_run, run_bases
    from engine.runfolder.walk import run_folders

    root = Path(root).resolve()
    runs = []
    for listing in run_folders(root):
        path, names = listing.folder, listing.files
        if not listing.problem and not is_run_folder(names):
            continue  # an empty folder: no run yet
        try:
            if listing.problem:
                raise EffectsError(listing.problem)
            runs += [_run_info(root, read_run(path, base, names, default_experiment=_group(root, path)))
                     for base in run_bases(path, names)]
        except Exception as e:  # noqa: BLE001 - one bad folder must never hide the others
            runs.append(RunInfo(path.relative_to(root).as_posix(), _group(root, path), "?", "?", None, (),
                                "incomplete", f"unreadable: {type(e).__name__}: {e}"))
    return runs


def _group(root: Path, folder: Path) -> str:
    """The folder holding a run folder, relative to the root: the experiment of a run without one."""
    group = folder.relative_to(root).parent.as_posix() if folder != root else "."
    return "" if group == "." else group


def _run_info(root: Path, record: RunRecord) -> RunInfo:
    rel = record.folder.relative_to(root).as_posix()
    name = record.base if rel == "." else rel if record.base == record.folder.name else f"{rel}/{record.base}"
    return RunInfo(name, record.experiment, record.meta.vqgan, record.meta.perceptor_set,
                   record.meta.seed, tuple(record.folder / f.name for f in record.frames), record.status,
                   record.reason, record.cell)


def pick_experiment(runs: Sequence[RunInfo], experiment: str | None, root: Path) -> str:
    """The experiment to analyse: `experiment`, or the only one there is."""
    known = sorted({r.experiment for r in runs})
    if not known:
        raise EffectsError(f"--root {root}: no runs found; point it at a folder of run folders")
    if experiment is None:
        if len(known) > 1:
            raise EffectsError(f"--root {root} holds experiments {', '.join(known)}: pick one with --experiment")
        return known[0]
    if experiment not in known:
        raise EffectsError(f"--experiment {experiment}: not under --root {root}; it holds {', '.join(known)}")
    return experiment


def usable(runs: Iterable[RunInfo]) -> tuple[list[RunInfo], list[dict[str, str]]]:
    """(complete runs with known models, the others each with the reason it is left out)."""
    kept, left = [], []
    for r in runs:
        if r.status != "complete":
            left.append({"run": r.name, "reason": f"{r.status}: {r.reason or 'not complete'}"})
        elif r.vqgan == "?" or r.perceptor_set == "?":
            left.append({"run": r.name, "reason": "its VQGAN or perceptors are unknown"})
        else:
            kept.append(r)
    return kept, left


# ---------------------------------------------------------------- measures

def image_measures(pixels: Sequence[np.ndarray]) -> dict[str, float]:
    """Each statistic of `STATS`, averaged over the given frames."""
    return {k: float(np.mean([getattr(imagestats, k)(p) for p in pixels])) for k in STATS}


def read_pixels(paths: Sequence[Path]) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as image:
            out.append(np.asarray(image.convert("RGB")))
    return out


def measure_table(runs: Sequence[RunInfo], frames: str = "final") -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """One row per run: run, cell, vqgan, perceptor_set, seed, then each image statistic (of the final
    frame, or the mean over every frame); and the runs whose frames cannot be read, with why."""
    if frames not in FRAMES:
        raise EffectsError(f"--frames {frames}: use one of {', '.join(FRAMES)}")
    rows, left = [], []
    for r in runs:
        try:
            values = image_measures(read_pixels(r.frames[-1:] if frames == "final" else r.frames))
        except OSError as err:
            left.append({"run": r.name, "reason": f"a frame cannot be read ({err})"})
            continue
        rows.append({"run": r.name, "cell": r.cell or r.name, "vqgan": r.vqgan, "perceptor_set": r.perceptor_set,
                     "seed": r.seed, **values})
    return pd.DataFrame(rows, columns=["run", "cell", *FACTORS, "seed", *STATS]), left


def with_similarities(table: pd.DataFrame, bias: pd.DataFrame | None) -> pd.DataFrame:
    """`table` with a `similarity:<judge>` column per judge of the judge stage's bias matrix
    (`cell, vqgan, perceptor_set, seed, judge, similarity`), matched by cell; older bias matrices,
    without `cell` (and maybe `seed`), by VQGAN, perceptor set and seed."""
    if bias is None or bias.empty:
        return table
    if "cell" in bias.columns:
        wide = bias.pivot_table(index="cell", columns="judge", values="similarity", dropna=False)
        wide.columns = [SIMILARITY + str(j) for j in wide.columns]
        return table.join(wide, on="cell")
    bias = bias if "seed" in bias.columns else bias.assign(seed=np.nan)
    wide = bias.pivot_table(index=["vqgan", "perceptor_set", "seed"], columns="judge", values="similarity",
                            dropna=False)
    wide.columns = [SIMILARITY + str(j) for j in wide.columns]
    keys = [(v, p, s) for v, p, s in zip(table["vqgan"], table["perceptor_set"], table["seed"])]
    if bias["seed"].isna().all():  # older score files: one seed, not recorded
        wide = wide.droplevel("seed")
        keys = [(v, p) for v, p, _ in keys]
    found = wide.reindex(keys)
    return pd.concat([table.reset_index(drop=True), found.reset_index(drop=True)], axis=1)


# ---------------------------------------------------------------- the analysis of variance

def design(table: pd.DataFrame, measure: str) -> Design:
    """The runs with a value of `measure`, coded for the fits."""
    df = table[table[measure].notna()]
    a_levels, a = _codes(df["vqgan"])
    b_levels, b = _codes(df["perceptor_set"])
    seeds = [f"seed {s}" if pd.notna(s) else f"run {r}" for s, r in zip(df["seed"], df["run"])]
    _, unit = _codes(pd.Series(seeds))
    return Design(df[measure].to_numpy(float), a, b, a * len(b_levels) + b, unit, (a_levels, b_levels))


def _codes(values: pd.Series) -> tuple[list[str], np.ndarray]:
    levels = sorted(set(map(str, values)))
    index = {v: i for i, v in enumerate(levels)}
    return levels, np.array([index[str(v)] for v in values], dtype=int)


def _dummies(codes: np.ndarray, n: int) -> np.ndarray:
    """Indicator columns of levels 1..n-1 (level 0 is the intercept's)."""
    return (codes[:, None] == np.arange(1, n)[None, :]).astype(float)


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
    """(R, 4): the VQGAN's, the perceptor set's, the interaction's and the residual sum of squares
    under each row of weights."""
    ones = np.ones((len(d.y), 1))
    xa, xb = _dummies(d.a, len(d.levels[0])), _dummies(d.b, len(d.levels[1]))
    rss_a, rss_b = weighted_rss(np.hstack([ones, xa]), d.y, w), weighted_rss(np.hstack([ones, xb]), d.y, w)
    rss_ab = weighted_rss(np.hstack([ones, xa, xb]), d.y, w)
    rss_cells = cell_rss(d, w)
    ss = np.stack([rss_b - rss_ab, rss_a - rss_ab, rss_ab - rss_cells, rss_cells], axis=1)
    return np.clip(ss, 0.0, None)


def degrees_of_freedom(d: Design) -> np.ndarray:
    """Of the VQGAN, the perceptor set, the interaction (cells − a − b + 1) and the residual."""
    a, b, cells = len(d.levels[0]), len(d.levels[1]), len(np.unique(d.cell))
    return np.array([a - 1, b - 1, cells - a - b + 1, len(d.y) - cells], dtype=float)


def variance_shares(ss: np.ndarray, d: Design, runs: np.ndarray) -> np.ndarray:
    """(R, 4) shares of the variance of one run: each effect's variance, its sum of squares less
    what noise alone adds (df × the noise's mean square) over the number of runs, clipped at 0;
    the residual is the noise's mean square. Without replicates the interaction's mean square is
    the noise (interaction and noise together: the interaction NaN). Rows sum to 1 (NaN: all 0)."""
    df = degrees_of_freedom(d)
    k = 3 if d.replicated else 2
    noise = ss[:, k] / df[k] if df[k] > 0 else np.zeros(len(ss))
    parts = np.clip((ss[:, :3] - df[:3] * noise[:, None]) / runs[:, None], 0.0, None)
    if not d.replicated:
        parts[:, 2] = np.nan
    out = np.column_stack([parts, noise])
    total = np.nansum(out, axis=1, keepdims=True)
    return np.divide(out, total, out=np.full_like(out, np.nan), where=total > 0)


def bootstrap_weights(unit: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R, N) weights: each run's count when the units (seeds) are drawn with replacement."""
    n_units = int(unit.max()) + 1
    draws = rng.integers(0, n_units, size=(resamples, n_units))
    counts = np.stack([np.bincount(row, minlength=n_units) for row in draws])
    return counts[:, unit].astype(float)


def decompose(d: Design, resamples: int = RESAMPLES, seed: int = RNG_SEED) -> dict[str, Any]:
    """One measure's shares, with 95 % bootstrap intervals where some cell has replicates."""
    ones = np.ones((1, len(d.y)))
    point = variance_shares(sums_of_squares(d, ones), d, ones.sum(axis=1))[0]
    result: dict[str, Any] = {k: _round(v) for k, v in zip(SHARES, point)}
    result["low"] = result["high"] = None
    units = int(d.unit.max()) + 1
    if d.replicated and units > 1 and resamples > 0:
        weights = bootstrap_weights(d.unit, resamples, np.random.default_rng(seed))
        boot = variance_shares(sums_of_squares(d, weights), d, weights.sum(axis=1))
        boot = boot[~np.isnan(boot[:, 0])]
        tail = 100 * (1 - CONFIDENCE) / 2
        low, high = np.percentile(boot, [tail, 100 - tail], axis=0)
        result["low"] = {k: _round(v) for k, v in zip(SHARES, low)}
        result["high"] = {k: _round(v) for k, v in zip(SHARES, high)}
    return result


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def constant_reason(y: np.ndarray) -> str | None:
    """Why a measure has no shares (it does not vary), else None."""
    if np.ptp(y) <= CONSTANT * max(1.0, float(np.abs(y).max())):
        return f"does not vary: every run reads {y[0]:.6g}, so there is no variance to split"
    return None


def analyse_measure(table: pd.DataFrame, measure: str, resamples: int = RESAMPLES) -> dict[str, Any]:
    """The shares of one measure (or a reason it has none), its mean per VQGAN and perceptor
    entry, a one-line reading, and the runs it lacks a value for."""
    d = design(table, measure)
    missing = table.loc[table[measure].isna(), "run"].tolist()
    means = {f: {str(k): _round(v) for k, v in table.groupby(f)[measure].mean().items()} for f in FACTORS}
    reason = "no run has a value" if len(d.y) == 0 else constant_reason(d.y)
    if reason:
        out = {**dict.fromkeys(SHARES), "low": None, "high": None, "reason": reason}
    else:
        out = decompose(d, resamples)
    out.update({"reading": reading(measure, out), "runs": len(d.y), "means": means})
    if missing:
        out["no_value"] = missing
    return out


def reading(measure: str, result: dict[str, Any]) -> str:
    """One line: the measure and its largest share ("edge density: 97 % VQGAN")."""
    name = measure.replace("_", " ")
    if result.get("reason"):
        return f"{name}: no shares ({result['reason'].split(':')[0]})"
    top = max((k for k in SHARES if result[k] is not None), key=lambda k: result[k])
    return f"{name}: {round(100 * result[top])} % {LABELS[top]}"


# ---------------------------------------------------------------- the whole grid

def grid_notes(table: pd.DataFrame) -> dict[str, Any]:
    """The grid's shape: cells, seeds, missing cells, whether balanced, and what that means."""
    vqgans, sets = sorted(set(table["vqgan"])), sorted(set(table["perceptor_set"]))
    counts = table.groupby(["vqgan", "perceptor_set"]).size()
    missing = [f"{v} · {p}" for v in vqgans for p in sets if (v, p) not in counts.index]
    balanced = not missing and counts.nunique() == 1
    notes = []
    if counts.max() == 1:
        notes.append("one run per cell: the interaction cannot be told from seed-to-seed noise, so it is "
                     "reported as residual; add seeds (grid.seeds) to separate them")
    if missing:
        notes.append(f"missing cells ({', '.join(missing)}): the grid is incomplete; the shares come from "
                     "type II sums of squares of the cells there are")
    elif not balanced:
        uneven = ", ".join(f"{v} · {p}: {n}" for (v, p), n in counts.items())
        notes.append(f"unbalanced: runs per cell differ ({uneven}); the shares come from type II "
                     "sums of squares")
    seeds = table["seed"].dropna().nunique() + int(table["seed"].isna().sum())
    if counts.max() > 1 and seeds < ROUGH_SEEDS:
        notes.append(f"{seeds} seeds: the 95 % intervals hold the share less often than 95 % below "
                     f"{ROUGH_SEEDS} seeds (benchmarks/effects_intervals.py); read them as rough")
    for factor, levels in zip(("VQGAN", "perceptor set"), (vqgans, sets)):
        if len(levels) == 1:
            notes.append(f"one {factor} ({levels[0]}): its share is 0 by construction")
    return {"cells": int(len(counts)), "seeds": int(seeds), "runs": int(len(table)), "balanced": bool(balanced),
            "missing": missing, "notes": notes}


def measure_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c in STATS or c.startswith(SIMILARITY)]


def analyse(table: pd.DataFrame, experiment: str, frames: str = "final",
            left_out: Sequence[dict[str, str]] = (), resamples: int = RESAMPLES) -> dict[str, Any]:
    """The effects JSON of a measure table (`measure_table`, `with_similarities`)."""
    if table.empty:
        raise EffectsError(f"experiment {experiment}: no complete run to analyse"
                           + (f" ({len(left_out)} left out: see 'excluded')" if left_out else ""))
    return {"experiment": experiment, **grid_notes(table), "frames": frames, "excluded": list(left_out),
            "measures": {m: analyse_measure(table, m, resamples) for m in measure_columns(table)}}


def effects_of_runs(runs: Sequence[RunInfo], experiment: str, frames: str = "final",
                    bias: pd.DataFrame | None = None, resamples: int = RESAMPLES) -> dict[str, Any]:
    """The effects JSON of one experiment's runs (those not complete are left out, named)."""
    kept, left = usable(r for r in runs if r.experiment == experiment)
    table, unreadable = measure_table(kept, frames)
    return analyse(with_similarities(table, bias), experiment, frames, left + unreadable, resamples)


# ---------------------------------------------------------------- output

def _figure(result: dict[str, Any], key: str) -> str:
    value = result[key]
    if value is None:
        return "-"
    text = f"{value:.2f}"
    if result["low"] and result["low"][key] is not None:
        text += f" [{result['low'][key]:.2f}, {result['high'][key]:.2f}]"
    return text


def to_text(effects: dict[str, Any]) -> str:
    """A small table, sorted by the VQGAN share (measures without shares last), and the notes."""
    ordered = sorted(effects["measures"].items(), key=lambda kv: -(kv[1]["vqgan"] if kv[1]["vqgan"] is not None
                                                                  else -1))
    rows = [("measure", *(LABELS[k] for k in SHARES), "reading")]
    rows += [(m, *(_figure(r, k) for k in SHARES), r.get("reason") or r["reading"]) for m, r in ordered]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SHARES) + 1)]
    lines = [f"experiment {effects['experiment']}: {effects['cells']} cells, {effects['seeds']} seed(s), "
             f"{effects['runs']} runs, frames: {effects['frames']}" + ("" if effects["balanced"] else ", unbalanced")]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    lines += [f"note: {n}" for n in effects["notes"]]
    lines += [f"left out: {e['run']} ({e['reason']})" for e in effects["excluded"]]
    return "\n".join(lines)


def grid_effects(grid: Grid, scores: Path) -> dict[str, Any]:
    """The effects of the grid's cells from their score files: each cell's final frame's statistics
    (image_stats.csv) and each judge's similarity (bias_matrix.csv, where the judge stage wrote it)."""
    stats = read_csv(scores, IMAGE_STATS)
    if stats is None:
        raise EffectsError(f"{scores / IMAGE_STATS}: missing or unreadable; run `dvc repro imagestats` first")
    final = stats.sort_values(["cell", "frame"]).groupby("cell", sort=False).tail(1).set_index("cell")
    known = [c for c in grid.cells if c.name in final.index]
    table = pd.DataFrame([{"run": c.name, "cell": c.name, "vqgan": c.vqgan.slug, "perceptor_set": c.perceptor_set,
                           "seed": c.seed, **final.loc[c.name, list(STATS)].to_dict()} for c in known],
                         columns=["run", "cell", *FACTORS, "seed", *STATS])
    left = [{"run": c.name, "reason": f"not in {IMAGE_STATS}"} for c in grid.cells if c.name not in final.index]
    return analyse(with_similarities(table, read_csv(scores, BIAS_MATRIX)), grid.experiment, left_out=left)


def write_grid_effects(params: Path) -> None:
    """The stage `effects`: the grid's effects.json beside its other score files."""
    from experiments.grid import SCORES_DIR, load_grid

    grid = load_grid(params)
    effects = grid_effects(grid, SCORES_DIR)
    write_json(SCORES_DIR / EFFECTS, effects)
    print(f"effects: {effects['runs']} runs, {len(effects['measures'])} measures -> {SCORES_DIR / EFFECTS}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="python -m experiments.effects", description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", type=Path, help="a folder of run folders (ours or pytti's)")
    where.add_argument("--grid", type=Path, metavar="PARAMS",
                       help="the DVC stage: the grid of this params file from its score files, written to "
                            "experiments/scores/effects.json")
    parser.add_argument("--experiment", help="the experiment to analyse (default: the only one)")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    parser.add_argument("--frames", choices=FRAMES, default="final",
                        help="the final frame of each run (default), or the mean over its frames")
    parser.add_argument("--scores", type=Path,
                        help="the score stage's folder for similarities (default: <root>/../scores where it exists)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.grid is not None:
        return error_boundary(lambda: write_grid_effects(args.grid))
    return error_boundary(lambda: print_effects(args))


def print_effects(args: argparse.Namespace) -> None:
    """The command: the effects of one experiment under --root, as a table or JSON."""
    if not args.root.is_dir():
        raise EffectsError(f"--root {args.root}: no such folder")
    if args.scores is not None and not args.scores.is_dir():
        raise EffectsError(f"--scores {args.scores}: no such folder")
    runs = find_runs(args.root)
    experiment = pick_experiment(runs, args.experiment, args.root)
    scores = args.scores or args.root.resolve().parent / "scores"
    effects = effects_of_runs(runs, experiment, args.frames, read_csv(scores, BIAS_MATRIX))
    print(json.dumps(effects, indent=2) if args.json else to_text(effects))


if __name__ == "__main__":
    sys.exit(main())
