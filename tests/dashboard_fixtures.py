"""Fixture run folders for the dashboard tests and benchmark: real PNG frames, real sidecars.

Every frame has its own colour: the hue tells the cell apart, the brightness the frame number,
so a test can tell from a pixel which cell and frame it is looking at.
"""
from __future__ import annotations

import colorsys
import hashlib
import http.client
import itertools
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from engine.runfolder import FORMAT, Frame, RunFolder, frame_count, frame_step, parse_cell_name, scene_weights
from engine.runfolder import cell_name as engine_cell_name
from engine.runfolder.frames import read_table

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STUDY = "exp_vqgan_base_perceptors"
PYTTI_SWITCHES = {"ViT-B32": "ViTB32", "ViT-B16": "ViTB16", "ViT-L14": "ViTL14", "RN50": "RN50",
                  "RN101": "RN101", "RN50x4": "RN50x4"}
PYTTI_IDS = {"ViT-B32": "ViT-B/32", "ViT-B16": "ViT-B/16", "ViT-L14": "ViT-L/14", "RN50": "RN50",
             "RN101": "RN101", "RN50x4": "RN50x4"}  # mmc_models ids
SCENES = ("a photograph of a bright and beautiful spring day"
          " || a painting of a cold wintery landscape")
SELF_PREFERENCE = {"mean": 0.75, "low": 0.5, "high": 1.0}  # what make_scores' self_preference.json says


def frame_colour(cell: int, n: int, n_frames: int = 40) -> tuple[int, int, int]:
    """The base colour of frame `n` (1-based) of the `cell`-th fixture cell."""
    r, g, b = colorsys.hsv_to_rgb((cell * 0.618034) % 1.0, 0.8, 0.3 + 0.65 * n / max(n_frames, 1))
    return round(r * 255), round(g * 255), round(b * 255)


