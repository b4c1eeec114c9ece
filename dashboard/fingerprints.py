"""Fingerprints in the dashboard and the export: what each VQGAN, perceptor set and varied setting
does to the picture (experiments/fingerprints.py), per experiment of the catalog's complete runs.

- a card per level on the grid's row and column headers (palette swatch, spectrum sparkline,
  grid artifact, seconds per step), drawn by the player from `prints_spec`'s `cards`;
- a distance heatmap per factor and measure (palette, spectrum, CMMD per judge), plain HTML
  (`heatmaps_html`) in the app and the export alike;
- each run's own palette and spectrum (`runs`), and the distances between levels, from which the
  player's A/B difference view gives the one-number distances between the two runs.

The app computes them in the background (`Background`, one job per experiment, kept while its
runs are unchanged) and shows them when ready; the export waits for them.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import panel as pn

from experiments.effects import EffectsError, label
from experiments.fingerprints import fingerprints, level_fingerprint
from experiments.scorefiles import CMMD, read_json

from .background import Waiting, signature, stamps
from .effects import catalog_runs
from .state import RootState

MEASURES = {"palette": "palette · EMD, ΔE*ab", "spectrum": "spectrum · RMS, log10 power"}
LOW, HIGH = (247, 251, 255), (8, 48, 107)  # heatmap colours of the smallest and largest distance
RUN_KEYS = ("palette", "spectrum", "spectral_slope", "grid_artifact")  # a run's own fingerprint


def experiment_prints(rows: pd.DataFrame, root: Path, scores: Path | None) -> dict[str, Any]:
    """The fingerprints of one experiment's catalog rows (`doc`: experiments.fingerprints, CMMD
    merged in from `scores`' cmmd.json; None where no run can be fingerprinted, `reason` saying
    why) and each fingerprinted run's own palette, spectrum, slope and grid artifact (`runs`)."""
    experiment = str(rows["experiment"].iat[0])
    runs = catalog_runs(rows, root)
    try:
        doc = fingerprints(runs, experiment, "final", (read_json(scores, CMMD) or {}).get("cmmd"))
    except EffectsError as e:
        return {"experiment": experiment, "doc": None, "reason": str(e), "runs": {}}
    left = {e["run"] for e in doc["excluded"]}
    own = {r.name: level_fingerprint([r], "final") for r in runs if r.name not in left}
    return {"experiment": experiment, "doc": doc, "reason": "",
            "runs": {name: {k: fp[k] for k in RUN_KEYS} for name, fp in own.items()}}


def prints_key(state: RootState, rows: pd.DataFrame) -> tuple:
    """The key of an experiment's fingerprints: its runs as they are, and the CMMD file."""
    return "fingerprints", signature(rows), stamps(state.scores, [CMMD])


def requested(state: RootState, catalog: pd.DataFrame, experiments: Iterable[str]) -> list:
    """The futures of the fingerprints of `experiments` (all of each one's runs in `catalog`)."""
    futures = []
    for experiment in sorted(set(experiments)):
        rows = catalog[catalog["experiment"] == experiment]
        futures.append(state.background.submit(prints_key(state, rows),
                                               lambda rows=rows: experiment_prints(rows, state.root, state.scores)))
    return futures


