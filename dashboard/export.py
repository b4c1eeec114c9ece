"""Static export: one HTML page plus an assets folder that plays the synced grid offline.

Each run's frames are downscaled and packed into one sprite sheet (WebP or JPEG), so the page
loads one image per cell and switches steps by moving the sheet: no server, no network, and
the same player (static/player.js) as the app.
"""
from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from engine.fsutil import atomic_path

from .catalog import load_catalog
from .grid import grid_spec
from .player import STATIC

MAX_SIDE = 16383  # WebP's limit, per side
FORMATS = {"webp": ("WEBP", ".webp"), "jpeg": ("JPEG", ".jpg")}
PUBLIC = 0o644  # the temporary files atomic_path makes are private
ASSET = re.compile(r"^\d{3}-.*\.(webp|jpg)$")


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """(page, assets): `X.html` and `X_files/`; for a folder, `index.html` and `assets/`."""
    out = Path(out)
    if out.suffix == ".html":
        return out, out.with_name(f"{out.stem}_files")
    return out / "index.html", out / "assets"


def sheet_shape(n: int, w: int, h: int) -> tuple[int, int]:
    """(columns, rows) of a near-square sheet of `n` frames of w x h."""
    cols = max(1, min(n, math.ceil(math.sqrt(n * h / w))))
    rows = math.ceil(n / cols)
    if cols * w > MAX_SIDE or rows * h > MAX_SIDE:
        raise ValueError(f"{n} frames of {w}x{h} do not fit one sprite sheet; lower --width")
    return cols, rows


def pack_sheet(root: Path, frames: list[str], width: int, dest: Path, fmt: str,
               quality: int) -> dict[str, int]:
    """Downscale `frames` to at most `width` px wide and pack them row by row into `dest`."""
    with Image.open(root / frames[0]) as first:
        w0, h0 = first.size
    w = min(width, w0)
    h = max(1, round(h0 * w / w0))
    cols, rows = sheet_shape(len(frames), w, h)
    sheet = Image.new("RGB", (cols * w, rows * h))
    for k, name in enumerate(frames):
        with Image.open(root / name) as frame:
            frame = frame.convert("RGB")
            if frame.size != (w, h):
                frame = frame.resize((w, h), Image.Resampling.LANCZOS)
            sheet.paste(frame, ((k % cols) * w, (k // cols) * h))
    with atomic_path(dest) as tmp:
        sheet.save(tmp, format=FORMATS[fmt][0], quality=quality, method=4)
        tmp.chmod(PUBLIC)
    return {"cols": cols, "rows": rows, "width": w, "height": h}


def page(spec: dict, title: str) -> str:
    """The HTML page: the player's CSS and JS inline, the grid as JSON."""
    css = (STATIC / "player.css").read_text(encoding="utf-8")
    js = (STATIC / "player.js").read_text(encoding="utf-8")
    data = json.dumps(spec, separators=(",", ":")).replace("</", "<\\/")
    return "\n".join([
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>", css, "body { margin: 12px; }", "</style>", "</head>", "<body>",
        f"<h3 style='font: 600 15px system-ui, sans-serif'>{html.escape(title)}</h3>",
        '<div id="dp-root"></div>',
        f'<script type="application/json" id="dp-data">{data}</script>',
        '<script type="module">', js,
        'const data = JSON.parse(document.getElementById("dp-data").textContent);',
        'mount(document.getElementById("dp-root"), data);',
        "</script>", "</body>", "</html>", "",
    ])


def export(root: str | Path, out: str | Path, rows: str = "vqgan", cols: str = "generator",
           width: int = 256, fmt: str = "webp", quality: int = 80) -> Path:
    """Write the static page for the runs under `root` to `out`; return the page's path."""
    root = Path(root).resolve()
    runs = load_catalog(root).query("n_frames > 0")
    html_path, assets = output_paths(out)
    ext = FORMATS[fmt][1]
    names = {run: f"{i:03d}-{re.sub(r'[^A-Za-z0-9._-]+', '-', run)[:80]}{ext}"
             for i, run in enumerate(runs["run"])}
    sheets = {
        run.run: pack_sheet(root, run.frames, width, assets / names[run.run], fmt, quality)
        for run in tqdm(runs.itertuples(), total=len(runs), desc="packing", unit="cell")
    }

    def sheet_frames(run: pd.Series) -> dict:
        s = sheets[run.run]
        url = f"{assets.name}/{names[run.run]}"
        return {"sheet": {"url": url, "cols": s["cols"], "rows": s["rows"]},
                "width": s["width"], "height": s["height"]}

    spec = grid_spec(runs, rows, cols, sheet_frames)
    with atomic_path(html_path) as tmp:
        tmp.write_text(page(spec, f"VQGAN+CLIP grid: {root.name}"), encoding="utf-8")
        tmp.chmod(PUBLIC)
    for stale in assets.iterdir() if assets.is_dir() else ():
        if ASSET.match(stale.name) and stale.name not in names.values():
            stale.unlink()
    return html_path


def export_size(out: str | Path) -> int:
    """Bytes of the page written to `out` and its assets."""
    html_path, assets = output_paths(out)
    return html_path.stat().st_size + sum(p.stat().st_size for p in assets.glob("*") if p.is_file())
