"""Bokeh figures for the app: loss curves, image statistics, palettes, and the step marker the
player moves (the bias heatmap is dashboard/bias.py)."""
from __future__ import annotations

import html
import math
import re
from itertools import cycle

import pandas as pd
from bokeh.models import HoverTool, Legend, LegendItem, Span
from bokeh.palettes import Category20_20
from bokeh.plotting import figure

from .grid import title

HEIGHT = 320
LEGEND_ROW = 17  # px per legend row below a chart
LEGEND_COLUMNS = 3
HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with `weight` on the past (0: the values as they are), bias
    corrected so the curve starts at the first value; missing values stay missing."""
    out, mean, norm = [], 0.0, 0.0
    for v in values:
        if v is None or v != v:
            out.append(None)
            continue
        mean, norm = weight * mean + (1 - weight) * v, weight * norm + (1 - weight)
        out.append(mean / norm if norm else v)
    return out


def _lines(fig: figure, curves: list[tuple[str, list[float], list[float]]]) -> figure:
    """One line per curve, each named in a legend below the chart (every curve, in columns;
    click an entry to hide its line) and by the hover tool."""
    items = []
    for (name, xs, ys), colour in zip(curves, cycle(Category20_20)):
        line = fig.line(xs, ys, line_color=colour, line_width=2, name=name)
        items.append(LegendItem(label=name, renderers=[line]))
    ncols = min(LEGEND_COLUMNS, len(items))
    fig.add_layout(Legend(items=items, ncols=ncols, click_policy="hide",
                          label_text_font_size="10px", glyph_height=10, spacing=0,
                          padding=4, margin=4), "below")
    fig.height = HEIGHT + LEGEND_ROW * math.ceil(len(items) / ncols)
    fig.add_tools(HoverTool(tooltips=[("run", "$name"), ("step", "$x{0}"), ("value", "$y{0.000}")]))
    return fig


def step_marker(fig: figure, step: int | None) -> Span:
    """A vertical line at `step` on `fig` (hidden where None); move it by setting `location`."""
    span = Span(location=step or 0, dimension="height", line_color="#444", line_dash="dashed",
                line_width=1, visible=step is not None)
    fig.add_layout(span)
    return span


def loss_figure(shown: pd.DataFrame, names: dict[str, str] | None = None,
                smoothing: float = 0.0) -> figure | str:
    """The total loss over steps of every shown run that logged one, overlaid, named by
    `names` (run -> label), smoothed by an EMA of weight `smoothing`."""
    names = names or {}
    curves = [
        (names.get(run.run, title(run, False)), run.losses["step"],
         smooth(run.losses["total"], smoothing))
        for run in shown.itertuples()
        if run.losses and {"step", "total"} <= set(run.losses)
    ]
    if not curves:
        return "*No loss logged by the shown runs (pytti runs log none).*"
    fig = figure(x_axis_label="step", y_axis_label="total loss", height=HEIGHT,
                 sizing_mode="stretch_width", tools="pan,wheel_zoom,box_zoom,reset")
    return _lines(fig, curves)


def stats_figure(stats: pd.DataFrame, shown: pd.DataFrame, stat: str,
                 names: dict[str, str] | None = None) -> figure | str:
    """One image statistic over steps for each shown cell, named by `names` (run -> label)."""
    df = stats[stats["cell"].isin(shown["cell"])].sort_values("step")
    if df.empty:
        return "*No image statistics for the shown cells.*"
    by_cell = {cell: (names or {}).get(run) for cell, run in zip(shown["cell"], shown["run"])}
    curves = [(by_cell.get(cell) or f"{g.vqgan.iat[0]} · {g.perceptor_set.iat[0]}",
               g["step"].tolist(), g[stat].tolist())
              for cell, g in df.groupby("cell", sort=True)]
    fig = figure(title=stat.replace("_", " "), x_axis_label="step", y_axis_label=stat,
                 height=HEIGHT, sizing_mode="stretch_width", tools="pan,wheel_zoom,box_zoom,reset")
    return _lines(fig, curves)


def palettes_html(stats: pd.DataFrame, shown: pd.DataFrame, step: int | None = None) -> str:
    """Each shown cell's palette at `step` (its last scored step at or before it; the last
    where None), as swatches."""
    df = stats[stats["cell"].isin(shown["cell"])].sort_values("step")
    if step is not None:
        df = df[df["step"] <= step]
    last = df.groupby("cell", sort=True).tail(1)
    items = "".join(
        f"<div style='white-space:nowrap'>{html.escape(r.vqgan)} · {html.escape(r.perceptor_set)}"
        f" <small>step {r.step}</small> "
        + "".join(f'<span title="{c}" style="display:inline-block;width:16px;height:16px;'
                  f'vertical-align:middle;background:{c}"></span>'
                  for c in str(r.palette).split(";") if HEX.match(c))
        + "</div>"
        for r in last.itertuples()
    )
    return (f"<div class='dp-palettes' style='display:flex;flex-wrap:wrap;gap:4px 16px'>{items}"
            "</div>" if items else "")
