"""`dvc plots show`'s page template with the Vega libraries inline, so that the page renders offline.

    python -m experiments.plots.offline [PATH]

DVC's own page loads vega, vega-lite and vega-embed from a CDN: without internet it stays blank
(`vegaEmbed is not defined`). This writes a template that carries the three libraries as Panel,
a registry package the project installs, ships them (panel/dist/bundled/vegaplot): by default
experiments/plots/offline.html, which .dvc/config names as `plots.html_template`. install.sh runs
it; run it again after upgrading Panel.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from engine.cli import Parser, error_boundary
from engine.errors import StateError
from engine.fsutil import atomic_write

TEMPLATE = Path("experiments/plots/offline.html")  # from the repository root; git-ignored
DVC_CONFIG_VALUE = "../" + TEMPLATE.as_posix()  # plots.html_template is relative to .dvc/
LIBRARIES = ("vega", "vega-lite", "vega-embed")  # in load order: vega-embed needs the other two
PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  {refresh_tag}
  <title>DVC plots</title>
  <!-- VERSIONS (BSD-3-Clause), inline from Panel's BUNDLE: no network needed -->
  LIBRARIES
  <style>body { font-family: sans-serif; } table { border-spacing: 15px; }</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def vega_bundle() -> Path:
    """Panel's folder of the Vega libraries (`vega@6.1.2`, ...), found without importing Panel."""
    spec = importlib.util.find_spec("panel")
    if spec is None or not spec.submodule_search_locations:
        raise StateError("Panel is not installed, and its files carry the Vega libraries of dvc plots show's "
                         "offline page: run `bash install.sh` (or pip install -r requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "dist" / "bundled" / "vegaplot"


def library_files(bundle: Path) -> list[Path]:
    """One file per library of `LIBRARIES`, in order; StateError naming what is missing."""
    files = []
    for name in LIBRARIES:
        found = sorted(bundle.glob(f"{name}@*"))
        if len(found) != 1:
            raise StateError(f"{bundle}: expected one {name}@VERSION file, found {len(found)}; reinstall panel")
        files.append(found[0])
    return files


def page_template(bundle: Path) -> str:
    """The HTML template: DVC fills in `{plot_divs}` (and `{refresh_tag}`); no `{scripts}`, which
    would add DVC's CDN script tags."""
    files = library_files(bundle)
    scripts = [f"<script>\n{f.read_text(encoding='utf-8')}\n</script>" for f in files]
    head = PAGE.replace("VERSIONS", ", ".join(f.name for f in files)).replace("BUNDLE", "/".join(bundle.parts[-4:]))
    return head.replace("LIBRARIES", "\n  ".join(scripts))  # last: the libraries' text is not searched


def write_template(path: Path = TEMPLATE) -> Path:
    """Write the offline page template to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, page_template(vega_bundle()))


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m experiments.plots.offline", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", type=Path, default=TEMPLATE, help=f"where to write it (default: {TEMPLATE})")
    args = parser.parse_args(argv)

    def write() -> None:
        path = write_template(args.path)
        print(f"{path}: {path.stat().st_size // 1024} KiB, the page template of `dvc plots show` (.dvc/config)")

    return error_boundary(write)


if __name__ == "__main__":
    sys.exit(main())
