"""The "What drives the look" panel: each measure's variance split into a share per factor (the
VQGAN, the perceptor set, each varied setting), their interactions and the residual
(experiments/effects/), as one stacked bar per measure with its intervals and a one-line reading,
bars and readings in one order. Picking a measure colours the grid's headers of each factor by
that measure's mean per level: a factor is the grid's axis of its name."""
from __future__ import annotations

import html
import json
import logging
from itertools import cycle
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, TapTool, Whisker
from bokeh.plotting import figure

from experiments.effects import PAIR, EffectsError, RunInfo, effects_of_runs, label, share_names
from experiments.effects.anova import INTERACTION, OTHER, RESIDUAL
from experiments.imagestats import DEFAULT_FACTOR
from experiments.scorefiles import BIAS_MATRIX, EFFECTS, read_csv, read_json

from .background import Waiting, signature, stamps
from .catalog import run_size
from .rows import BASE_FACTORS
from .state import RootState

log = logging.getLogger(__name__)
COLOURS = {"vqgan": "#1f77b4", "perceptor_set": "#ff7f0e", INTERACTION: "#2ca02c", OTHER: "#98df8a",
           RESIDUAL: "#c7c7c7"}
SETTING_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728")  # varied settings, in turn
ROW = 28  # px per bar
LEGEND_COLUMNS = 4  # entries per legend row above the bars
LEGEND_ROW = 24  # px per legend row
NONE = "(none)"
LEGEND = ("Each bar splits the variance of one run's measure across the grid: a share for each factor "
          "(the VQGAN, the perceptor set and each varied setting), the VQGAN × perceptor set "
          "interaction, the other interactions and the residual (seed-to-seed noise). Whiskers: the "
          "95 % interval of the VQGAN share (bootstrap over seeds). Click a bar, or pick a measure "
          "below, to colour the grid's headers of each factor by the measure's mean.")


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def catalog_runs(catalog: pd.DataFrame, root: Path) -> list[RunInfo]:
    """The catalog's runs as experiments/effects and experiments/fingerprints read them: with
    their cell, varied settings, VQGAN factor, runtime and frame size (each frame is checked
    against it before it is decoded)."""
    return [RunInfo(r.run, r.experiment, r.vqgan, r.perceptor_set,
                    None if pd.isna(r.seed) else int(r.seed), tuple(root / f for f in r.frames),
                    r.status, r.reason, cell=r.cell,
                    varied=tuple((k, str(v)) for k, v in r.factors.items() if k not in BASE_FACTORS),
                    factor=DEFAULT_FACTOR if pd.isna(r.vqgan_factor) else int(r.vqgan_factor),
                    seconds_per_step=_number(r.seconds_per_step), wall_time_s=_number(r.wall_time_s),
                    size=run_size(r))
            for r in catalog.itertuples()]


def shares_of(effects: dict[str, Any]) -> list[str]:
    """The shares of an effects document (older ones, of VQGAN and perceptor set alone, name none)."""
    return effects.get("shares") or share_names(effects.get("factors") or PAIR)


def colours(shares: Sequence[str]) -> dict[str, str]:
    """share -> colour: fixed for the VQGAN, perceptor set, interactions and residual, one of
    SETTING_COLOURS for each varied setting in turn."""
    others = cycle(SETTING_COLOURS)
    return {k: COLOURS.get(k) or next(others) for k in shares}


def measure_name(measure: str) -> str:
    """A measure as the readings spell it (`edge_density` -> `edge density`)."""
    return measure.replace("_", " ")


