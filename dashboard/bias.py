"""The bias view: each judge's similarities z-scored within the judge, the diagonal marked, and
each judge's self-preference (experiments/bias.py) with its interval over seeds."""
from __future__ import annotations

import math

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource
from bokeh.palettes import RdBu11
from bokeh.plotting import figure
from bokeh.transform import linear_cmap

from experiments.bias import self_preference, standardise, summary

from .grid import natural_key

HEIGHT = 320
RDBU = list(RdBu11)  # Bokeh orders it blue to red: low z blue, high z red
ROW = 24  # px per heatmap row
LEGEND = ("Each judge's similarities are z-scored within the judge (0: its mean, ±1: its "
          "standard deviation), so columns share one scale. Solid outline: the cell guided by "
          "the judge's own perceptor alone; dashed: a pair that includes it.")


def judged_cells(bias: pd.DataFrame) -> pd.DataFrame:
    """One row per (vqgan, generator, judge): mean `z` and `similarity` over seeds, `seeds`,
    `diagonal`, `involved` (see `experiments.bias.standardise`), z-scored over the whole table
    so that a judge's spread is that of every cell it scored."""
    z = standardise(bias)
    return (z.groupby(["vqgan", "generator", "judge"], as_index=False, sort=False)
            .agg(z=("z", "mean"), similarity=("similarity", "mean"), seeds=("seed", "nunique"),
                 diagonal=("diagonal", "first"), involved=("involved", "first")))


def heatmap(cells: pd.DataFrame) -> figure:
    """Cells (rows) × judges (columns), coloured by z on one scale centred on 0; the judge's own
    perceptor's cell outlined solid, a pair that includes it dashed."""
    df = cells.assign(cell=cells["vqgan"] + " · " + cells["generator"].str.replace("+", " + "))
    df["label"] = df["z"].map(lambda v: "" if math.isnan(v) else f"{v:+.2f}")
    df["raw"] = df["similarity"].map("{:.4f}".format)
    limit = max(float(df["z"].abs().max()), 1.0) if df["z"].notna().any() else 1.0
    df["ink"] = ["white" if abs(v) > 0.6 * limit else "black" for v in df["z"].fillna(0)]
    rows = sorted(df["cell"].unique(), key=natural_key, reverse=True)
    judges = sorted(df["judge"].unique(), key=natural_key)
    fig = figure(title="similarity, z-scored within each judge",
                 x_range=judges, y_range=rows, height=max(HEIGHT, ROW * len(rows) + 90),
                 sizing_mode="stretch_width", x_axis_location="above", toolbar_location=None,
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


def _figure(row: pd.Series) -> str:
    if math.isnan(row["mean"]):
        return "–"
    text = f"{row['mean']:+.2f}"
    return text if math.isnan(row["low"]) else f"{text} [{row['low']:+.2f}, {row['high']:+.2f}]"


def preference_table(table: pd.DataFrame, by: str, label: str) -> str:
    """Markdown: one line per judge or VQGAN with its self-preference and interval."""
    lines = [f"| {label} | self-preference (judge SDs) | seeds |", "|---|---|---|"]
    lines += [f"| {r[by]} | {_figure(r)} | {int(r['seeds'])} |" for _, r in table.iterrows()]
    return "\n".join(lines)


def seeds_note(seeds: int) -> str:
    """What the interval rests on."""
    if seeds < 2:
        return ("**One seed per cell: no interval.** Each figure is a single run; list more seeds "
                "under `grid.seeds` in params.yaml for a mean with a 95 % interval.")
    return f"Mean over {seeds} seeds with a 95 % t-interval in brackets."


def bias_view(bias: pd.DataFrame, shown: pd.DataFrame) -> pn.Column | str:
    """The heatmap of the shown cells and the self-preference per judge and per shown VQGAN:
    how much more each judge likes the images its own perceptor guided than those guided by
    perceptors without it, in the judge's own spread (0 = no preference)."""
    pairs = set(zip(shown["vqgan"], shown["generator"]))
    cells = judged_cells(bias)
    cells = cells[[(v, g) in pairs for v, g in zip(cells["vqgan"], cells["generator"])]]
    if cells.empty:
        return "*No bias scores for the shown cells.*"
    prefs = self_preference(bias)
    if prefs.empty:
        parts = ["*No judge has a cell guided by its own perceptor alone, so there is no "
                 "self-preference to show.*"]
    else:
        per_judge = summary(prefs, "judge")
        per_vqgan = summary(prefs, "vqgan")
        parts = ["### Self-preference", seeds_note(int(per_judge["seeds"].max())),
                 preference_table(per_judge, "judge", "judge (over every VQGAN)"),
                 preference_table(per_vqgan[per_vqgan["vqgan"].isin(shown["vqgan"])], "vqgan",
                                  "VQGAN (over every judge)")]
    return pn.Column(heatmap(cells), pn.pane.Markdown("\n\n".join([LEGEND, *parts])),
                     sizing_mode="stretch_width")
