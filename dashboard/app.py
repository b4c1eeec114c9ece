"""The dashboard app: a synced player over the catalog's grid, with filters, losses and scores.
Served by `python -m dashboard serve --root DIR` (dashboard/server.py), one app per session over
the server's one `RootState`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd
import panel as pn
from bokeh.models import Span

from dashboard import plots
from dashboard.bias import bias_view
from dashboard.catalog import select
from dashboard.context import cell_context, labels, slot_tags
from dashboard.background import Waiting
from dashboard.effects import look_panels
from dashboard.filters import Filters, build_filters, build_sidebar, choose, update_filters
from dashboard.fingerprints import fingerprint_panel
from dashboard.frames import frame_url
from dashboard.grid import FrameSource, bounded_frames, grid_spec
from dashboard.live import Live
from dashboard.player import GridPlayer
from dashboard.rows import OLD_COLUMNS
from dashboard.state import RootState
from experiments.imagestats import STATS
from experiments.scorefiles import BIAS_MATRIX, IMAGE_STATS, SELF_PREFERENCE, read_csv, read_json

TITLE = "VQGAN+CLIP bias dashboard"
POLL_MS = 2000  # how often an open page looks for new frames and runs (a few stat calls)


def served_frames(run: pd.Series) -> dict[str, list[str]]:
    """A run's frames as URLs on the server's static route."""
    return {"frames": [frame_url(f) for f in run.frames]}


def player_grid(shown: pd.DataFrame, rows: str, cols: str,
                frames: FrameSource = served_frames) -> dict:
    """The player's grid spec for the shown runs (at most `grid.MAX_SHOWN_FRAMES` frames each):
    their `frames` plus each cell's context."""
    tags = slot_tags(shown)
    return grid_spec(bounded_frames(shown), rows, cols,
                     lambda run: {**frames(run), **cell_context(run, tags.get(run.run))})


def signature(catalog: pd.DataFrame) -> list[tuple]:
    """What the page shows of a catalog: the runs, their frame counts and status."""
    return list(zip(catalog["run"], catalog["n_frames"], catalog["status"]))


