"""Stage `score`: the aesthetic bias matrix and per-frame image statistics of the grid.

Bias matrix: every cell's frames are judged by every perceptor of the grid (the judges),
generator (the cell's perceptors) × judge, per VQGAN. A frame's similarity under a judge is
the cosine similarity of its image embedding to its scene prompt:

- the scene prompt is the scene's positive-weight prompts (`engine.prompts.parse_scenes` on
  the cell's own settings, so the scene suffix's negative `text`/`watermark` prompts are left
  out), their similarities averaged with the prompt weights;
- the scene is the one active at the frame's last step (frame n is the image after
  min(n·save_every, total) steps: its step as `engine.runfolder.read_run` reads it); inside a
  scene transition the two scenes' similarities are blended with the engine's interpolation
  factors;
- the image embedding is the mean of the unit embeddings of square windows that cover the
  frame (side = the frame's shorter side, ceil(long/short) windows evenly spaced: two for the
  study's 256×128), each resized to the judge's input size, renormalised.

A cell's similarity is the mean over its frames. A generator that scores high under its own
judge but low under the others has found that perceptor's blind spots rather than the prompt:
experiments/bias.py turns the similarities into each judge's self-preference, in the judge's
own spread, with a 95 % interval over the grid's seeds.

Writes experiments/scores/:
- bias_matrix.csv  `vqgan,generator,judge,similarity,seed,z` (generator = slugs joined by '+';
                   one row per seed; z: similarity z-scored within the judge and seed)
- bias.json        {vqgan: {generator: {judge: similarity, mean over seeds}}} (DVC metrics)
- self_preference.json {"judges": {judge: {mean, low, high, seeds}}, "vqgans": {vqgan: ...}}
                   (DVC metrics; low/high null with one seed)
- image_stats.csv  `cell,vqgan,generator,frame,step,colourfulness,saturation,contrast,edge_density,palette`
- image_stats.json {vqgan: {generator: {statistic: mean over frames and seeds}}} (DVC metrics)
- effects.json     each measure's VQGAN, perceptor, interaction and residual shares of variance
                   (experiments/effects.py: the final frame's statistics and the similarities; DVC metrics)
Statistics: experiments/imagestats.py.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from engine.cli import error_boundary
from experiments.bias import self_preference, standardise, summary
from experiments.effects import analyse, with_similarities
from experiments.grid import PARAMS_FILE, SCORES_DIR, Cell, Grid, GridError, load_grid
from experiments.imagestats import STATS, frame_stats

if TYPE_CHECKING:
    from engine.runfolder import RunRecord

BIAS_COLUMNS = ["vqgan", "generator", "judge", "similarity", "seed", "z"]
STATS_COLUMNS = ["cell", "vqgan", "generator", "frame", "step", *STATS, "palette"]
BATCH = 32


class CellFrames:
    """A finished cell as `engine.runfolder.read_run` reads it: its frames (each at its step), each
    frame's scene weights, and the scene prompts."""

    def __init__(self, grid: Grid, cell: Cell):
        from engine.prompts import parse_scenes, scene_blend

        self.cell = cell
        record = read_cell(grid, cell)
        s = record.meta.settings
        scenes = parse_scenes(s["scenes"], s.get("scene_prefix", ""), s.get("scene_suffix", ""))
        self.frames = record.frames
        self.paths = [record.folder / frame.name for frame in record.frames]
        # Per scene: the positive prompts' texts and weights.
        self.scene_prompts = [[(p.text, p.weight) for p in scene if p.weight > 0] for scene in scenes]
        # The scenes active at each frame's last step (0-based index: steps done - 1).
        self.blends = [scene_blend(frame.step - 1, len(scenes), s["steps_per_scene"], s["interpolation_steps"])
                       for frame in record.frames]

    def pixels(self) -> list[np.ndarray]:
        from PIL import Image

        return [np.asarray(Image.open(p).convert("RGB")) for p in self.paths]


