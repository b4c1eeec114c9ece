"""The app's layout and figures, built in-process from real fixture folders (no browser)."""
from __future__ import annotations

from pathlib import Path

import panel as pn
from bokeh.plotting import figure

from dashboard import plots
from dashboard.app import create_app
from dashboard.catalog import load_catalog
from dashboard.scores import load_scores
from dashboard_fixtures import make_grid, make_pytti_run, make_scores


def _texts(app: pn.viewable.Viewable) -> str:
    return " ".join(str(o.object) for o in app.select(pn.pane.Markdown))


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
    shown = load_catalog(tmp_path / "runs")
    losses = plots.loss_figure(shown)
    assert isinstance(losses, figure) and len(losses.renderers) == 16  # pytti logs no loss
    heatmap = plots.bias_figure(bias, shown)
    assert isinstance(heatmap, figure) and len(heatmap.y_range.factors) == 16
    assert len(plots.stats_figure(stats, shown, "contrast").renderers) == 16
    assert plots.palettes_html(stats, shown).count("white-space:nowrap") == 16
    pytti_only = shown[shown["source"] == "pytti"]
    assert isinstance(plots.loss_figure(pytti_only), str)
    assert isinstance(plots.bias_figure(bias, pytti_only), str)
