"""Bokeh figures for the app: loss curves, the bias-matrix heatmap, image statistics, palettes."""
from __future__ import annotations

import html
import re
from itertools import cycle

import pandas as pd
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.palettes import Category20_20, Viridis256
from bokeh.plotting import figure
from bokeh.transform import linear_cmap

from .grid import natural_key, title

HEIGHT = 320
HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def _lines(fig: figure, curves: list[tuple[str, list[float], list[float]]]) -> figure:
    legend = len(curves) <= 12  # beyond that, the hover tool names the curves
    for (name, xs, ys), colour in zip(curves, cycle(Category20_20)):
        fig.line(xs, ys, line_color=colour, line_width=2, name=name,
                 **({"legend_label": name} if legend else {}))
    fig.add_tools(HoverTool(tooltips=[("run", "$name"), ("step", "$x{0}"), ("value", "$y{0.000}")]))
    if fig.legend:
        fig.legend.location, fig.legend.label_text_font_size = "top_right", "9px"
    return fig


def loss_figure(shown: pd.DataFrame) -> figure | str:
    """The total loss over steps of every shown run that logged one, overlaid."""
    curves = [
        (title(run, False), run.losses["step"], run.losses["total"]) for run in shown.itertuples()
        if run.losses and {"step", "total"} <= set(run.losses)
    ]
    if not curves:
        return "*No loss logged by the shown runs (pytti runs log none).*"
    fig = figure(x_axis_label="step", y_axis_label="total loss", height=HEIGHT,
                 sizing_mode="stretch_width", tools="pan,wheel_zoom,box_zoom,reset")
    return _lines(fig, curves)


def bias_figure(bias: pd.DataFrame, shown: pd.DataFrame) -> figure | str:
    """Heatmap of the mean similarity each judge perceptor gives each shown cell's frames."""
    pairs = set(zip(shown["vqgan"], shown["generator"]))
    df = bias[[(v, g) in pairs for v, g in zip(bias["vqgan"], bias["generator"])]].copy()
    if df.empty:
        return "*No bias scores for the shown cells.*"
    df["cell"] = df["vqgan"] + " · " + df["generator"].str.replace("+", " + ")
    df["label"] = df["similarity"].map("{:.3f}".format)
    low, high = df["similarity"].min(), df["similarity"].max()
    df["ink"] = ["black" if s > (low + high) / 2 else "white" for s in df["similarity"]]
    cells = sorted(df["cell"].unique(), key=natural_key, reverse=True)
    judges = sorted(df["judge"].unique(), key=natural_key)
    fig = figure(title="mean CLIP similarity of each cell's frames under each judge",
                 x_range=judges, y_range=cells,
                 height=max(HEIGHT, 24 * len(cells) + 80), sizing_mode="stretch_width",
                 x_axis_location="above", tools="hover", toolbar_location=None,
                 tooltips=[("cell", "@cell"), ("judge", "@judge"), ("similarity", "@label")])
    source = ColumnDataSource(df.to_dict("list"))
    cmap = linear_cmap("similarity", Viridis256, low, high)
    fig.rect("judge", "cell", 1, 1, source=source, fill_color=cmap, line_color=None)
    fig.text("judge", "cell", text="label", source=source, text_align="center",
             text_baseline="middle", text_font_size="10px", text_color="ink")
    fig.grid.visible = False
    fig.axis.major_tick_line_color = None
    return fig


def stats_figure(stats: pd.DataFrame, shown: pd.DataFrame, stat: str) -> figure | str:
    """One image statistic over steps for each shown cell."""
    df = stats[stats["cell"].isin(shown["cell"])].sort_values("step")
    if df.empty:
        return "*No image statistics for the shown cells.*"
    curves = [(f"{g.vqgan.iat[0]} · {g.generator.iat[0]}", g["step"].tolist(), g[stat].tolist())
              for _, g in df.groupby("cell", sort=True)]
    fig = figure(title=stat.replace("_", " "), x_axis_label="step", y_axis_label=stat,
                 height=HEIGHT, sizing_mode="stretch_width", tools="pan,wheel_zoom,box_zoom,reset")
    return _lines(fig, curves)


def palettes_html(stats: pd.DataFrame, shown: pd.DataFrame) -> str:
    """Each shown cell's palette at its last scored step, as swatches."""
    last = (stats[stats["cell"].isin(shown["cell"])].sort_values("step")
            .groupby("cell", sort=True).tail(1))
    rows = "".join(
        f"<tr><td>{html.escape(r.vqgan)} · {html.escape(r.generator)}</td><td>"
        + "".join(f'<span title="{c}" style="display:inline-block;width:16px;height:16px;'
                  f'background:{c}"></span>' for c in str(r.palette).split(";") if HEX.match(c))
        + "</td></tr>"
        for r in last.itertuples()
    )
    return f"<table class='dp-palettes'>{rows}</table>" if rows else ""