def ordered(effects: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The measures in the order bars and readings show them: by VQGAN share, largest first; those
    without shares last; ties by name."""
    return sorted(effects["measures"].items(),
                  key=lambda kv: (kv[1]["vqgan"] is None, -(kv[1]["vqgan"] or 0), kv[0]))


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
    """One row per measure (`ordered`): its name as the readings spell it, each share (missing as
    0) and its interval as text, the VQGAN share's interval, the reading."""
    rows = []
    for measure, r in ordered(effects):
        row = {"measure": measure, "name": measure_name(measure), "reading": r["reading"]}
        for k in shares_of(effects):
            row[k] = r[k] or 0.0
            interval = f" [{r['low'][k]:.0%}, {r['high'][k]:.0%}]" if r["low"] and r["low"][k] is not None else ""
            row[f"{k}_text"] = "–" if r[k] is None else f"{r[k]:.0%}{interval}"
        row["low"], row["high"] = ((r["low"]["vqgan"], r["high"]["vqgan"]) if r["low"] else (None, None))
        rows.append(row)
    return pd.DataFrame(rows)


def bars(effects: dict[str, Any], pick: Callable[[str], None]) -> figure:
    """The stacked bars of one experiment's measures, top to bottom in the readings' order; a click
    on a bar calls `pick(measure)`."""
    df = _bar_table(effects)
    shares, palette = shares_of(effects), colours(shares_of(effects))
    source = ColumnDataSource(df.to_dict("list"))
    legend_rows = -(-len(shares) // LEGEND_COLUMNS)
    fig = figure(y_range=list(df["name"])[::-1], x_range=(0, 1),
                 height=ROW * len(df) + 56 + LEGEND_ROW * legend_rows,
                 sizing_mode="stretch_width", toolbar_location=None, tools="hover,tap",
                 title=f"{effects['experiment']}: {effects['cells']} cells, {effects['seeds']} seed(s)",
                 tooltips=[("measure", "@name"), *((label(k), f"@{k}_text") for k in shares)])
    fig.hbar_stack(shares, y="name", height=0.7, source=source, color=[palette[k] for k in shares],
                   legend_label=[label(k) for k in shares])
    whiskers = ColumnDataSource(df.dropna(subset=["low"]).to_dict("list"))
    fig.add_layout(Whisker(source=whiskers, base="name", lower="low", upper="high", dimension="width",
                           line_color="black"))
    fig.legend.orientation, fig.legend.location = "horizontal", "top_center"
    fig.legend.nrows = legend_rows
    fig.legend.click_policy = "none"
    fig.add_layout(fig.legend[0], "above")
    fig.xaxis.axis_label = "share of the variance of one run"
    fig.select_one(TapTool).mode = "replace"
    source.selected.on_change("indices", lambda _, __, new: new and pick(df["measure"].iloc[new[0]]))
    return fig


def readings(effects: dict[str, Any]) -> str:
    """Markdown: the one-line readings (in the bars' order), what the grid lacks, and what was left out."""
    lines = [f"- {html.escape(r['reading'])}" for _, r in ordered(effects)]
    lines += [f"- *{html.escape(n)}*" for n in effects["notes"]]
    lines += [f"- left out: {html.escape(e['run'])} ({html.escape(e['reason'])})" for e in effects["excluded"]]
    return "\n".join(lines)


def head_colours(effects: list[dict[str, Any]], measure: str) -> dict[str, dict[str, dict[str, str]]]:
    """{factor: {header value: {colour, title}}}: each level's mean of `measure`, darker for
    higher, on its factor's colour (a factor is the grid's axis of its name: `vqgan`, `scenes`)."""
    heads: dict[str, dict[str, dict[str, str]]] = {}
    for doc in effects:
        result = doc["measures"].get(measure)
        palette = colours(shares_of(doc))
        for factor in doc.get("factors") or PAIR if result else ():
            means = {k: v for k, v in result["means"].get(factor, {}).items() if v is not None}
            if not means:
                continue
            lo, hi = min(means.values()), max(means.values())
            r, g, b = (int(palette[factor][i:i + 2], 16) for i in (1, 3, 5))
            heads.setdefault(factor, {}).update({
                level: {"colour": f"rgba({r},{g},{b},{0.15 + 0.7 * ((v - lo) / (hi - lo) if hi > lo else 0.5):.3f})",
                        "title": f"{measure_name(measure)}: {v:.4g}"} for level, v in means.items()})
    return heads


def effects_panel(effects: list[dict[str, Any]], paint: Callable[[dict], None]) -> pn.Column | None:
    """The panel; `paint(heads)` colours the player's headers (see `head_colours`)."""
    measures = list(dict.fromkeys(m for doc in effects for m, _ in ordered(doc)))
    if not measures:
        return None
    choice = pn.widgets.Select(label="Colour the grid's headers by", width=260,
                               options={NONE: NONE, **{measure_name(m): m for m in measures}})
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
        shares = shares_of(doc)
        palette = colours(shares)
        rows = []
        for _, r in _bar_table(doc).iterrows():
            heads = html.escape(json.dumps(head_colours([doc], r["measure"])))
            segments = "".join(f'<span style="width:{100 * r[k]:.2f}%;background:{palette[k]}" '
                               f'title="{html.escape(label(k))}: {r[f"{k}_text"]}"></span>' for k in shares)
            rows.append(f'<button class="dp-effect" data-heads="{heads}"><span class="dp-effect-name">'
                        f'{html.escape(r["name"])}</span><span class="dp-effect-bar">{segments}</span>'
                        f'<span class="dp-effect-reading">{html.escape(r["reading"])}</span></button>')
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in doc["notes"])
        legend = "".join(f'<span><i style="background:{palette[k]}"></i>{html.escape(label(k))}</span>'
                         for k in shares)
        blocks.append(f"<h3>{html.escape(doc['experiment'])}: {doc['cells']} cells, {doc['seeds']} seed(s)</h3>"
                      f'<div class="dp-effect-legend">{legend}</div>'
                      + "".join(rows) + (f"<ul>{notes}</ul>" if notes else ""))
    return EXPORT_TEMPLATE.format(blocks="".join(blocks), text=html.escape(LEGEND))


EXPORT_TEMPLATE = """<section id="dp-effects"><h2>What drives the look</h2><p>{text}</p>{blocks}</section>
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


def look_panels(state: RootState, catalog: pd.DataFrame, player: Any, waiting: Waiting) -> list:
    """The app's panel for the runs of `catalog`, colouring `player`'s headers: its heading at
    once, its bars once `load_effects` is done in the background (hidden where no experiment has
    a measure)."""
    box = pn.Column("## What drives the look", pn.pane.Markdown("*Measuring the final frames…*"),
                    sizing_mode="stretch_width")
    key = ("effects", signature(catalog), stamps(state.scores, [EFFECTS, BIAS_MATRIX]))
    future = state.background.submit(key, lambda: load_effects(state.scores, catalog, state.root))

    def show(results: list[Any]) -> None:
        panel = effects_panel(results[0] or [], lambda heads: setattr(player, "heads", heads))
        if panel is None:
            box.visible = False
        else:
            box.objects = panel.objects

    waiting.then("effects", [future], show)
    return [box]
