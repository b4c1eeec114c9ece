"""The app's layout and figures, built in-process from real fixture folders (no browser)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import panel as pn
import pytest
from bokeh.models import Span
from bokeh.plotting import figure

from dashboard import plots
from dashboard.app import create_app
from dashboard.bias import bias_view
from dashboard.context import cell_context, labels, slot_tags
from dashboard.player import GridPlayer
from dashboard.state import RootState
from dashboard_fixtures import (
    damage_frame, fixture_loss, make_grid, make_our_run, make_pytti_run, make_scores, with_losses,
)
from engine.runfolder import RunFolder
from engine.runfolder.frames import read_table
from experiments.scorefiles import BIAS_MATRIX, IMAGE_STATS, SELF_PREFERENCE, read_csv, read_json


def _texts(app: pn.viewable.Viewable) -> str:
    return " ".join(str(o.object) for o in app.select(pn.pane.Markdown))


def _player(app: pn.viewable.Viewable) -> GridPlayer:
    return next(iter(app.select(GridPlayer)))


def test_score_panels_only_where_score_files_exist(tmp_path: Path) -> None:
    make_grid(tmp_path / "runs", ["sflckr"], ["RN50", "RN101"], 2)
    assert RootState(tmp_path / "runs").scores is None
    assert "Bias matrix" not in _texts(create_app(RootState(tmp_path / "runs")))
    make_scores(tmp_path / "elsewhere", ["sflckr"], ["RN50", "RN101"], 2)
    app = create_app(RootState(tmp_path / "runs", scores=tmp_path / "elsewhere"))
    assert "Bias matrix" in _texts(app) and "Image statistics" in _texts(app)
    assert "| RN101 | +0.75 | 1 |" in _texts(app)  # self_preference.json's figure
    make_scores(tmp_path / "scores", ["sflckr"], ["RN50", "RN101"], 2)  # beside the root: the default
    assert RootState(tmp_path / "runs").scores == tmp_path / "scores"
    (tmp_path / "scores" / SELF_PREFERENCE).unlink()
    texts = _texts(create_app(RootState(tmp_path / "runs")))
    assert "Bias matrix" in texts and "needs the judge stage's `self_preference.json`" in texts


def test_figures_for_a_large_grid(tmp_path: Path) -> None:
    vqgans, perceptors = [f"vq{i}" for i in range(4)], [f"P{j}" for j in range(4)]
    make_grid(tmp_path / "runs", vqgans, perceptors, 2)
    make_pytti_run(tmp_path / "runs", "exp__wikiart_RN50", "wikiart", ["RN50"])
    scores = make_scores(tmp_path / "scores", vqgans, perceptors, 2)
    bias, stats = read_csv(scores, BIAS_MATRIX), read_csv(scores, IMAGE_STATS)
    preference = read_json(scores, SELF_PREFERENCE)
    shown = with_losses(tmp_path / "runs")
    names = labels(shown)
    losses = plots.loss_figure(shown, names)
    assert isinstance(losses, figure) and len(losses.renderers) == 16  # pytti logs no loss
    legend = [item.label.value for item in losses.legend[0].items]  # every cell, not 12
    assert len(legend) == 16 and set(legend) <= set(names.values())
    heatmap = bias_view(bias, preference, shown)[0].object  # the heatmap of the app's bias panel
    assert len(heatmap.y_range.factors) == 16
    assert len(plots.stats_figure(stats, shown, "contrast").renderers) == 16
    assert plots.palettes_html(stats, shown).count("white-space:nowrap") == 16
    at_first = plots.palettes_html(stats, shown, step=50)  # palettes at the player's step
    assert at_first.count("step 50<") == 16 and "step 100" not in at_first
    pytti_only = shown[shown["source"] == "pytti"]
    assert isinstance(plots.loss_figure(pytti_only), str)
    assert isinstance(bias_view(bias, preference, pytti_only), str)


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


def test_context_of_a_pytti_run_and_runs_sharing_a_slot(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_pytti_run(runs, "exp__wikiart_RN50", "wikiart", ["RN50"],
                   settings={"interpolation_steps": 30})
    make_pytti_run(runs, "exp__wikiart_RN50", "wikiart", ["RN50"], rerun=1)  # seed 12346
    df = with_losses(runs)
    context = cell_context(df.iloc[0], None)  # pytti's settings: scenes and weights re-derived
    first, second = context["scenes"]  # the suffix ` | text:-1:-.9` adds a prompt to each scene
    assert first[0]["text"].startswith("a photograph") and second[0]["text"].startswith("a painting")
    assert first[1] == {"text": "text", "weight": -1.0} == second[1]
    # 75 steps a scene, 30 of them blending: frames at steps 50, 100 (24 steps into the blend), 150
    assert context["weights"] == [pytest.approx(w) for w in ([1, 0], [0.2, 0.8], [0, 1])]
    tags = slot_tags(df)
    assert sorted(tags.values()) == ["seed 12345", "seed 12346"]
    assert all(tags[run] in name for run, name in labels(df).items())


def test_the_frame_table_is_what_the_player_shows(tmp_path: Path) -> None:
    """A frame table that disagrees with the settings' schedule (frame 1 at step 10, all scene 1,
    by the rule) is shown as it is: its steps, losses and scene weights."""
    folder = make_our_run(tmp_path, "told", "coco", ["RN50"], save_every=10, steps=30)
    run = RunFolder(tmp_path, "told")
    table = read_table(run.frame_table, "told")
    run.write_frame_table([replace(f, step=7 * f.n, loss=0.5 - 0.1 * f.n, scenes=(0.25 * f.n, 1 - 0.25 * f.n))
                           for f in table])
    (folder / "losses.csv").unlink()  # frame losses need no loss table
    grid = _player(create_app(RootState(tmp_path), poll_ms=0)).grid
    (cell,) = grid["cells"]
    assert cell["status"] == "complete"
    assert grid["steps"] == cell["steps"] == [7, 14, 21]
    assert cell["losses"] == pytest.approx([0.4, 0.3, 0.2])
    assert cell["weights"] == [pytest.approx([0.25, 0.75]), pytest.approx([0.5, 0.5]), pytest.approx([0.75, 0.25])]
    assert [s[0]["text"] for s in cell["scenes"]] == ["a photograph of a bright and beautiful spring day",
                                                      "a painting of a cold wintery landscape"]


def test_the_player_step_is_a_step_done(tmp_path: Path) -> None:
    make_our_run(tmp_path, "short", "coco", ["RN50"], save_every=10, steps=25)
    player = _player(create_app(RootState(tmp_path), poll_ms=0))
    assert player.step == 0 and player.shown_step() == 10  # none asked for: the first
    player.step = 20
    assert player.shown_step() == 20
    player.step = 24  # between frames: the last step before it
    assert player.shown_step() == 20


def test_chart_and_player_use_the_steps_of_the_frames(tmp_path: Path) -> None:
    make_our_run(tmp_path, "short", "coco", ["RN50"], cell=2, save_every=10, steps=25)
    app = create_app(RootState(tmp_path), poll_ms=0)
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
    app = create_app(RootState(tmp_path), poll_ms=0)
    assert "1 damaged" in _texts(app)
    assert "| hurt | damaged | frame 1 (hurt_1.png) is damaged" in _texts(app)
    cells = {c["id"]: c for c in _player(app).grid["cells"]}
    assert (cells["hurt"]["status"], cells["good"]["status"]) == ("damaged", "complete")
    assert "frame 1" in cells["hurt"]["note"] and not cells["good"]["note"]