def write_frame(path: Path, colour: tuple[int, int, int], size: tuple[int, int], noise: float = 0.0,
                seed: int = 0) -> None:
    """A `size` (w, h) PNG: `colour` shaded by a smooth gradient, plus Gaussian noise (sd)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 0.75 + 0.25 * np.sin(xx / w * 3.1 + yy / h * 1.7)[..., None]
    img = np.asarray(colour, np.float32) * shade
    if noise:
        img = img + np.random.default_rng(seed).normal(0.0, noise, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(path, compress_level=1)


def _frames(folder: Path, base: str, cell: int, n_frames: int, size: tuple[int, int],
            noise: float, numbers: Iterable[int] | None = None) -> None:
    for n in numbers or range(1, n_frames + 1):
        write_frame(folder / f"{base}_{n}.png", frame_colour(cell, n, n_frames), size, noise,
                    seed=cell * 10_000 + n)


def huge_png(path: Path, side: int) -> Path:
    """A valid side x side grey PNG of a few hundred KB: written row by row, never held whole
    (a decompression bomb, for the budgets that refuse it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack, row = zlib.compressobj(1), bytes(side + 1)
    body = b"".join(pack.compress(row) for _ in range(side)) + pack.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def fixture_loss(step: int, cell: int = 0) -> float:
    """The total loss a fixture run of `cell` logs after `step` steps."""
    return round(1.0 - 0.0002 * step - 0.1 * cell, 6)


def make_our_run(root: Path, name: str, vqgan: str, perceptors: Sequence[str], *, cell: int = 0,
                 n_frames: int = 3, size: tuple[int, int] = (32, 16), save_every: int = 10,
                 steps: int | None = None, seed: int = 12345, complete: bool = True,
                 noise: float = 0.0, draw: Callable[[int], np.ndarray] | None = None,
                 scenes: str | None = None) -> Path:
    """A run folder in our format (docs/run-folder-format.md), written through `RunFolder`: a
    loss row per step, and, where `complete`, metrics.json with the frames' SHA-256. `steps`
    (default `n_frames * save_every`) sets the run's length; its frames are then every
    `save_every` steps plus the last. `draw(n)`, where given, is frame n's (H, W, 3) uint8 pixels.
    `scenes` (default: `SCENES`, its first scene alone for an odd number of steps) is the prompt."""
    total = steps or n_frames * save_every
    n_frames = frame_count(total, save_every)
    scenes = scenes or (SCENES if total % 2 == 0 else SCENES.split("||")[0].strip())
    run = RunFolder(root, name)
    run.path.mkdir(parents=True, exist_ok=True)
    settings = {"vqgan_model": vqgan, "perceptors": list(perceptors), "width": size[0],
                "height": size[1], "seed": seed, "save_every": save_every, "scenes": scenes,
                "steps_per_scene": total // len(scenes.split("||"))}
    sidecar = {
        "format": FORMAT, "settings": settings, "seed": seed,
        "models": {"vqgan": {"name": f"{vqgan}_16384", "slug": vqgan, "untrained": True},
                   "perceptors": [{"name": f"{p}:openai", "slug": p, "untrained": True}
                                  for p in perceptors]},
        "prompts": [{"scene": k, "text": text.strip(), "weight": 1.0, "label": f"s{k}p0"}
                    for k, text in enumerate(scenes.split("||"))],
    }
    run.sidecar.write_text(json.dumps(sidecar), encoding="utf-8")
    if draw is None:
        _frames(run.path, name, cell, n_frames, size, noise)
    else:
        for n in range(1, n_frames + 1):
            Image.fromarray(draw(n), "RGB").save(run.frame(n))
    run.write_losses(["s0p0"], [[step, 0, fixture_loss(step, cell), 0.5 - 0.0001 * step]
                                for step in range(1, total + 1)])
    steps = [frame_step(n, save_every, total) for n in range(1, n_frames + 1)]
    n_scenes = len(scenes.split("||"))
    run.write_frame_table([
        Frame(n, run.frame(n).name, step, fixture_loss(step, cell),
              hashlib.sha256(run.frame(n).read_bytes()).hexdigest(),
              scene_weights(step - 1, n_scenes, settings["steps_per_scene"], 0))
        for n, step in enumerate(steps, 1)])
    if complete:
        run.write_metrics({"steps": total, "frames": n_frames, "final_loss": fixture_loss(total, cell),
                           "steps_per_second": 3.5})
    return run.path


def add_frame(folder: Path, n: int, colour: tuple[int, int, int], size: tuple[int, int]) -> Path:
    """Frame `n` of the run in `folder`, saved as the engine saves one: the PNG, then its row in
    the frame table (step: n times the first frame's; scene weights: the last frame's)."""
    run = RunFolder(folder.parent, folder.name)
    write_frame(run.frame(n), colour, size)
    frames = read_table(run.frame_table, run.namespace)
    step = n * frames[0].step
    run.write_frame_table([*frames, Frame(n, run.frame(n).name, step, fixture_loss(step),
                                          hashlib.sha256(run.frame(n).read_bytes()).hexdigest(),
                                          frames[-1].scenes)])
    return run.frame(n)


def damage_frame(folder: Path, n: int) -> Path:
    """Truncate frame `n` of the run in `folder` (its recorded SHA-256 no longer matches)."""
    path = folder / f"{folder.name}_{n}.png"
    path.write_bytes(path.read_bytes()[:100])
    return path


def make_pytti_run(root: Path, name: str, vqgan: str, perceptors: Sequence[str], *, cell: int = 0,
                   n_frames: int = 3, size: tuple[int, int] = (32, 16), save_every: int = 50,
                   rerun: int = 0, use_mmc: bool = True, settings_file: bool = True,
                   settings: dict | None = None, noise: float = 0.0) -> Path:
    """A pytti-core folder as the study's runs wrote it: `<ns>_settings.txt` (JSON plus trailing
    scene lines) and frames. With `use_mmc` (the study's way) every perceptor switch is true and
    `mmc_models` names the perceptors (pytti then ignores the switches); without it, the
    switches of `perceptors` are true and the rest false. `rerun=k` writes the `<ns>(k)` re-run
    into the same folder, as pytti does, with its own settings file unless `settings_file` is
    false. `settings` overrides or adds settings."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{name}({rerun})" if rerun else name
    values = {
        "scenes": SCENES, "scene_prefix": "", "scene_suffix": " | text:-1:-.9",
        "image_model": "VQGAN", "vqgan_model": vqgan, "width": size[0], "height": size[1],
        "steps_per_scene": n_frames * save_every // 2, "steps_per_frame": 50,
        "save_every": save_every, "seed": 12345 + rerun, "cutouts": 60, "cut_pow": 1,
        "animation_mode": "2D", "translate_x": "-1", "zoom_x_2d": "3", "learning_rate": None,
        **{switch: use_mmc or switch in {PYTTI_SWITCHES[p] for p in perceptors}
           for switch in ("ViTB32", "ViTB16", "ViTL14", "ViTL14_336px", "RN50", "RN101",
                          "RN50x4", "RN50x16", "RN50x64")},
        "use_mmc": use_mmc,
        "mmc_models": [{"architecture": "clip", "publisher": "openai", "id": PYTTI_IDS[p]}
                       for p in perceptors] if use_mmc else [],
        "file_namespace": name, **(settings or {}),
    }
    text = json.dumps(values, indent=4) + "\n" + "\n".join(
        f"b'{t:.2f}: {scene.strip()}'" for t, scene in zip((0, 20), SCENES.split("||")))
    if settings_file:
        (folder / f"{base}_settings.txt").write_text(text + "\n", encoding="utf-8")
    _frames(folder, base, cell, n_frames, size, noise)
    return folder


def copy_run(template: Path, root: Path, experiment: str, vqgan: str | None = None) -> Path:
    """A copy of the grid cell `template` as a cell of `experiment` (and `vqgan`, default the
    same) under `root`: sidecar, losses, frame table and metrics written through RunFolder,
    frames hard-linked under the new name."""
    cell = parse_cell_name(template.name)
    name = cell_name(cell.vqgan if vqgan is None else vqgan, list(cell.perceptors), experiment)
    run, old = RunFolder(root, name), RunFolder(template.parent, template.name)
    run.path.mkdir(parents=True)
    run.sidecar.write_text(old.sidecar.read_text(encoding="utf-8"), encoding="utf-8")
    for n, path in old.frame_paths().items():
        os.link(path, run.frame(n))
    header, *rows = old.losses.read_text().splitlines()
    run.write_losses(header.split(",")[3:], [[float(v) for v in row.split(",")] for row in rows])
    run.write_frame_table(read_table(old.frame_table, old.namespace))
    if old.metrics.exists():
        metrics = json.loads(old.metrics.read_text())
        run.write_metrics({k: v for k, v in metrics.items() if k != "complete"})
    return run.path


def make_empty_run(root: Path, name: str) -> Path:
    """A run folder with nothing in it yet."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_corrupt_run(root: Path, name: str, *, cell: int = 0, n_frames: int = 2) -> Path:
    """Frames beside a truncated settings sidecar."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_settings.json").write_text('{"format": "%s", "settings": {' % FORMAT)
    _frames(folder, name, cell, n_frames, (32, 16), 0.0)
    return folder


#: Folders that once crashed the catalog (or hung the server), by name: what is wrong.
MALFORMED = {
    "settings_is_a_list": 'sidecar {"settings": ["x"]}',
    "models_is_a_string": "sidecar models as a string",
    "text_step": "a non-numeric step in losses.csv",
    "deep_json": "a sidecar nested 100000 deep",
    "deep_metrics": "metrics.json nested 200 deep (parses, but past the depth bound)",
    "loop": "a directory symlink loop (loop -> .)",
    "surrogate": "a sidecar whose text escapes are not Unicode (\\udcff)",
}
NOT_UTF8 = b"latin1_caf\xe9"  # a folder name that is not UTF-8


def make_malformed_runs(root: Path) -> None:
    """Beside whatever `root` holds, one folder per `MALFORMED` entry (each with a real frame),
    and a folder named `NOT_UTF8`."""
    for i, name in enumerate(MALFORMED):
        if name != "loop":
            make_our_run(root, name, "coco", ["RN50"], cell=20 + i, n_frames=2)
    def sidecar(name: str) -> Path:
        return root / name / f"{name}_settings.json"
    sidecar("settings_is_a_list").write_text('{"settings": ["x"]}')
    doc = json.loads(sidecar("models_is_a_string").read_text())
    sidecar("models_is_a_string").write_text(json.dumps({**doc, "models": "imagenet"}))
    with open(root / "text_step" / "losses.csv", "a") as f:
        f.write("twenty,0,0.9,0.4\n")
    sidecar("deep_json").write_text('{"settings": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (root / "deep_metrics" / "metrics.json").write_text(
        '{"complete": true, "x": ' + "[" * 200 + "]" * 200 + "}")
    (root / "loop").symlink_to(".")
    doc = json.loads(sidecar("surrogate").read_text())
    doc["settings"]["vqgan_model"] = doc["models"]["vqgan"]["slug"] = "\udcff"
    sidecar("surrogate").write_text(json.dumps(doc))  # ASCII JSON holding the escape
    folder = os.path.join(os.fsencode(root), NOT_UTF8)
    os.mkdir(folder)
    write_frame(Path(os.fsdecode(os.path.join(folder, NOT_UTF8 + b"_1.png"))), (200, 10, 10),
                (32, 16))


def cell_name(vqgan: str, perceptors: Sequence[str], experiment: str = STUDY) -> str:
    """The grid's folder name for a cell."""
    return f"{experiment}__{vqgan}_{'_'.join(perceptors)}"


def make_grid(root: Path, vqgans: Sequence[str], perceptors: Sequence[str], n_frames: int, *,
              size: tuple[int, int] = (32, 16), noise: float = 0.0, save_every: int = 50,
              experiment: str = STUDY) -> list[Path]:
    """An N vqgans x M perceptors grid of our-format cells, K frames each."""
    return [
        make_our_run(root, cell_name(v, [p], experiment), v, [p], cell=i * len(perceptors) + j,
                     n_frames=n_frames, size=size, save_every=save_every, noise=noise)
        for i, v in enumerate(vqgans) for j, p in enumerate(perceptors)
    ]


#: grid.vary's prompt levels of `make_prompt_grid`: slug -> the prompt its sidecar records.
PROMPTS = {"city": "a city at night", "forest": "a forest in the fog", "sea": "a calm sea at dawn"}


def make_prompt_grid(root: Path, vqgans: Sequence[str], perceptors: Sequence[str], n_frames: int, *,
                     prompts: dict[str, str] = PROMPTS, experiment: str = STUDY, **run: object) -> list[Path]:
    """A grid with the prompt as a factor (grid.vary's `scenes`): a cell per VQGAN x perceptor x
    prompt, named `<experiment>__<vqgan>_<perceptor>__scenes-<slug>` (engine.runfolder.cell_name),
    whose sidecar records the prompt itself; `run`: more options of `make_our_run`."""
    cells = itertools.product(vqgans, perceptors, prompts.items())
    return [make_our_run(root, engine_cell_name(experiment, v, [p], varied=[("scenes", slug)]), v, [p],
                         cell=k, n_frames=n_frames, scenes=prompt, **run)
            for k, (v, p, (slug, prompt)) in enumerate(cells)]


def make_scores(scores: Path, vqgans: Sequence[str], perceptors: Sequence[str], n_frames: int,
                save_every: int = 50, experiment: str = STUDY, seeds: Sequence[int] = (12345,)) -> Path:
    """The judge and imagestats stages' files (`bias_matrix.csv`, `self_preference.json`,
    `image_stats.csv`) for a `make_grid` grid and its replicates `<cell>__seed-<n>` of `seeds`
    after the first, written through experiments.scorefiles. `SELF_PREFERENCE` is what
    self_preference.json says of every judge and VQGAN (with an interval where several seeds)."""
    import pandas as pd

    from experiments.bias import standardise
    from experiments.imagestats import STATS
    from experiments.scorefiles import BIAS_COLUMNS, FRAME_COLUMNS, write_csv, write_json

    def cell(v: str, p: str, k: int) -> str:
        return cell_name(v, [p], experiment) + (f"__seed-{seeds[k]}" if k else "")

    bias = pd.DataFrame([[cell(v, g, k), v, g, s, j, 0.2 + 0.01 * i + 0.02 * (g == j) + 0.001 * k]
                         for k, s in enumerate(seeds) for i, v in enumerate(vqgans)
                         for g in perceptors for j in perceptors], columns=BIAS_COLUMNS[:-1])
    stats = pd.DataFrame([
        [cell(v, p, k), v, p, s, n, n * save_every, 10 + n + i, 0.3 + 0.01 * n, 0.5 - 0.01 * j, 0.1 * n,
         *(0.01 * n for _ in STATS[4:]), "#%02x%02x%02x;#000000" % frame_colour(i * len(perceptors) + j, n, n_frames)]
        for k, s in enumerate(seeds) for i, v in enumerate(vqgans) for j, p in enumerate(perceptors)
        for n in range(1, n_frames + 1)], columns=[*FRAME_COLUMNS, *STATS, "palette"])
    preference = {**SELF_PREFERENCE, "seeds": len(seeds)} if len(seeds) > 1 else \
        {**SELF_PREFERENCE, "low": None, "high": None, "seeds": 1}
    scores.mkdir(parents=True, exist_ok=True)
    write_csv(scores / "bias_matrix.csv", standardise(bias), BIAS_COLUMNS)
    write_json(scores / "self_preference.json", {"judges": {p: preference for p in perceptors},
                                                 "vqgans": {v: preference for v in vqgans}})
    write_csv(scores / "image_stats.csv", stats, list(stats.columns))
    return scores


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, host: str = "127.0.0.1",
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET sent with `path` exactly as given (no client-side normalising)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def running(command: Sequence[str], port: int, ready_path: str = "/", timeout: float = 90.0,
            env: dict[str, str] | None = None, cwd: Path = REPO) -> Iterator[subprocess.Popen]:
    """Run a server `command` in `cwd` (default the repo root; in `env`) until `ready_path`
    answers 200; stop it after."""
    proc = subprocess.Popen(list(command), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if http_get(port, ready_path)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from {command} on port {port}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def dashboard_server(root: Path, *extra: str) -> Iterator[str]:
    """`python -m dashboard serve --root root` on a free local port; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "dashboard", "serve", "--root", str(root),
               "--port", str(port), *extra]
    with running(command, port):
        yield f"http://127.0.0.1:{port}"


def open_offline(browser, url: str, width: int, height: int):
    """Open `url` in a new offline browser context; return (page, requested URLs, page errors).
    Close it with `page.context.close()`."""
    context = browser.new_context(offline=True, viewport={"width": width, "height": height})
    requests: list[str] = []
    errors: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page, requests, errors


def write_non_finite(folder: Path) -> None:
    """Put NaN and ±Infinity into the metrics.json and the sidecar of the finished run in `folder`
    (Python's json writes and reads them; strict JSON has no such numbers)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "wall_time_s": float("nan"),
                                                     "peak_memory_mb": float("inf")}))
    sidecar = folder / f"{folder.name}_settings.json"
    doc = json.loads(sidecar.read_text())
    doc["settings"]["cut_pow"] = float("-inf")
    sidecar.write_text(json.dumps(doc))


def interrupted_export(root: Path, out: Path, env: dict[str, str], cwd: Path = REPO) -> int:
    """`python -m dashboard export --root root --out out` (in `cwd`, with `env`) stopped by Ctrl-C
    once it has packed a sheet; its exit code. AssertionError where it ended before."""
    proc = subprocess.Popen([sys.executable, "-m", "dashboard", "export", "--root", str(root), "--out", str(out)],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = b""
    while not re.search(rb"\| *[1-9]\d*/\d+", seen):  # tqdm: a sheet packed
        chunk = proc.stderr.read1(4096)
        assert chunk, f"the export ended before it was interrupted: {seen[-300:]!r}"
        seen += chunk
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    return proc.returncode


def with_losses(root: Path):
    """The catalog of `root` with its runs' loss tables read (`dashboard.losstables.losses`)."""
    from dashboard.catalog import load_catalog
    from dashboard.losstables import losses

    return losses(load_catalog(root), root)
