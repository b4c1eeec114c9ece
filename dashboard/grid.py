"""The grid a player shows: runs placed by two catalog axes. Shared by the app and the export."""
from __future__ import annotations

import re
import warnings
from bisect import bisect_right
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from engine.errors import InputError
from engine.runfolder import PYTTI_PERCEPTORS
from engine.runfolder.names import folder_key, setting_of

from .rows import BASE_FACTORS, OLD_COLUMNS

#: Catalog columns that can be an axis, with their labels.
AXES = {"vqgan": "VQGAN", "perceptor_set": "perceptor set", "experiment": "experiment",
        "seed": "seed", "size": "size", "rerun": "re-run"}
SETTING = "setting:"
#: Settings already covered by a column above, or not scalar enough to label a row.
COVERED = {"vqgan_model", "perceptors", "seed", "width", "height", "use_mmc", "mmc_models",
           "file_namespace", *PYTTI_PERCEPTORS}

FrameSource = Callable[[pd.Series], dict[str, Any]]
MAX_SHOWN_FRAMES = 1000  # frames of one run a page shows (and fetches) at most
PER_FRAME = ("frames", "frame_steps", "frame_losses", "frame_scenes")  # catalog columns of a value per frame


def bounded_frames(df: pd.DataFrame, limit: int = MAX_SHOWN_FRAMES) -> pd.DataFrame:
    """`df` where each run of more than `limit` frames keeps `limit` of them, evenly spaced, the
    first and the last among them (every column of `PER_FRAME`), its reason saying so."""
    keep = {i: [round(k * (n - 1) / (limit - 1)) for k in range(limit)]
            for i, n in df["frames"].map(len).items() if n > limit}
    if not keep:
        return df
    df = df.copy()
    for column in PER_FRAME:
        df[column] = [[values[k] for k in keep[i]] if i in keep else values for i, values in df[column].items()]
    df["reason"] = ["; ".join(filter(None, [reason, f"{n} frames: the page shows {limit} of them, evenly spaced"]))
                    if i in keep else reason for i, reason, n in zip(df.index, df["reason"], df["n_frames"])]
    return df


def natural_key(value: str) -> list[Any]:
    """Sort key putting `RN50x4` before `RN50x16` and `2` before `10`."""
    return [(0, int(t)) if t.isdigit() else (1, t.lower()) for t in re.split(r"(\d+)", value)]


def _varies(values: pd.Series, experiments: pd.Series) -> bool:
    """Whether `values` (as text) differ between runs of one experiment."""
    return bool((values.astype(str).groupby(experiments.to_numpy()).nunique() > 1).any())


def varied_settings(df: pd.DataFrame) -> list[str]:
    """The settings any run's name says were varied (its factors beyond `BASE_FACTORS`), in order
    of first appearance: each is an axis by its setting name."""
    return list(dict.fromkeys(k for f in df["factors"] for k in f if k not in BASE_FACTORS))


def _varying_settings(df: pd.DataFrame, varied: list[str]) -> list[str]:
    """Settings whose value varies within an experiment, but those a varied setting's axis shows."""
    settings = pd.DataFrame(list(df["settings"]), index=df.index) if len(df) else pd.DataFrame()
    return sorted(
        key for key in settings.columns
        if key not in COVERED and setting_of(key) not in varied
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
    """Label -> axis of every way to lay out the grid: VQGAN and perceptor set always, each varied
    setting (a factor, by its setting name: `scenes`), the experiment where there are several,
    any other column or setting where its value varies within an experiment (a setting that only
    tells experiments apart is no axis, nor one whose varied setting is already one)."""
    always = {"vqgan", "perceptor_set"} | ({"experiment"} if df["experiment"].nunique() > 1 else set())
    options = {label: key for key, label in AXES.items()
               if key in always or (key != "experiment" and _varies(df[key], df["experiment"]))}
    varied = varied_settings(df)
    options.update({setting: setting for setting in varied})
    options.update({key: SETTING + key for key in _varying_settings(df, varied)})
    return options


def check_axis(df: pd.DataFrame, axis: str, option: str) -> None:
    """InputError naming `axis` (given as `option`) where it cannot lay out the runs of `df`: a
    catalog column of AXES, `setting:<key>` and a varied setting can."""
    if axis in AXES or axis.startswith(SETTING) or axis in varied_settings(df):
        return
    raise InputError(f"{option} {axis}: not an axis of these runs; choose from "
                     f"{', '.join(axis_options(df).values())} or {SETTING}<key>")


def axis_label(axis: str) -> str:
    return AXES.get(axis) or axis.removeprefix(SETTING)


def axis_values(df: pd.DataFrame, axis: str) -> list[str]:
    """Each run's value on `axis`, as text ("-" where it has none)."""
    if axis.startswith(SETTING):
        key = axis.removeprefix(SETTING)
        return [str(s.get(key, "-")) for s in df["settings"]]
    if axis not in AXES:  # a varied setting
        return [str(f.get(axis, "-")) for f in df["factors"]]
    return ["-" if pd.isna(v) else str(v) for v in df[axis]]


def levels_text(factors: Mapping[str, Any], leave_out: Iterable[str] = ()) -> str:
    """`scenes=city · dsw=0.0`: the level of each varied setting among a run's `factors`, but
    those of `leave_out`; keys as folder names spell them."""
    return " · ".join(f"{folder_key(k)}={v}" for k, v in factors.items()
                      if k not in BASE_FACTORS and k not in leave_out)


def page_title(experiments: Iterable[str]) -> str:
    """What a page of the grid shows: `VQGAN+CLIP grid: <experiment>` (up to three named, more
    counted)."""
    experiments = sorted(e or "(no experiment)" for e in experiments)
    shown = ", ".join(experiments) if len(experiments) <= 3 else f"{len(experiments)} experiments"
    return f"VQGAN+CLIP grid: {shown or 'no experiment ticked'}"


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
    column values, each factor's label, the union of the frames' steps, and per run its place,
    caption, experiment, the levels of its varied settings that are not an axis, its factors, its
    runtime, the index of its frame shown at each step, each frame's step and loss, and its frames
    (from `frames(run)`)."""
    row_of, col_of = axis_values(df, rows), axis_values(df, cols)
    steps = sorted({s for run_steps in df["frame_steps"] for s in run_steps})
    with_experiment = df["experiment"].nunique() > 1 and "experiment" not in (rows, cols)
    cells = [
        {
            "id": run.run, "row": r, "col": c, "title": title(run, with_experiment),
            "experiment": run.experiment, "levels": levels_text(run.factors, (rows, cols)), "factors": run.factors,
            "seconds_per_step": run.seconds_per_step, "wall_time_s": run.wall_time_s,
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
        "factor_labels": {k: axis_label(k) for k in dict.fromkeys(k for f in df["factors"] for k in f)},
        "steps": steps, "cells": cells,
    }