def read_cell(grid: Grid, cell: Cell) -> RunRecord:
    """The complete run of a cell; GridError naming the cell, what is wrong and what to do."""
    from engine.runfolder import read_run

    folder = grid.cell_dir(cell)
    if not folder.is_dir():
        raise GridError(f"cell {cell.name}: no folder {folder}; run `dvc repro {cell.stage}` (or `dvc pull "
                        f"{cell.stage}` where it was pushed) to make it")
    record = read_run(folder)
    if record.status == "damaged":
        raise GridError(f"cell {cell.name}: {folder} is damaged ({record.reason}); restore it with "
                        f"`dvc checkout {cell.stage}`, or re-run it with `dvc repro --force {cell.stage}`")
    if record.status != "complete":
        raise GridError(f"cell {cell.name}: {folder} holds no complete run ({record.reason}); run "
                        f"`dvc repro {cell.stage}` to finish it")
    return record


def windows(height: int, width: int) -> list[tuple[int, int, int]]:
    """Square windows (top, left, side) covering an image, evenly spaced along its long side."""
    side, long = min(height, width), max(height, width)
    count = math.ceil(long / side)
    offsets = [round(i * (long - side) / (count - 1)) for i in range(count)] if count > 1 else [0]
    return [(0, o, side) if width >= height else (o, 0, side) for o in offsets]


def embed_frames(perceptor, frames: list[np.ndarray]):
    """Frames (H, W, 3) uint8 → (N, D) unit embeddings: mean of square windows' embeddings."""
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(frames), BATCH):
        batch = torch.from_numpy(np.stack(frames[start:start + BATCH])).permute(0, 3, 1, 2).float() / 255
        batch = batch.to(perceptor.device)
        crops = [F.interpolate(batch[:, :, t:t + side, l:l + side], size=perceptor.input_size, mode="bilinear",
                               align_corners=False, antialias=True)
                 for t, l, side in windows(batch.shape[2], batch.shape[3])]
        with torch.no_grad():
            embeds = torch.stack([perceptor.encode_image(c) for c in crops]).mean(0)
        out.append(F.normalize(embeds, dim=-1).cpu())
    return torch.cat(out)


def frame_similarities(perceptor, cell: CellFrames, pixels: list[np.ndarray]) -> list[float]:
    """Each frame's similarity to its scene prompt under one judge."""
    texts = [t for scene in cell.scene_prompts for t, _ in scene]
    images = embed_frames(perceptor, pixels)
    if not texts:
        return [float("nan")] * len(pixels)
    sims = (images @ perceptor.encode_text(texts).cpu().T).numpy()  # (frames, texts)
    per_scene, i = [], 0
    for scene in cell.scene_prompts:
        if scene:
            weights = np.array([w for _, w in scene])
            per_scene.append(sims[:, i:i + len(scene)] @ weights / weights.sum())
        else:
            per_scene.append(np.full(len(pixels), np.nan))
        i += len(scene)
    return [float(sum(factor * per_scene[k][f] for k, factor in blend)) for f, blend in enumerate(cell.blends)]


def score(grid: Grid, folder: Path = SCORES_DIR, *, device: str | None = None) -> dict[str, Path]:
    """Score every cell of the grid under every judge; write the score files."""
    cells = [CellFrames(grid, c) for c in grid.cells]
    pixels = {c.cell.name: c.pixels() for c in cells}
    similarity = judge_cells(grid, cells, pixels, device)
    bias = standardise(pd.DataFrame(
        [[c.cell.vqgan.slug, c.cell.generator, j.slug, similarity[c.cell.name, j.slug], c.cell.seed]
         for c in cells for j in grid.judges], columns=BIAS_COLUMNS[:-1]))
    stats_rows, stats_means = image_statistics(cells, pixels)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "bias_matrix": _write_csv(folder / "bias_matrix.csv", BIAS_COLUMNS, bias[BIAS_COLUMNS].values.tolist()),
        "bias": _write_json(folder / "bias.json", _nest(bias)),
        "self_preference": _write_json(folder / "self_preference.json", _preference_metrics(bias)),
        "image_stats": _write_csv(folder / "image_stats.csv", STATS_COLUMNS, stats_rows),
        "image_stats_summary": _write_json(folder / "image_stats.json", stats_means),
        "effects": _write_json(folder / "effects.json", analyse(
            with_similarities(final_frame_stats(cells, stats_rows), bias), grid.experiment)),
    }


