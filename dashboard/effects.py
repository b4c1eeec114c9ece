"""The "What drives the look" panel: each measure's variance split into the VQGAN's, the
perceptor set's, their interaction's and the residual share (experiments/effects.py), as one
stacked bar per measure with its intervals and a one-line reading. Picking a measure colours the
grid's VQGAN and perceptor set headers by that measure's mean per model: the analysis' factors
are the grid's axes of the same names."""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, TapTool, Whisker
from bokeh.plotting import figure

from experiments.effects import FACTORS, LABELS, SHARES, EffectsError, RunInfo, effects_of_runs
from experiments.scorefiles import BIAS_MATRIX, EFFECTS, read_csv, read_json

log = logging.getLogger(__name__)
COLOURS = {"vqgan": "#1f77b4", "perceptor_set": "#ff7f0e", "interaction": "#2ca02c", "residual": "#c7c7c7"}
HEAD_RGB = {"vqgan": (31, 119, 180), "perceptor_set": (255, 127, 14)}
ROW = 28  # px per bar
NONE = "(none)"
LEGEND = ("Each bar splits the variance of one run's measure across the grid: the VQGAN's share, "
          "the perceptor set's, their interaction and the residual (seed-to-seed noise). "
          "Whiskers: the 95 % interval of the VQGAN share (bootstrap over seeds). Click a bar, or "
          "pick a measure below, to colour the grid's VQGAN and perceptor set headers by its mean.")


def catalog_runs(catalog: pd.DataFrame, root: Path) -> list[RunInfo]:
    """The catalog's runs as experiments/effects.py reads them."""
    return [RunInfo(r.run, r.experiment, r.vqgan, r.perceptor_set,
                    None if pd.isna(r.seed) else int(r.seed), tuple(root / f for f in r.frames),
                    r.status, r.reason) for r in catalog.itertuples()]


def load_effects(score_dir: Path | None, catalog: pd.DataFrame, root: str | Path) -> list[dict[str, Any]]:
    """The effects stage's effects.json where `score_dir` holds a readable one, else the effects
    of each experiment of the catalog (final frames, similarities of bias_matrix.csv)."""
    effects = read_json(score_dir, EFFECTS)
    if effects is not None:
        return [effects]
    runs = catalog_runs(catalog, Path(root).resolve())
    bias = read_csv(score_dir, BIAS_MATRIX)
    found = []
    for experiment in sorted(set(catalog["experiment"])):
        try:
            found.append(effects_of_runs(runs, experiment, bias=bias))
        except EffectsError as e:
            log.info("no effects for experiment %s: %s", experiment, e)
    return found


def _bar_table(effects: dict[str, Any]) -> pd.DataFrame:
    """One row per measure with shares (missing as 0), intervals as text, the reading."""
    rows = []
    for measure, r in effects["measures"].items():
        row = {"measure": measure, "reading": r["reading"]}
        for k in SHARES:
            row[k] = r[k] or 0.0
            interval = f" [{r['low'][k]:.0%}, {r['high'][k]:.0%}]" if r["low"] and r["low"][k] is not None else ""
            row[f"{k}_text"] = "–" if r[k] is None else f"{r[k]:.0%}{interval}"
        row["low"], row["high"] = ((r["low"]["vqgan"], r["high"]["vqgan"]) if r["low"] else (None, None))
        rows.append(row)
    return pd.DataFrame(rows).sort_values("vqgan")


def bars(effects: dict[str, Any], pick: Callable[[str], None]) -> figure:
    """The stacked bars of one experiment's measures; a click on a bar calls `pick(measure)`."""
    df = _bar_table(effects)
    source = ColumnDataSource(df.to_dict("list"))
    fig = figure(y_range=list(df["measure"]), x_range=(0, 1), height=ROW * len(df) + 80,
                 sizing_mode="stretch_width", toolbar_location=None, tools="hover,tap",
                 title=f"{effects['experiment']}: {effects['cells']} cells, {effects['seeds']} seed(s)",
                 tooltips=[("measure", "@measure"), *((LABELS[k], f"@{k}_text") for k in SHARES)])
    fig.hbar_stack(list(SHARES), y="measure", height=0.7, source=source, color=[COLOURS[k] for k in SHARES],
                   legend_label=[LABELS[k] for k in SHARES])
    whiskers = ColumnDataSource(df.dropna(subset=["low"]).to_dict("list"))
    fig.add_layout(Whisker(source=whiskers, base="measure", lower="low", upper="high", dimension="width",
                           line_color="black"))
    fig.legend.orientation, fig.legend.location = "horizontal", "top_center"
    fig.legend.click_policy = "none"
    fig.add_layout(fig.legend[0], "above")
    fig.xaxis.axis_label = "share of the variance of one run"
    fig.select_one(TapTool).mode = "replace"
    source.selected.on_change("indices", lambda _, __, new: new and pick(df["measure"].iloc[new[0]]))
    return fig


def readings(effects: dict[str, Any]) -> str:
    """Markdown: the one-line readings, what the grid lacks, and what was left out."""
    ordered = sorted(effects["measures"].values(), key=lambda r: -(r["vqgan"] or -1))
    lines = [f"- {html.escape(r['reading'])}" for r in ordered]
    lines += [f"- *{html.escape(n)}*" for n in effects["notes"]]
    lines += [f"- left out: {html.escape(e['run'])} ({html.escape(e['reason'])})" for e in effects["excluded"]]
    return "\n".join(lines)


