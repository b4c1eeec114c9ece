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
import param
from bokeh.models import Span

from dashboard import plots
from dashboard.bias import bias_view
from dashboard.catalog import perceptor_names, select
from dashboard.context import cell_context, labels, slot_tags
from dashboard.grid import axis_options, grid_spec
from dashboard.live import current_catalog
from dashboard.player import GridPlayer
from dashboard.scores import STATS, load_scores, scores_dir
from dashboard.frames import frame_url, mount_frames

TITLE = "VQGAN+CLIP bias dashboard"
POLL_MS = 2000  # how often an open page looks for new frames and runs (a few stat calls)
SIDEBAR_WIDTH = 250
pn.extension()


class Live(param.Parameterized):
    """The catalog as last read; the poller replaces it when runs or frames change."""

    catalog = param.DataFrame()


def served_frames(run: pd.Series) -> dict[str, list[str]]:
    """A run's frames as URLs on the server's static route."""
    return {"frames": [frame_url(f) for f in run.frames]}


def player_grid(shown: pd.DataFrame, rows: str, cols: str) -> dict:
    """The player's grid spec for the shown runs: served frames plus each cell's context."""
    tags = slot_tags(shown)
    return grid_spec(shown, rows, cols,
                     lambda run: {**served_frames(run), **cell_context(run, tags.get(run.run))})


def signature(catalog: pd.DataFrame) -> list[tuple]:
    """What the page shows of a catalog: the runs, their frame counts and status."""
    return list(zip(catalog["run"], catalog["n_frames"], catalog["status"]))


def _checks(label: str, options: list[str]) -> pn.widgets.CheckBoxGroup:
    return pn.widgets.CheckBoxGroup(label=label, options=options, value=list(options),
                                    sizing_mode="stretch_width")


def _update_checks(checks: pn.widgets.CheckBoxGroup, options: list[str]) -> None:
    """New options, ticked; those the user unticked stay unticked."""
    new = [o for o in options if o not in checks.options]
    checks.param.update(options=options,
                        value=[v for v in checks.value if v in options] + new)


def _summary(catalog: pd.DataFrame, shown: pd.DataFrame) -> str:
    incomplete = catalog[catalog["status"] != "complete"]
    text = f"**{len(shown)}** of {len(catalog)} runs shown · {len(incomplete)} incomplete"
    rows = "".join(f"\n| {r.run} | {r.reason} |" for r in incomplete.itertuples())
    return text + (f"\n\n| run | why incomplete |\n|---|---|{rows}" if rows else "")


def _sidebar_toggle(sidebar: pn.Column) -> pn.widgets.Button:
    """A button that shows or hides the sidebar in the browser, without a round trip."""
    toggle = pn.widgets.Button(label="☰ sidebar", width=90)
    toggle.js_on_click(args={"sidebar": sidebar}, code="sidebar.visible = !sidebar.visible")
    return toggle


def _sync_url(widgets: dict[str, pn.widgets.Widget], player: GridPlayer) -> None:
    """Keep filters, axes, step and selection in the page's URL (query string)."""
    if pn.state.location is None:
        return
    for name, widget in widgets.items():
        pn.state.location.sync(widget, {"value": name})
    pn.state.location.sync(player, {"step": "step", "selected": "selected",
                                     "baseline": "baseline"})


