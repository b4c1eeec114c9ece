"""The runs the effects analysis reads: found under a root through `engine.runfolder` (or given by
the dashboard's catalog), the complete ones measured into a table with a row per run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pandas as pd

from engine.fsutil import BadFile
from engine.runfolder import read_frame
from engine.runfolder.meta import to_float
from experiments.effects.analysis import SIMILARITY, EffectsError
from experiments.effects.anova import PAIR
from experiments.imagestats import DEFAULT_FACTOR, STATS, frame_measures

if TYPE_CHECKING:
    from engine.runfolder import RunRecord

FRAMES = ("final", "all")


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
    varied: tuple[tuple[str, str], ...] = ()  # (setting, level) of each setting its name says was varied
    factor: int = DEFAULT_FACTOR  # its VQGAN's pixels per latent cell side
    seconds_per_step: float | None = None  # from its metrics, where it has them
    wall_time_s: float | None = None
    size: tuple[int, int] | None = None  # (width, height) of its frames, where its settings say


def find_runs(root: Path) -> list[RunInfo]:
    """Every run under `root` (ours or pytti's), read through engine.runfolder's walker and reader."""
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
            runs += [run_info(root, read_run(path, base, names, default_experiment=_group(root, path),
                                             with_losses=False))  # the analysis needs no loss table
                     for base in run_bases(path, names)]
        except Exception as e:  # noqa: BLE001 - one bad folder must never hide the others
            runs.append(RunInfo(path.relative_to(root).as_posix(), _group(root, path), "?", "?", None, (),
                                "incomplete", f"unreadable: {type(e).__name__}: {e}"))
    return runs


def _group(root: Path, folder: Path) -> str:
    """The folder holding a run folder, relative to the root: the experiment of a run without one."""
    group = folder.relative_to(root).parent.as_posix() if folder != root else "."
    return "" if group == "." else group


def run_info(root: Path, record: RunRecord) -> RunInfo:
    """The analysis's view of a run read under `root`."""
    rel = record.folder.relative_to(root).as_posix()
    name = record.base if rel == "." else rel if record.base == record.folder.name else f"{rel}/{record.base}"
    metrics = record.metrics or {}
    rate, wall = to_float(metrics.get("steps_per_second")), to_float(metrics.get("wall_time_s"))
    return RunInfo(name, record.experiment, record.meta.vqgan, record.meta.perceptor_set, record.meta.seed,
                   tuple(record.folder / f.name for f in record.frames), record.status, record.reason, record.cell,
                   tuple(record.varied.items()), record.meta.vqgan_factor, 1 / rate if rate else None, wall,
                   record.frame_size)


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


def factors_of(runs: Iterable[RunInfo]) -> list[str]:
    """The factors of these runs: VQGAN, perceptor set, then every setting any of them varied."""
    return [*PAIR, *dict.fromkeys(setting for r in runs for setting, _ in r.varied)]


def usable(runs: Iterable[RunInfo], factors: Sequence[str] = PAIR) -> tuple[list[RunInfo], list[dict[str, str]]]:
    """(complete runs with a known level of every factor, the others each with the reason it is left out)."""
    kept, left = [], []
    for r in runs:
        lacks = [f for f in factors[len(PAIR):] if f not in dict(r.varied)]
        if r.status != "complete":
            left.append({"run": r.name, "reason": f"{r.status}: {r.reason or 'not complete'}"})
        elif r.vqgan == "?" or r.perceptor_set == "?":
            left.append({"run": r.name, "reason": "its VQGAN or perceptors are unknown"})
        elif lacks:
            left.append({"run": r.name, "reason": f"its name gives no level of {', '.join(lacks)}"})
        else:
            kept.append(r)
    return kept, left


def image_measures(pixels: Sequence[np.ndarray], factor: int = DEFAULT_FACTOR) -> dict[str, float]:
    """Each statistic of `STATS`, averaged over the given frames (`factor`: their VQGAN's)."""
    stats = [frame_measures(p, factor) for p in pixels]  # no palette: the analysis has no use for it
    return {k: float(np.mean([s[k] for s in stats])) for k in STATS}


def read_pixels(paths: Sequence[Path], size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The frames as (H, W, 3) uint8, each checked against `size` before it is decoded (`read_frame`)."""
    return [read_frame(p, size) for p in paths]


def measure_table(runs: Sequence[RunInfo], frames: str = "final",
                  factors: Sequence[str] = PAIR) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """One row per run: run, cell, each factor, seed, then each image statistic (of the final frame,
    or the mean over every frame); and the runs whose frames cannot be read, with why."""
    if frames not in FRAMES:
        raise EffectsError(f"--frames {frames}: use one of {', '.join(FRAMES)}")
    rows, left = [], []
    for r in runs:
        try:
            values = image_measures(read_pixels(r.frames[-1:] if frames == "final" else r.frames, r.size), r.factor)
        except (OSError, BadFile) as err:
            left.append({"run": r.name, "reason": f"a frame cannot be read ({err})"})
            continue
        rows.append({"run": r.name, "cell": r.cell or r.name, "vqgan": r.vqgan, "perceptor_set": r.perceptor_set,
                     **dict(r.varied), "seed": r.seed, **values})
    return pd.DataFrame(rows, columns=["run", "cell", *factors, "seed", *STATS]), left


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