def judge_cells(grid: Grid, cells: list[CellFrames], pixels: dict[str, list[np.ndarray]],
                device: str | None) -> dict[tuple[str, str], float]:
    """(cell name, judge slug) → the cell's mean similarity under that judge, one judge loaded at a time."""
    from engine.device import pick_device
    from engine.factory import load_perceptor

    torch_device = pick_device(device or grid.settings.get("device", "auto"))
    similarity: dict[tuple[str, str], float] = {}
    for judge in grid.judges:
        print(f"score: judging {len(cells)} cells with {judge.name}", flush=True)
        perceptor = load_perceptor(judge.name, torch_device, progress=False)
        for c in cells:
            values = [v for v in frame_similarities(perceptor, c, pixels[c.cell.name]) if not math.isnan(v)]
            similarity[c.cell.name, judge.slug] = float(np.mean(values)) if values else float("nan")
        del perceptor
    return similarity


def image_statistics(cells: list[CellFrames], pixels: dict[str, list[np.ndarray]]) -> tuple[list[list], dict]:
    """The image_stats.csv rows (one per frame) and {vqgan: {generator: {statistic: mean}}}."""
    rows, by_cell_kind = [], {}
    for c in cells:
        per_frame = [frame_stats(p) for p in pixels[c.cell.name]]
        for frame, stats in zip(c.frames, per_frame):
            rows.append([c.cell.name, c.cell.vqgan.slug, c.cell.generator, frame.n, frame.step,
                         *(stats[k] for k in STATS), stats["palette"]])
        by_cell_kind.setdefault(c.cell.vqgan.slug, {}).setdefault(c.cell.generator, []).extend(per_frame)
    means = {v: {g: {k: _round(float(np.mean([s[k] for s in frames]))) for k in STATS}
                 for g, frames in by_generator.items()} for v, by_generator in by_cell_kind.items()}
    return rows, means


def final_frame_stats(cells: list[CellFrames], stats_rows: list[list]) -> pd.DataFrame:
    """One row per cell: `run, vqgan, perceptors, seed` and the statistics of its final frame."""
    last = pd.DataFrame(stats_rows, columns=STATS_COLUMNS).groupby("cell", sort=False).tail(1).set_index("cell")
    return pd.DataFrame([{"run": c.cell.name, "vqgan": c.cell.vqgan.slug, "perceptors": c.cell.generator,
                          "seed": c.cell.seed, **last.loc[c.cell.name, list(STATS)].to_dict()} for c in cells])


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def _nest(bias: pd.DataFrame) -> dict:
    """{vqgan: {generator: {judge: mean similarity over seeds}}}."""
    result: dict = {}
    means = bias.groupby(["vqgan", "generator", "judge"], sort=False)["similarity"].mean()
    for (vqgan, generator, judge), value in means.items():
        result.setdefault(vqgan, {}).setdefault(generator, {})[judge] = _round(value)
    return result


def _preference_metrics(bias: pd.DataFrame) -> dict:
    """Self-preference per judge and per VQGAN (experiments/bias.py) as DVC metrics."""
    prefs = self_preference(bias)
    return {f"{by}s": {row[by]: {k: (_round(row[k]) if k != "seeds" else int(row[k]))
                                 for k in ("mean", "low", "high", "seeds")}
                       for row in summary(prefs, by).to_dict("records")}
            for by in ("judge", "vqgan")}


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _write_csv(path: Path, columns: list[str], rows: list[list]) -> Path:
    from engine.fsutil import atomic_write

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return atomic_write(path, text.getvalue())


def _write_json(path: Path, data: dict) -> Path:
    from engine.fsutil import atomic_write

    return atomic_write(path, json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return error_boundary(lambda: score_grid(args[0] if args else PARAMS_FILE))


def score_grid(params: str) -> None:
    """The stage: score the grid of `params` and say what was written."""
    grid = load_grid(params)
    paths = score(grid)
    judges = ", ".join(j.slug for j in grid.judges)
    print(f"score: {len(grid.cells)} cells × judges {judges} -> {', '.join(str(p) for p in paths.values())}")
    if grid.untrained:
        print("score: UNTRAINED models: these numbers only show that the pipeline works")


if __name__ == "__main__":
    sys.exit(main())