def at_most(shown: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The first `limit` of the runs (all where `limit` is None)."""
    return shown if limit is None else shown.head(limit)


def _playable(catalog: pd.DataFrame) -> pd.DataFrame:
    return catalog[catalog["n_frames"] > 0]


def _summary(catalog: pd.DataFrame, shown: pd.DataFrame, ticked: pd.DataFrame) -> str:
    """How many runs are shown (and where fewer than the `ticked` ones, why), and a table of
    those with a problem: not complete (damaged or incomplete), or shown with a reason (a
    losses.csv read in part: `shown` has its losses)."""
    pending = catalog[catalog["status"] != "complete"]
    counts = pending["status"].value_counts()
    text = (f"**{len(shown)}** of {len(catalog)} runs shown · {counts.get('incomplete', 0)} "
            f"incomplete · {counts.get('damaged', 0)} damaged")
    if len(ticked) > len(shown):
        text += (f"\n\n{len(ticked)} runs are ticked, but an output holds the frames of "
                 f"{len(shown)} at most: untick some, or open them all with "
                 "`python -m dashboard serve`")
    noted = shown[(shown["status"] == "complete") & (shown["reason"] != "")]
    rows = "".join(f"\n| {r.run} | {r.status} | {r.reason} |"
                   for r in pd.concat([pending, noted]).itertuples())
    return text + (f"\n\n| run | status | why |\n|---|---|---|{rows}" if rows else "")


def _sidebar_toggle(sidebar: pn.Column) -> pn.widgets.Button:
    """A button that shows or hides the sidebar in the browser, without a round trip."""
    toggle = pn.widgets.Button(label="☰ sidebar", width=90)
    toggle.js_on_click(args={"sidebar": sidebar}, code="sidebar.visible = !sidebar.visible")
    return toggle


def _sync_url(filters: Filters, player: GridPlayer) -> None:
    """Keep filters, axes, step and selection in the page's URL (query string), each varied
    setting's levels under its setting name (but a name the page uses itself); an axis named by
    its old name is renamed there first."""
    location = pn.state.location
    if location is None:
        return
    query = location.query_params
    renamed = {k: OLD_COLUMNS[v] for k in ("rows", "cols")
               if isinstance(v := query.get(k), str) and v in OLD_COLUMNS}
    if renamed:
        location.update_query(**renamed)
    widgets = {"vqgan": filters.vqgans, "perceptors": filters.perceptors,
               "experiments": filters.experiments, "rows": filters.rows, "cols": filters.cols}
    keys = {*widgets, "step", "selected", "baseline"}

    def sync_levels(setting: str, checks: pn.widgets.CheckBoxGroup) -> None:
        if setting not in keys:
            location.sync(checks, {"value": setting})

    for name, widget in widgets.items():
        location.sync(widget, {"value": name})
    for setting, checks in filters.levels.checks.items():
        sync_levels(setting, checks)
    filters.levels.on_new = sync_levels
    location.sync(player, {"step": "step", "selected": "selected", "baseline": "baseline"})


class StepMarkers:
    """The dashed line at the player's step on every chart; it follows the player."""

    def __init__(self, player: GridPlayer):
        self.player = player
        self.spans: dict[str, Span] = {}
        player.param.watch(self.move, ["step", "grid"])

    def mark(self, kind: str, fig: object) -> object:
        """`fig` with the marker of `kind` (a text in place of a figure is left as it is)."""
        if not isinstance(fig, str):
            self.spans[kind] = plots.step_marker(fig, self.player.shown_step())
        return fig

    def move(self, *_: object) -> None:
        step = self.player.shown_step()
        for span in self.spans.values():
            span.location, span.visible = step or 0, step is not None


def loss_panel(shown: object, markers: StepMarkers) -> pn.Column:
    smoothing = pn.widgets.FloatSlider(label="Smoothing", start=0, end=0.99, step=0.01, value=0,
                                       width=240)
    figure = pn.bind(lambda df, s: markers.mark("loss", plots.loss_figure(df, labels(df), s)),
                     shown, smoothing)
    return pn.Column("## Loss", smoothing, figure, sizing_mode="stretch_width")


def score_panels(score_dir: Path | None, shown: object, markers: StepMarkers) -> list:
    """The bias matrix and image statistics panels, where `score_dir` holds their files."""
    bias, stats = read_csv(score_dir, BIAS_MATRIX), read_csv(score_dir, IMAGE_STATS)
    panels: list = []
    if bias is not None:
        preference = read_json(score_dir, SELF_PREFERENCE)
        panels.append(pn.Column("## Bias matrix", pn.bind(bias_view, bias, preference, shown),
                                sizing_mode="stretch_width"))
    if stats is not None:
        stat = pn.widgets.Select(label="Statistic", options=list(STATS), width=200)
        figure = pn.bind(
            lambda df, s: markers.mark("stats", plots.stats_figure(stats, df, s, labels(df))),
            shown, stat)
        palettes = pn.bind(lambda df, _: plots.palettes_html(stats, df, markers.player.shown_step()),
                           shown, markers.player.param.step)
        panels.append(pn.Column("## Image statistics", stat, figure, pn.pane.HTML(palettes),
                                sizing_mode="stretch_width"))
    return panels


def refresh_on_change(state: RootState, live: Live, filters: Filters, poll_ms: int,
                      embedded: bool = False, stop_when: Callable[[], bool] = lambda: False) -> None:
    """On a served page (or, `embedded`, in a notebook's kernel), re-read the catalog every
    `poll_ms` and show what changed; stop once `stop_when()` is true."""
    def refresh() -> None:
        if stop_when():
            callback.stop()
            return
        new = state.catalog()
        if new is live.catalog or signature(new) == signature(live.catalog):
            return
        update_filters(filters, _playable(new))
        live.catalog = new

    if poll_ms and (embedded or pn.state.curdoc is not None):
        callback = pn.state.add_periodic_callback(refresh, period=poll_ms)


def create_app(state: RootState, poll_ms: int = POLL_MS, *, frames: FrameSource = served_frames,
               chosen: Mapping[str, Any] | None = None, embedded: bool = False,
               stop_when: Callable[[], bool] = lambda: False,
               max_runs: int | None = None) -> pn.viewable.Viewable:
    """The dashboard for the runs of `state` (its root); score panels where its scores folder
    holds score files; the effects and fingerprints of the runs, computed in the background and
    shown when ready on a served page (elsewhere waited for). A served page re-reads the catalog
    every `poll_ms`.
    `frames` gives a run's frames to the player (default: URLs on the server's route);
    `chosen` sets filters (`choose`); `embedded` (a notebook output) scopes the keys to the
    player, leaves the page's URL alone and re-reads the catalog in the kernel, until
    `stop_when()` is true. The player shows `max_runs` of the ticked runs at most."""
    live = Live(catalog=state.catalog())
    filters = build_filters(_playable(live.catalog))
    choose(filters, chosen or {})
    shown = pn.bind(select, live.param.catalog, vqgans=filters.vqgans, perceptors=filters.perceptors,
                    experiments=filters.experiments, levels=filters.levels.param.value)
    kept = pn.bind(at_most, shown, max_runs)
    detailed = pn.bind(state.losses, kept)  # loss tables read for the runs shown only
    player = GridPlayer(grid=pn.bind(player_grid, detailed, rows=filters.rows, cols=filters.cols,
                                     frames=frames), scoped=embedded, sizing_mode="stretch_width")
    filters.baseline.link(player, value="baseline", bidirectional=True)
    markers = StepMarkers(player)
    summary = pn.pane.Markdown(pn.bind(_summary, live.param.catalog, detailed, shown))
    sidebar = build_sidebar(state.root, filters)
    opened = select(live.catalog, experiments=filters.experiments.value)
    # A served page shows the analyses when ready; a notebook's output waits for them, as every
    # model it holds must be there when its stylesheets are made inline (notebook.inline_stylesheets).
    waiting = Waiting(live=not embedded and pn.state.curdoc is not None)
    main = pn.Column(_sidebar_toggle(sidebar), player, summary, loss_panel(detailed, markers),
                     *score_panels(state.scores, shown, markers),
                     *look_panels(state, opened, player, waiting),
                     fingerprint_panel(state, live, shown, player, waiting), sizing_mode="stretch_width",
                     styles={"min-width": "0"})
    refresh_on_change(state, live, filters, poll_ms, embedded, stop_when)
    if not embedded:
        _sync_url(filters, player)
    return pn.Row(sidebar, main, sizing_mode="stretch_width")
