"""The app's sidebar: what the page is, which runs are shown (VQGAN models, perceptors,
experiments and the levels of each varied setting, each group under its heading) and how the grid
is laid out (rows, columns, baseline)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import pandas as pd
import panel as pn
import param

from engine.errors import InputError

from .catalog import levels_of, perceptor_names
from .grid import axis_options, current_axis, page_title, varied_settings

SIDEBAR_WIDTH = 250
FIRST_VIEW_RUNS = 64  # more runs than this in several experiments: the page opens on the newest


def _checks(label: str, options: list[str]) -> pn.widgets.CheckBoxGroup:
    return pn.widgets.CheckBoxGroup(label=label, options=options, value=list(options),
                                    sizing_mode="stretch_width")


def _update_checks(checks: pn.widgets.CheckBoxGroup, options: list[str]) -> None:
    """New options, ticked; those the user unticked stay unticked."""
    new = [o for o in options if o not in checks.options]
    checks.param.update(options=options,
                        value=[v for v in checks.value if v in options] + new)


def _heading(text: str) -> pn.pane.Markdown:
    return pn.pane.Markdown(f"##### {text}", margin=(8, 10, 0, 10))


class Levels(param.Parameterized):
    """A filter per varied setting (the levels to tick, under the setting's name as a heading, in
    `box`); `value` is {setting: its ticked levels}. `on_new(setting, checks)` is called for each
    filter added later (a re-read catalog with a new varied setting)."""

    value = param.Dict(default={})

    def __init__(self, ready: pd.DataFrame):
        super().__init__()
        self.checks: dict[str, pn.widgets.CheckBoxGroup] = {}
        self.box = pn.Column(sizing_mode="stretch_width", margin=0)
        self.on_new: Callable[[str, pn.widgets.CheckBoxGroup], None] = lambda *_: None
        self.update(ready)

    def update(self, ready: pd.DataFrame) -> None:
        """Levels of a re-read catalog: new levels come ticked, a new varied setting gets a filter."""
        for setting in varied_settings(ready):
            options = levels_of(ready, setting)
            if setting in self.checks:
                _update_checks(self.checks[setting], options)
                continue
            checks = self.checks[setting] = _checks(setting, options)
            checks.param.watch(self._read, "value")
            self.box.extend([_heading(setting), checks])
            self.on_new(setting, checks)
        self._read()

    def _read(self, *_: object) -> None:
        self.value = {setting: list(checks.value) for setting, checks in self.checks.items()}


class Filters(NamedTuple):
    """The sidebar's widgets: which runs are shown and how the grid is laid out."""

    vqgans: pn.widgets.CheckBoxGroup
    perceptors: pn.widgets.CheckBoxGroup
    experiments: pn.widgets.CheckBoxGroup
    levels: Levels
    rows: pn.widgets.Select
    cols: pn.widgets.Select
    swap: pn.widgets.Button
    baseline: pn.widgets.Select


def _baselines(ready: pd.DataFrame) -> dict[str, str]:
    return {"(none)": "", **{r: r for r in ready["run"]}}


def first_experiments(ready: pd.DataFrame) -> list[str]:
    """The experiments ticked on opening: all, or where there are more than FIRST_VIEW_RUNS runs
    in several, the one with the newest file (the URL's `experiments` overrides it)."""
    experiments = sorted(ready["experiment"].unique())
    if len(ready) <= FIRST_VIEW_RUNS or len(experiments) < 2:
        return experiments
    return [ready.loc[pd.to_numeric(ready["modified"]).idxmax(), "experiment"]]


