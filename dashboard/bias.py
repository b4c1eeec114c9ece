"""The bias view: each judge's similarities z-scored within the judge, the diagonal marked, and
each judge's and VQGAN's self-preference with its interval over seeds, as the judge stage wrote
it (`self_preference.json`, experiments/bias.py): nothing here needs scipy."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource
from bokeh.palettes import RdBu11
from bokeh.plotting import figure
from bokeh.transform import linear_cmap

from experiments.bias import standardise
from experiments.scorefiles import SELF_PREFERENCE

from .grid import natural_key

RDBU = list(RdBu11)  # Bokeh orders it blue to red: low z blue, high z red
ROW = 24  # px per heatmap row
COLUMN = 64  # px per judge column
MIN_COLUMNS = 280  # px of judges' columns at least: the title's width
FRAME = 90  # px of title and judges' names above the rows
ROW_LABELS = 200  # px for the cells' names left of the heatmap
LEGEND = ("Each judge's similarities are z-scored within the judge (0: its mean, ±1: its "
          "standard deviation), so columns share one scale. Solid outline: the cell guided by "
          "the judge's own perceptor alone; dashed: a pair that includes it.")


def judged_cells(bias: pd.DataFrame) -> pd.DataFrame:
    """One row per (vqgan, perceptor_set, judge): mean `z` and `similarity` over seeds, `seeds`,
    `diagonal`, `involved` (see `experiments.bias.standardise`), z-scored over the whole table
    so that a judge's spread is that of every cell it scored."""
    z = standardise(bias)
    return (z.groupby(["vqgan", "perceptor_set", "judge"], as_index=False, sort=False)
            .agg(z=("z", "mean"), similarity=("similarity", "mean"), seeds=("seed", "nunique"),
                 diagonal=("diagonal", "first"), involved=("involved", "first")))


def heatmap(cells: pd.DataFrame) -> figure:
    """Cells (rows) × judges (columns), coloured by z on one scale centred on 0; the judge's own
    perceptor's cell outlined solid, a pair that includes it dashed. COLUMN px a judge: the
    heatmap's size follows the judges and the cells, not the window."""
    df = cells.assign(cell=cells["vqgan"] + " · " + cells["perceptor_set"].str.replace("+", " + "))
    df["label"] = df["z"].map(lambda v: "" if math.isnan(v) else f"{v:+.2f}")
    df["raw"] = df["similarity"].map("{:.4f}".format)
    limit = max(float(df["z"].abs().max()), 1.0) if df["z"].notna().any() else 1.0
    df["ink"] = ["white" if abs(v) > 0.6 * limit else "black" for v in df["z"].fillna(0)]
    rows = sorted(df["cell"].unique(), key=natural_key, reverse=True)
    judges = sorted(df["judge"].unique(), key=natural_key)
    fig = figure(title="similarity, z-scored within each judge",
                 x_range=judges, y_range=rows, height=ROW * len(rows) + FRAME,
                 width=ROW_LABELS + max(COLUMN * len(judges), MIN_COLUMNS), x_axis_location="above",
                 toolbar_location=None,
                 tools="hover", tooltips=[("cell", "@cell"), ("judge", "@judge"), ("z", "@label"),
                                          ("mean similarity", "@raw"), ("seeds", "@seeds")])
    source = ColumnDataSource(df.drop(columns=["diagonal", "involved"]).to_dict("list"))
    fig.rect("judge", "cell", 1, 1, source=source, line_color=None,
             fill_color=linear_cmap("z", RDBU, -limit, limit, nan_color="#dddddd"))
    for subset, dash in ((df[df["diagonal"]], "solid"), (df[df["involved"] & ~df["diagonal"]], "dashed")):
        fig.rect(subset["judge"].tolist(), subset["cell"].tolist(), 0.94, 0.94, fill_alpha=0,
                 line_color="black", line_width=3 if dash == "solid" else 2, line_dash=dash)
    fig.text("judge", "cell", text="label", source=source, text_align="center",
             text_baseline="middle", text_font_size="10px", text_color="ink")
    fig.grid.visible = False
    fig.axis.major_tick_line_color = None
    return fig


def _figure(entry: dict[str, Any]) -> str:
    mean, low, high = (entry.get(k) for k in ("mean", "low", "high"))
    if mean is None:
        return "–"
    text = f"{mean:+.2f}"
    return text if low is None or high is None else f"{text} [{low:+.2f}, {high:+.2f}]"


def preference_table(entries: dict[str, dict[str, Any]], label: str) -> str:
    """Markdown: one line per judge or VQGAN with its self-preference and interval."""
    lines = [f"| {label} | self-preference (judge SDs) | seeds |", "|---|---|---|"]
    lines += [f"| {name} | {_figure(e)} | {e.get('seeds') or 0} |" for name, e in sorted(entries.items())]
    return "\n".join(lines)


def seeds_note(seeds: int) -> str:
    """What the interval rests on."""
    if seeds < 2:
        return ("**One seed per cell: no interval.** Each figure is a single run; list more seeds "
                "under `grid.seeds` in params.yaml for a mean with a 95 % interval.")
    return f"Mean over {seeds} seeds with a 95 % t-interval in brackets."


def preference_parts(preference: dict[str, Any] | None, vqgans: set[str]) -> list[str]:
    """Markdown: the self-preference per judge and per VQGAN of `vqgans`, from the judge stage's
    `self_preference.json` (`{"judges": {judge: {mean, low, high, seeds}}, "vqgans": {...}}`)."""
    if preference is None:
        return [(f"*The self-preference needs the judge stage's `{SELF_PREFERENCE}` beside the bias "
                 "matrix; run the judge stage to write it.*")]
    judges, by_vqgan = preference.get("judges") or {}, preference.get("vqgans") or {}
    if not judges:
        return [("*No judge has a cell guided by its own perceptor alone, so there is no "
                 "self-preference to show.*")]
    seeds = max((e.get("seeds") or 0 for e in judges.values()), default=0)
    return ["### Self-preference", seeds_note(seeds),
            preference_table(judges, "judge (over every VQGAN)"),
            preference_table({v: e for v, e in by_vqgan.items() if v in vqgans}, "VQGAN (over every judge)")]


def bias_view(bias: pd.DataFrame, preference: dict[str, Any] | None, shown: pd.DataFrame) -> pn.Column | str:
    """The heatmap of the shown cells and the self-preference (`preference_parts`) per judge and
    per shown VQGAN: how much more each judge likes the images its own perceptor guided than
    those guided by perceptors without it, in the judge's own spread (0 = no preference)."""
    pairs = set(zip(shown["vqgan"], shown["perceptor_set"]))
    cells = judged_cells(bias)
    cells = cells[[(v, g) in pairs for v, g in zip(cells["vqgan"], cells["perceptor_set"])]]
    if cells.empty:
        return "*No bias scores for the shown cells.*"
    parts = preference_parts(preference, set(shown["vqgan"]))
    return pn.Column(heatmap(cells), pn.pane.Markdown("\n\n".join([LEGEND, *parts])),
                     sizing_mode="stretch_width")
