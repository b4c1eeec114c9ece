"""The dashboard app: a synced player over the catalog's grid, with filters, losses and scores.

    panel serve dashboard/app.py --args --root DIR [--scores DIR]
    python -m dashboard serve --root DIR [--port P]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script by `panel serve dashboard/app.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import panel as pn

from dashboard import plots
from dashboard.catalog import load_catalog, perceptor_names, select
from dashboard.grid import axis_options, grid_spec
from dashboard.player import GridPlayer
from dashboard.scores import STATS, load_scores, scores_dir
from dashboard.server import frame_url, mount_frames

TITLE = "VQGAN+CLIP bias dashboard"
pn.extension()


def served_frames(run: pd.Series) -> dict[str, list[str]]:
    """A run's frames as URLs on the server's static route."""
    return {"frames": [frame_url(f) for f in run.frames]}


def _checks(label: str, options: list[str]) -> pn.widgets.CheckBoxGroup:
    return pn.widgets.CheckBoxGroup(label=label, options=options, value=list(options))


def _summary(catalog: pd.DataFrame, shown: pd.DataFrame) -> str:
    incomplete = catalog[catalog["status"] != "complete"]
    text = f"**{len(shown)}** of {len(catalog)} runs shown · {len(incomplete)} incomplete"
    rows = "".join(f"\n| {r.run} | {r.reason} |" for r in incomplete.itertuples())
    return text + (f"\n\n| run | why incomplete |\n|---|---|{rows}" if rows else "")


def create_app(root: str | Path, scores: str | Path | None = None) -> pn.viewable.Viewable:
    """The dashboard for the runs under `root`; score panels where `scores` (default
    `<root>/../scores`) holds score files."""
    score_dir = scores_dir(root, scores)
    catalog = load_catalog(root, skip=[score_dir] if score_dir else [])
    playable = catalog[catalog["n_frames"] > 0]
    bias, stats = load_scores(score_dir)

    vqgans = _checks("VQGAN", sorted(playable["vqgan"].unique()))
    perceptors = _checks("Perceptors", perceptor_names(playable))
    experiments = _checks("Experiments", sorted(playable["experiment"].unique()))
    axes = axis_options(playable)
    rows = pn.widgets.Select(label="Rows", options=axes, value="vqgan")
    cols = pn.widgets.Select(label="Columns", options=axes, value="generator")
    swap = pn.widgets.Button(label="⇅ swap rows and columns")
    baseline = pn.widgets.Select(label="Baseline",
                                 options={"(none)": "", **{r: r for r in playable["run"]}})

    def swap_axes(_: object) -> None:
        rows.value, cols.value = cols.value, rows.value

    swap.on_click(swap_axes)
    shown = pn.bind(select, catalog, vqgans=vqgans, perceptors=perceptors, experiments=experiments)
    player = GridPlayer(grid=pn.bind(grid_spec, shown, rows=rows, cols=cols, frames=served_frames),
                        sizing_mode="stretch_width")
    baseline.link(player, value="baseline", bidirectional=True)

    panels: list = [player, pn.pane.Markdown(pn.bind(_summary, catalog, shown)),
                    pn.Column("## Loss", pn.bind(plots.loss_figure, shown))]
    if bias is not None:
        panels.append(pn.Column("## Bias matrix", pn.bind(plots.bias_figure, bias, shown)))
    if stats is not None:
        stat = pn.widgets.Select(label="Statistic", options=STATS, width=200)
        panels.append(pn.Column("## Image statistics", stat,
                                pn.bind(plots.stats_figure, stats, shown, stat),
                                pn.pane.HTML(pn.bind(plots.palettes_html, stats, shown))))
    sidebar = pn.Column(f"### {Path(root).resolve().name}", "#### Filters", vqgans, perceptors,
                        experiments, "#### Layout", rows, cols, swap, baseline, width=260)
    return pn.Row(sidebar, pn.Column(*panels, sizing_mode="stretch_width"),
                  sizing_mode="stretch_width")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="panel serve dashboard/app.py --args")
    parser.add_argument("--root", required=True, help="folder of run folders")
    parser.add_argument("--scores", help="folder of score files (default <root>/../scores)")
    return parser.parse_args(argv)


if pn.state.served:
    args = parse_args(sys.argv[1:])
    mount_frames(args.root)
    create_app(args.root, args.scores).servable(title=TITLE)