def head_colours(effects: list[dict[str, Any]], measure: str) -> dict[str, dict[str, dict[str, str]]]:
    """{axis: {header value: {colour, title}}}: each VQGAN's and perceptor set's mean of
    `measure`, darker for higher, on that factor's colour (a factor is the grid's axis of its
    name)."""
    heads: dict[str, dict[str, dict[str, str]]] = {}
    for doc in effects:
        result = doc["measures"].get(measure)
        for factor in FACTORS if result else ():
            means = {k: v for k, v in result["means"][factor].items() if v is not None}
            if not means:
                continue
            lo, hi = min(means.values()), max(means.values())
            r, g, b = HEAD_RGB[factor]
            heads.setdefault(factor, {}).update({
                level: {"colour": f"rgba({r},{g},{b},{0.15 + 0.7 * ((v - lo) / (hi - lo) if hi > lo else 0.5):.3f})",
                        "title": f"{measure.replace('_', ' ')}: {v:.4g}"} for level, v in means.items()})
    return heads


def effects_panel(effects: list[dict[str, Any]], paint: Callable[[dict], None]) -> pn.Column | None:
    """The panel; `paint(heads)` colours the player's headers (see `head_colours`)."""
    measures = list(dict.fromkeys(m for doc in effects for m in doc["measures"]))
    if not measures:
        return None
    choice = pn.widgets.Select(label="Colour the grid's headers by", options=[NONE, *measures], width=260)
    choice.param.watch(lambda e: paint({} if e.new == NONE else head_colours(effects, e.new)), "value")

    def pick(measure: str) -> None:
        choice.value = measure

    parts: list = [pn.pane.Markdown(LEGEND)]
    for doc in effects:
        parts += [bars(doc, pick), pn.pane.Markdown(readings(doc))]
    return pn.Column("## What drives the look", *parts, choice, sizing_mode="stretch_width")


def effects_html(effects: list[dict[str, Any]]) -> str:
    """The panel for the static export: CSS stacked bars, the readings, and a click on a bar
    colouring the player's headers (`window.gridPlayer.paintHeads`)."""
    if not any(doc["measures"] for doc in effects):
        return ""
    blocks = []
    for doc in effects:
        rows = []
        for _, r in _bar_table(doc).iloc[::-1].iterrows():
            heads = html.escape(json.dumps(head_colours([doc], r["measure"])))
            segments = "".join(f'<span style="width:{100 * r[k]:.2f}%;background:{COLOURS[k]}" '
                               f'title="{LABELS[k]}: {r[f"{k}_text"]}"></span>' for k in SHARES)
            rows.append(f'<button class="dp-effect" data-heads="{heads}"><span class="dp-effect-name">'
                        f'{html.escape(r["measure"])}</span><span class="dp-effect-bar">{segments}</span>'
                        f'<span class="dp-effect-reading">{html.escape(r["reading"])}</span></button>')
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in doc["notes"])
        blocks.append(f"<h3>{html.escape(doc['experiment'])}: {doc['cells']} cells, {doc['seeds']} seed(s)</h3>"
                      + "".join(rows) + (f"<ul>{notes}</ul>" if notes else ""))
    legend = "".join(f'<span><i style="background:{COLOURS[k]}"></i>{LABELS[k]}</span>' for k in SHARES)
    return EXPORT_TEMPLATE.format(legend=legend, blocks="".join(blocks), text=html.escape(LEGEND))


EXPORT_TEMPLATE = """<section id="dp-effects"><h2>What drives the look</h2><p>{text}</p>
<div class="dp-effect-legend">{legend}</div>{blocks}</section>
<style>
#dp-effects {{ font: 13px sans-serif; max-width: 900px; }}
.dp-effect {{ display: flex; gap: 8px; align-items: center; width: 100%; border: 0; background: none;
  padding: 2px; cursor: pointer; font: inherit; text-align: left; }}
.dp-effect:hover, .dp-effect.dp-on {{ background: #eef; }}
.dp-effect-name {{ width: 160px; }}
.dp-effect-bar {{ display: flex; flex: 1; height: 16px; background: #eee; }}
.dp-effect-reading {{ width: 260px; color: #444; }}
.dp-effect-legend span {{ margin-right: 12px; }}
.dp-effect-legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
</style>
<script>
for (const button of document.querySelectorAll(".dp-effect")) {{
  button.addEventListener("click", () => {{
    const on = !button.classList.contains("dp-on");
    document.querySelectorAll(".dp-effect").forEach((b) => b.classList.remove("dp-on"));
    button.classList.toggle("dp-on", on);
    window.gridPlayer.paintHeads(on ? JSON.parse(button.dataset.heads) : {{}});
  }});
}}
</script>
"""


def look_panels(score_dir: Path | None, catalog: pd.DataFrame, root: str | Path, player: Any) -> list:
    """The app's panel (none where no experiment has a measure), colouring `player`'s headers."""
    panel = effects_panel(load_effects(score_dir, catalog, root), lambda heads: setattr(player, "heads", heads))
    return [] if panel is None else [panel]