def build_filters(ready: pd.DataFrame) -> Filters:
    """The filter and layout widgets for the runs with frames, everything ticked but, in a big
    root, other experiments than the newest (`first_experiments`)."""
    axes = axis_options(ready)
    rows = pn.widgets.Select(label="Rows", options=axes, value="vqgan", sizing_mode="stretch_width")
    cols = pn.widgets.Select(label="Columns", options=axes, value="perceptor_set",
                             sizing_mode="stretch_width")
    swap = pn.widgets.Button(label="⇅ swap rows and columns", sizing_mode="stretch_width")

    def swap_axes(_: object) -> None:
        rows.value, cols.value = cols.value, rows.value

    swap.on_click(swap_axes)
    experiments = _checks("Experiments", sorted(ready["experiment"].unique()))
    experiments.value = first_experiments(ready)
    return Filters(
        _checks("VQGAN models", sorted(ready["vqgan"].unique())),
        _checks("Perceptors", perceptor_names(ready)), experiments, Levels(ready), rows, cols, swap,
        pn.widgets.Select(label="Baseline", sizing_mode="stretch_width", options=_baselines(ready)))


def _set(widget: pn.widgets.Widget, name: str, value: str | list[str]) -> None:
    """Set a filter or axis `widget`; InputError naming a value that is not one of its options,
    and those allowed."""
    options = widget.options
    allowed = list(options.values()) if isinstance(options, dict) else list(options)
    values = [value] if isinstance(value, str) else list(value)
    what = "an axis of these runs" if isinstance(widget, pn.widgets.Select) else \
        "a name any run with frames has"
    for v in values:
        if v not in allowed:
            raise InputError(f"{name}={v!r} is not {what}; choose from "
                             f"{', '.join(map(repr, allowed)) or '(none)'}")
    widget.value = value if isinstance(widget, pn.widgets.Select) else values


def choose(filters: Filters, chosen: Mapping[str, Any]) -> None:
    """Set filters by field name: `vqgans`, `perceptors`, `experiments` to names (one or a list),
    `levels` to {varied setting: levels}, `rows`, `cols` to an axis (an old name taken,
    `grid.current_axis`). InputError naming a value no run has, and those allowed."""
    for name, value in chosen.items():
        if name == "levels":
            for setting, ticked in value.items():
                if setting not in filters.levels.checks:
                    raise InputError(f"levels: {setting!r} is not a varied setting of these runs; choose "
                                     f"from {', '.join(map(repr, filters.levels.checks)) or '(none)'}")
                _set(filters.levels.checks[setting], f"levels[{setting!r}]", ticked)
            continue
        widget = getattr(filters, name)
        _set(widget, name, current_axis(value) if isinstance(widget, pn.widgets.Select) else value)


def update_filters(filters: Filters, ready: pd.DataFrame) -> None:
    """New options from a re-read catalog; what the user chose stays chosen."""
    _update_checks(filters.vqgans, sorted(ready["vqgan"].unique()))
    _update_checks(filters.perceptors, perceptor_names(ready))
    _update_checks(filters.experiments, sorted(ready["experiment"].unique()))
    filters.levels.update(ready)
    filters.baseline.options = _baselines(ready)
    axes = {**axis_options(ready), **filters.rows.options}
    filters.rows.options, filters.cols.options = axes, dict(axes)


def shown_path(root: Path) -> str:
    """`root` as a reader knows it: relative to the working folder where inside it, else under
    `~`, else whole."""
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~" + os.sep)):
        if root.is_relative_to(base) and root != base:
            return prefix + str(root.relative_to(base))
    return str(root)


def page_heading(root: Path, experiments: list[str]) -> str:
    """Markdown: what the page shows (`grid.page_title` of the ticked experiments) and where."""
    return f"### {page_title(experiments)}\n\nruns in `{shown_path(root)}`"


def build_sidebar(root: str | Path, filters: Filters) -> pn.Column:
    """The page's heading, then the filters, each group under its heading, then the layout."""
    f = filters
    heading = pn.pane.Markdown(pn.bind(page_heading, Path(root).resolve(), f.experiments),
                               sizing_mode="stretch_width")
    return pn.Column(heading, "#### Filters", _heading("VQGAN models"), f.vqgans, _heading("Perceptors"),
                     f.perceptors, _heading("Experiments"), f.experiments, f.levels.box, "#### Layout",
                     f.rows, f.cols, f.swap, f.baseline, width=SIDEBAR_WIDTH,
                     styles={"overflow-wrap": "anywhere"})