def prints_spec(results: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """What the player draws of the fingerprints: `cards` {factor: {level: [card, one per
    experiment]}}, each run's own fingerprint (`runs`) and the distances between levels
    (`distances`: {experiment: {factor: {measure: {A: {B: d}}}}})."""
    cards: dict[str, dict[str, list[dict[str, Any]]]] = {}
    runs: dict[str, Any] = {}
    distances: dict[str, Any] = {}
    for result in results:
        if not result or result["doc"] is None:
            continue
        doc = result["doc"]
        for factor, levels in doc["levels"].items():
            for level, fp in levels.items():
                cards.setdefault(factor, {}).setdefault(level, []).append({
                    "experiment": doc["experiment"], "runs": fp["runs"],
                    "palette": [[c["colour"], c["weight"]] for c in fp["palette"]], "spectrum": fp["spectrum"],
                    "slope": fp["spectral_slope"], "grid": fp["grid_artifact"],
                    "seconds_per_step": fp["seconds_per_step"], "wall_time_s": fp["wall_time_s"]})
        runs.update(result["runs"])
        distances[doc["experiment"]] = doc["distances"]
    return {"cards": cards, "runs": runs, "distances": distances, "factor_labels": {f: label(f) for f in cards}}


def _colour(t: float) -> str:
    return "#" + "".join(f"{round(lo + (hi - lo) * t):02x}" for lo, hi in zip(LOW, HIGH))


def heatmap_table(title: str, matrix: dict[str, dict[str, float | None]]) -> str:
    """One distance matrix {A: {B: d}} as an HTML table, each cell coloured from the smallest
    distance (light) to the largest (dark); the diagonal and missing values blank."""
    levels = list(matrix)
    values = [d for row in matrix.values() for d in row.values() if d is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
    head = "".join(f"<th>{html.escape(b)}</th>" for b in levels)
    rows = []
    for a in levels:
        cells = []
        for b in levels:
            d = matrix[a].get(b)
            if d is None:
                cells.append("<td></td>")
                continue
            t = (d - lo) / (hi - lo) if hi > lo else 0.5
            cells.append(f'<td style="background:{_colour(t)};color:{"#fff" if t > 0.55 else "#000"}" '
                         f'title="{html.escape(a)} ↔ {html.escape(b)}: {d:.4g}">{d:.3g}</td>')
        rows.append(f"<tr><th>{html.escape(a)}</th>{''.join(cells)}</tr>")
    return (f'<table class="dp-heat"><caption>{html.escape(title)}</caption><tr><th></th>{head}</tr>'
            f"{''.join(rows)}</table>")


def heatmaps_html(results: Iterable[dict[str, Any] | None]) -> str:
    """Per experiment and factor, a heatmap of the distances between its levels for each measure
    (palette, spectrum, CMMD per judge), the runs left out named; "" where there are none."""
    blocks = []
    for result in results:
        if not result:
            continue
        if result["doc"] is None:
            blocks.append(f"<p><i>{html.escape(result['experiment'])}: no fingerprints "
                          f"({html.escape(result['reason'])})</i></p>")
            continue
        doc = result["doc"]
        parts = [f"<h3>{html.escape(doc['experiment'])}: {doc['runs']} runs, final frames</h3>"]
        for factor in doc["factors"]:
            measures = doc["distances"][factor]
            tables = [heatmap_table(title, measures[m]) for m, title in MEASURES.items()]
            tables += [heatmap_table(f"CMMD · {judge}", matrix) for judge, matrix in sorted(measures.get("cmmd", {}).items())]
            parts.append(f"<h4>{html.escape(label(factor))}: distances between its levels</h4>"
                         f"<div class='dp-heatmaps'>{''.join(tables)}</div>")
        left = "".join(f"<li>{html.escape(e['run'])}: {html.escape(e['reason'])}</li>" for e in doc["excluded"])
        blocks.append("".join(parts) + (f"<details><summary>{len(doc['excluded'])} runs left out</summary>"
                                        f"<ul>{left}</ul></details>" if left else ""))
    return f'<section class="dp-prints">{"".join(blocks)}</section>{STYLE}' if blocks else ""


STYLE = """<style>
.dp-prints { font: 12px sans-serif; }
.dp-heatmaps { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.dp-heat { border-collapse: collapse; }
.dp-heat caption { font-weight: bold; text-align: left; padding-bottom: 2px; }
.dp-heat th { font-weight: normal; padding: 1px 4px; text-align: right; white-space: nowrap; }
.dp-heat tr:first-child th { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
.dp-heat td { min-width: 34px; height: 20px; text-align: center; font-size: 10px; }
</style>"""
LEGEND = ("Cards on the grid's headers: each level's palette (its dominant colours, by weight), its "
          "power spectrum (log power against frequency), its grid artifact (1: no code grid shows) "
          "and seconds per step. Heatmaps: the distance between every two levels of a factor; darker "
          "is farther. Pick a cell and pin a baseline, then *|A − B|* under *compare*, for the two "
          "runs' pixel difference and distances.")


def fingerprints_html(results: list[dict[str, Any] | None]) -> str:
    """The export's fingerprints section: heading, legend and heatmaps ("" where none)."""
    heatmaps = heatmaps_html(results)
    return (f"<section id='dp-fingerprints' style='font: 13px sans-serif'><h2>Fingerprints</h2>"
            f"<p>{html.escape(LEGEND).replace('*', '')}</p>{heatmaps}</section>" if heatmaps else "")


def fingerprint_panel(state: RootState, live: Any, shown: Any, player: Any, waiting: Waiting) -> pn.Column:
    """The app's fingerprints: the heading at once; for the experiments of the `shown` runs (all
    the runs of each in `live.catalog`), the player's cards and difference distances and the
    heatmaps once the background has them."""
    heatmaps = pn.pane.HTML("<p><i>Measuring the final frames…</i></p>", sizing_mode="stretch_width")

    def show(results: list[dict[str, Any] | None]) -> None:
        player.prints = prints_spec(results)
        heatmaps.object = heatmaps_html(results) or "<p><i>No experiment shown has a complete run.</i></p>"

    def request(df: pd.DataFrame) -> None:
        waiting.then("fingerprints", requested(state, live.catalog, df["experiment"]), show)

    pn.bind(request, shown, watch=True)
    request(shown())
    return pn.Column("## Fingerprints", pn.pane.Markdown(LEGEND), heatmaps, sizing_mode="stretch_width")