def create_app(root: str | Path, scores: str | Path | None = None,
               poll_ms: int = POLL_MS) -> pn.viewable.Viewable:
    """The dashboard for the runs under `root`; score panels where `scores` (default
    `<root>/../scores`) holds score files. A served page re-reads the catalog every `poll_ms`."""
    score_dir = scores_dir(root, scores)
    skip = [score_dir] if score_dir else []
    live = Live(catalog=current_catalog(root, skip))
    playable = live.catalog[live.catalog["n_frames"] > 0]
    bias, stats = load_scores(score_dir)

    vqgans = _checks("VQGAN", sorted(playable["vqgan"].unique()))
    perceptors = _checks("Perceptors", perceptor_names(playable))
    experiments = _checks("Experiments", sorted(playable["experiment"].unique()))
    axes = axis_options(playable)
    rows = pn.widgets.Select(label="Rows", options=axes, value="vqgan", sizing_mode="stretch_width")
    cols = pn.widgets.Select(label="Columns", options=axes, value="generator",
                             sizing_mode="stretch_width")
    swap = pn.widgets.Button(label="⇅ swap rows and columns", sizing_mode="stretch_width")
    baseline = pn.widgets.Select(label="Baseline", sizing_mode="stretch_width",
                                 options={"(none)": "", **{r: r for r in playable["run"]}})

    def swap_axes(_: object) -> None:
        rows.value, cols.value = cols.value, rows.value

    swap.on_click(swap_axes)
    shown = pn.bind(select, live.param.catalog, vqgans=vqgans, perceptors=perceptors,
                    experiments=experiments)
    player = GridPlayer(grid=pn.bind(player_grid, shown, rows=rows, cols=cols),
                        sizing_mode="stretch_width")
    baseline.link(player, value="baseline", bidirectional=True)
    markers: dict[str, Span] = {}

    def current_step() -> int | None:
        steps = player.grid["steps"]
        return steps[player.step] if 0 <= player.step < len(steps) else None

    def marked(kind: str, fig: object) -> object:
        if not isinstance(fig, str):
            markers[kind] = plots.step_marker(fig, current_step())
        return fig

    def move_markers(*_: object) -> None:
        step = current_step()
        for span in markers.values():
            span.location, span.visible = step or 0, step is not None

    player.param.watch(move_markers, ["step"])
    smoothing = pn.widgets.FloatSlider(label="Smoothing", start=0, end=0.99, step=0.01, value=0,
                                       width=240)
    panels: list = [player, pn.pane.Markdown(pn.bind(_summary, live.param.catalog, shown)),
                    pn.Column("## Loss", smoothing, pn.bind(
                        lambda df, s: marked("loss", plots.loss_figure(df, labels(df), s)),
                        shown, smoothing), sizing_mode="stretch_width")]
    if bias is not None:
        panels.append(pn.Column("## Bias matrix", pn.bind(bias_view, bias, shown),
                                sizing_mode="stretch_width"))
    if stats is not None:
        stat = pn.widgets.Select(label="Statistic", options=STATS, width=200)
        panels.append(pn.Column(
            "## Image statistics", stat,
            pn.bind(lambda df, s: marked("stats", plots.stats_figure(stats, df, s, labels(df))),
                    shown, stat),
            pn.pane.HTML(pn.bind(lambda df, _: plots.palettes_html(stats, df, current_step()),
                                 shown, player.param.step)),
            sizing_mode="stretch_width"))
    sidebar = pn.Column(f"### {Path(root).resolve().name}", "#### Filters", vqgans, perceptors,
                        experiments, "#### Layout", rows, cols, swap, baseline,
                        width=SIDEBAR_WIDTH, styles={"overflow-wrap": "anywhere"})

    def refresh() -> None:
        new = current_catalog(root, skip)
        if new is live.catalog or signature(new) == signature(live.catalog):
            return
        ready = new[new["n_frames"] > 0]
        _update_checks(vqgans, sorted(ready["vqgan"].unique()))
        _update_checks(perceptors, perceptor_names(ready))
        _update_checks(experiments, sorted(ready["experiment"].unique()))
        baseline.options = {"(none)": "", **{r: r for r in ready["run"]}}
        axes = {**axis_options(ready), **rows.options}
        rows.options, cols.options = axes, dict(axes)
        live.catalog = new

    if pn.state.curdoc is not None and poll_ms:
        pn.state.add_periodic_callback(refresh, period=poll_ms)
    _sync_url({"vqgan": vqgans, "perceptors": perceptors, "experiments": experiments,
               "rows": rows, "cols": cols}, player)
    main = pn.Column(_sidebar_toggle(sidebar), *panels, sizing_mode="stretch_width",
                     styles={"min-width": "0"})
    return pn.Row(sidebar, main, sizing_mode="stretch_width")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="panel serve dashboard/app.py --args")
    parser.add_argument("--root", required=True, help="folder of run folders")
    parser.add_argument("--scores", help="folder of score files (default <root>/../scores)")
    return parser.parse_args(argv)


if pn.state.served:
    args = parse_args(sys.argv[1:])
    mount_frames(args.root)
    create_app(args.root, args.scores).servable(title=TITLE)
