"""The app's layout and figures, built in-process from real fixture folders (no browser)."""
from __future__ import annotations

from pathlib import Path

import panel as pn
import pytest
from bokeh.models import Span
from bokeh.plotting import figure

from dashboard import plots
from dashboard.app import create_app
from dashboard.bias import bias_view
from dashboard.catalog import load_catalog
from dashboard.context import labels, schedule, slot_tags
from dashboard.player import GridPlayer
from dashboard.scores import load_scores
from dashboard_fixtures import (
    damage_frame, fixture_loss, make_grid, make_our_run, make_pytti_run, make_scores, with_losses,
)


def _texts(app: pn.viewable.Viewable) -> str:
    return " ".join(str(o.object) for o in app.select(pn.pane.Markdown))


def _player(app: pn.viewable.Viewable) -> GridPlayer:
    return next(iter(app.select(GridPlayer)))


def test_score_panels_only_where_score_files_exist(tmp_path: Path) -> None:
    make_grid(tmp_path / "runs", ["sflckr"], ["RN50", "RN101"], 2)
    assert "Bias matrix" not in _texts(create_app(tmp_path / "runs"))
    make_scores(tmp_path / "elsewhere", ["sflckr"], ["RN50", "RN101"], 2)
    app = create_app(tmp_path / "runs", scores=tmp_path / "elsewhere")
    assert "Bias matrix" in _texts(app) and "Image statistics" in _texts(app)


def test_figures_for_a_large_grid(tmp_path: Path) -> None:
    vqgans, perceptors = [f"vq{i}" for i in range(4)], [f"P{j}" for j in range(4)]
    make_grid(tmp_path / "runs", vqgans, perceptors, 2)
    make_pytti_run(tmp_path / "runs", "exp__wikiart_RN50", "wikiart", ["RN50"])
    bias, stats = load_scores(make_scores(tmp_path / "scores", vqgans, perceptors, 2))
    shown = with_losses(tmp_path / "runs")
    names = labels(shown)
    losses = plots.loss_figure(shown, names)
    assert isinstance(losses, figure) and len(losses.renderers) == 16  # pytti logs no loss
    legend = [item.label.value for item in losses.legend[0].items]  # every cell, not 12
    assert len(legend) == 16 and set(legend) <= set(names.values())
    heatmap = bias_view(bias, shown)[0].object  # the heatmap of the app's bias panel
    assert len(heatmap.y_range.factors) == 16
    assert len(plots.stats_figure(stats, shown, "contrast").renderers) == 16
    assert plots.palettes_html(stats, shown).count("white-space:nowrap") == 16
    at_first = plots.palettes_html(stats, shown, step=50)  # palettes at the player's step
    assert at_first.count("step 50<") == 16 and "step 100" not in at_first
    pytti_only = shown[shown["source"] == "pytti"]
    assert isinstance(plots.loss_figure(pytti_only), str)
    assert isinstance(bias_view(bias, pytti_only), str)


def test_smoothing_and_the_step_marker(tmp_path: Path) -> None:
    assert plots.smooth([1.0, 0.0, 0.0], 0.0) == [1.0, 0.0, 0.0]
    smoothed = plots.smooth([1.0, 0.0, None, 0.0], 0.5)
    assert smoothed[0] == 1.0 and 0 < smoothed[3] < smoothed[1] < 1 and smoothed[2] is None
    make_grid(tmp_path / "runs", ["sflckr"], ["RN50"], 3)
    fig = plots.loss_figure(with_losses(tmp_path / "runs"), smoothing=0.9)
    raw = plots.loss_figure(with_losses(tmp_path / "runs"))
    assert fig.renderers[0].data_source.data["y"] != raw.renderers[0].data_source.data["y"]
    span = plots.step_marker(fig, 100)
    assert span in fig.center and span.location == 100 and span.visible
    assert not plots.step_marker(raw, None).visible and isinstance(span, Span)


def test_context_scenes_weights_and_runs_sharing_a_slot(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_pytti_run(runs, "exp__wikiart_RN50", "wikiart", ["RN50"],
                   settings={"interpolation_steps": 30})
    make_pytti_run(runs, "exp__wikiart_RN50", "wikiart", ["RN50"], rerun=1)  # seed 12346
    df = with_losses(runs)
    plan = schedule(df.settings.iloc[0])
    assert plan["steps_per_scene"] == 75 and plan["interpolation_steps"] == 30
    first, second = plan["scenes"]  # the suffix ` | text:-1:-.9` adds a prompt to each scene
    assert first[0]["text"].startswith("a photograph") and second[0]["text"].startswith("a painting")
    assert first[1] == {"text": "text", "weight": -1.0} == second[1]
    tags = slot_tags(df)
    assert sorted(tags.values()) == ["seed 12345", "seed 12346"]
    assert all(tags[run] in name for run, name in labels(df).items())
    assert schedule({"scenes": "a || || b"}) is None and schedule({}) is None


def test_chart_and_player_use_the_steps_of_the_frames(tmp_path: Path) -> None:
    make_our_run(tmp_path, "short", "coco", ["RN50"], cell=2, save_every=10, steps=25)
    app = create_app(tmp_path, poll_ms=0)
    cell = _player(app).grid["cells"][0]
    assert _player(app).grid["steps"] == cell["steps"] == [10, 20, 25]
    assert cell["losses"] == pytest.approx([fixture_loss(s, 2) for s in (10, 20, 25)])
    loss = plots.loss_figure(with_losses(tmp_path))
    data = loss.renderers[0].data_source.data
    by_step = dict(zip(data["x"], data["y"]))
    assert (min(data["x"]), max(data["x"])) == (1, 25)  # steps done, as the frames count them
    assert [by_step[s] for s in (10, 20, 25)] == pytest.approx(cell["losses"])


def test_a_damaged_run_shows_on_the_page(tmp_path: Path) -> None:
    make_our_run(tmp_path, "good", "coco", ["RN50"], n_frames=2)
    damage_frame(make_our_run(tmp_path, "hurt", "coco", ["RN101"], cell=1, n_frames=2), 1)
    app = create_app(tmp_path, poll_ms=0)
    assert "1 damaged" in _texts(app)
    assert "| hurt | damaged | frame 1 (hurt_1.png) is damaged" in _texts(app)
    cells = {c["id"]: c for c in _player(app).grid["cells"]}
    assert (cells["hurt"]["status"], cells["good"]["status"]) == ("damaged", "complete")
    assert "frame 1" in cells["hurt"]["note"] and not cells["good"]["note"]
