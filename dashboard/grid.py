"""The grid a player shows: runs placed by two catalog axes. Shared by the app and the export."""
from __future__ import annotations

import re
import warnings
from bisect import bisect_right
from typing import Any, Callable

import pandas as pd

from engine.runfolder import PYTTI_PERCEPTORS

from .rows import OLD_COLUMNS

#: Catalog columns that can be an axis, with their labels.
AXES = {"vqgan": "VQGAN", "perceptor_set": "perceptor set", "experiment": "experiment",
        "seed": "seed", "size": "size", "rerun": "re-run"}
SETTING = "setting:"
#: Settings already covered by a column above, or not scalar enough to label a row.
COVERED = {"vqgan_model", "perceptors", "seed", "width", "height", "use_mmc", "mmc_models",
           "file_namespace", *PYTTI_PERCEPTORS}

FrameSource = Callable[[pd.Series], dict[str, Any]]


def natural_key(value: str) -> list[Any]:
    """Sort key putting `RN50x4` before `RN50x16` and `2` before `10`."""
    return [(0, int(t)) if t.isdigit() else (1, t.lower()) for t in re.split(r"(\d+)", value)]


def _varies(values: pd.Series, experiments: pd.Series) -> bool:
    """Whether `values` (as text) differ between runs of one experiment."""
    return bool((values.astype(str).groupby(experiments.to_numpy()).nunique() > 1).any())


def _varying_settings(df: pd.DataFrame) -> list[str]:
    settings = pd.DataFrame(list(df["settings"]), index=df.index) if len(df) else pd.DataFrame()
    return sorted(
        key for key in settings.columns
        if key not in COVERED
        and settings[key].map(lambda v: v is None or isinstance(v, (str, int, float, bool))).all()
        and _varies(settings[key], df["experiment"])
    )


def current_axis(axis: str) -> str:
    """`axis`, or the axis a renamed column's old name (`OLD_COLUMNS`) stands for, with a
    FutureWarning."""
    if axis in OLD_COLUMNS:
        warnings.warn(f"the axis {axis!r} is now {OLD_COLUMNS[axis]!r}; {axis!r} goes in the next "
                      "release", FutureWarning, stacklevel=2)
    return OLD_COLUMNS.get(axis, axis)


def axis_options(df: pd.DataFrame) -> dict[str, str]:
    """Label -> axis of every way to lay out the grid: VQGAN and perceptor set always, the
    experiment where there are several, any other column or setting where its value varies
    within an experiment (a setting that only tells experiments apart is no axis)."""
    always = {"vqgan", "perceptor_set"} | ({"experiment"} if df["experiment"].nunique() > 1 else set())
    options = {label: key for key, label in AXES.items()
               if key in always or (key != "experiment" and _varies(df[key], df["experiment"]))}
    options.update({key: SETTING + key for key in _varying_settings(df)})
    return options


def axis_label(axis: str) -> str:
    return AXES.get(axis) or axis.removeprefix(SETTING)


def axis_values(df: pd.DataFrame, axis: str) -> list[str]:
    """Each run's value on `axis`, as text."""
    if axis.startswith(SETTING):
        key = axis.removeprefix(SETTING)
        return [str(s.get(key, "-")) for s in df["settings"]]
    return ["-" if pd.isna(v) else str(v) for v in df[axis]]


def title(run: pd.Series, with_experiment: bool) -> str:
    """A cell's caption: its models, re-run number, UNTRAINED for random-weight models and, where
    several, its experiment."""
    text = f"{run.vqgan} · {' + '.join(run.perceptors) or '?'}"
    if run.rerun:
        text += f" ({run.rerun})"
    if run.untrained:
        text += " · UNTRAINED"
    return f"{run.experiment}: {text}" if with_experiment else text


def grid_spec(df: pd.DataFrame, rows: str, cols: str, frames: FrameSource) -> dict[str, Any]:
    """The JSON the player renders: the axes (`row_axis`, `col_axis`) with their labels, row and
    column values, the union of the frames' steps, and per run its place, caption, the index of
    its frame shown at each step, each frame's step and loss, and its frames (from `frames(run)`)."""
    row_of, col_of = axis_values(df, rows), axis_values(df, cols)
    steps = sorted({s for run_steps in df["frame_steps"] for s in run_steps})
    with_experiment = df["experiment"].nunique() > 1 and "experiment" not in (rows, cols)
    cells = [
        {
            "id": run.run, "row": r, "col": c, "title": title(run, with_experiment),
            "note": run.reason, "status": run.status, "steps": run.frame_steps,
            "losses": run.frame_losses,
            "width": None if pd.isna(run.width) else int(run.width),
            "height": None if pd.isna(run.height) else int(run.height),
            "at": [max(bisect_right(run.frame_steps, s) - 1, 0) for s in steps],
            **frames(run),
        }
        for (_, run), r, c in zip(df.iterrows(), row_of, col_of)
    ]
    return {
        "rows": sorted(set(row_of), key=natural_key), "cols": sorted(set(col_of), key=natural_key),
        "row_axis": rows, "col_axis": cols, "row_label": axis_label(rows), "col_label": axis_label(cols),
        "steps": steps, "cells": cells,
    }
