"""Stage `score`: the aesthetic bias matrix and per-frame image statistics of the grid.

Bias matrix: every cell's frames are judged by every perceptor of the grid (the judges),
generator (the cell's perceptors) × judge, per VQGAN. A frame's similarity under a judge is
the cosine similarity of its image embedding to its scene prompt:

- the scene prompt is the scene's positive-weight prompts (`engine.prompts.parse_scenes` on
  the cell's own settings, so the scene suffix's negative `text`/`watermark` prompts are left
  out), their similarities averaged with the prompt weights;
- the scene is the one active at the frame's last step (frame n is the image after step
  n·save_every); inside a scene transition the two scenes' similarities are blended with the
  engine's interpolation factors;
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
Statistics: experiments/imagestats.py.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np

import pandas as pd

from experiments.bias import self_preference, standardise, summary
from experiments.grid import PARAMS_FILE, SCORES_DIR, Cell, Grid, GridError, load_grid
from experiments.imagestats import STATS, frame_stats

BIAS_COLUMNS = ["vqgan", "generator", "judge", "similarity", "seed", "z"]
STATS_COLUMNS = ["cell", "vqgan", "generator", "frame", "step", *STATS, "palette"]
BATCH = 32


class CellFrames:
    """A finished cell folder: its frames, each frame's step and scene weights, its scene prompts."""

    def __init__(self, grid: Grid, cell: Cell):
        from engine.outputs import RunFolder
        from engine.prompts import parse_scenes, scene_blend

        self.cell = cell
        folder = RunFolder(grid.out_dir, cell.name)
        sidecar = folder.read_sidecar()
        if sidecar is None or not folder.is_complete():
            raise GridError(f"cell {cell.name}: {folder.path} holds no complete run (missing settings or "
                            "metrics.json); run `dvc repro` to make it")
        s = sidecar["settings"]
        self.frames = folder.frames()
        if not self.frames:
            raise GridError(f"cell {cell.name}: no frames in {folder.path}")
        scenes = parse_scenes(s["scenes"], s.get("scene_prefix", ""), s.get("scene_suffix", ""))
        total = len(scenes) * s["steps_per_scene"]
        # Per scene: the positive prompts' texts and weights.
        self.scene_prompts = [[(p.text, p.weight) for p in scene if p.weight > 0] for scene in scenes]
        self.steps, self.blends = [], []
        for path in self.frames:
            n = int(path.stem.rsplit("_", 1)[1])
            step = min(n * s["save_every"], total)
            self.steps.append(step)
            self.blends.append(scene_blend(step - 1, len(scenes), s["steps_per_scene"], s["interpolation_steps"]))

    def pixels(self) -> list[np.ndarray]:
        from PIL import Image

        return [np.asarray(Image.open(p).convert("RGB")) for p in self.frames]


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
    from engine.factory import load_perceptor
    from engine.run import pick_device

    cells = [CellFrames(grid, c) for c in grid.cells]
    pixels = {c.cell.name: c.pixels() for c in cells}
    torch_device = pick_device(device or grid.settings.get("device", "auto"))
    similarity: dict[tuple[str, str], dict[str, float]] = {}  # (cell, judge) → mean
    for judge in grid.judges:
        print(f"score: judging {len(cells)} cells with {judge.name}", flush=True)
        perceptor = load_perceptor(judge.name, torch_device, progress=False)
        for c in cells:
            values = [v for v in frame_similarities(perceptor, c, pixels[c.cell.name]) if not math.isnan(v)]
            similarity[c.cell.name, judge.slug] = float(np.mean(values)) if values else float("nan")
        del perceptor

    folder.mkdir(parents=True, exist_ok=True)
    bias = standardise(pd.DataFrame(
        [[c.cell.vqgan.slug, c.cell.generator, j.slug, similarity[c.cell.name, j.slug], c.cell.seed]
         for c in cells for j in grid.judges], columns=BIAS_COLUMNS[:-1]))
    stats_rows, frame_values = [], {}
    for c in cells:
        per_frame = [frame_stats(p) for p in pixels[c.cell.name]]
        for path, step, stats in zip(c.frames, c.steps, per_frame):
            n = int(path.stem.rsplit("_", 1)[1])
            stats_rows.append([c.cell.name, c.cell.vqgan.slug, c.cell.generator, n, step,
                               *(stats[k] for k in STATS), stats["palette"]])
        frame_values.setdefault(c.cell.vqgan.slug, {}).setdefault(c.cell.generator, []).extend(per_frame)
    stats_means = {v: {g: {k: _round(float(np.mean([s[k] for s in frames]))) for k in STATS}
                       for g, frames in by_generator.items()} for v, by_generator in frame_values.items()}

    paths = {
        "bias_matrix": _write_csv(folder / "bias_matrix.csv", BIAS_COLUMNS,
                                  bias[BIAS_COLUMNS].values.tolist()),
        "bias": _write_json(folder / "bias.json", _nest(bias)),
        "self_preference": _write_json(folder / "self_preference.json", _preference_metrics(bias)),
        "image_stats": _write_csv(folder / "image_stats.csv", STATS_COLUMNS, stats_rows),
        "image_stats_summary": _write_json(folder / "image_stats.json", stats_means),
    }
    return paths


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
    try:
        grid = load_grid(args[0] if args else PARAMS_FILE)
        paths = score(grid)
    except GridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    judges = ", ".join(j.slug for j in grid.judges)
    print(f"score: {len(grid.cells)} cells × judges {judges} -> {', '.join(str(p) for p in paths.values())}")
    if grid.untrained:
        print("score: UNTRAINED models: these numbers only show that the pipeline works")
    return 0


if __name__ == "__main__":
    sys.exit(main())
