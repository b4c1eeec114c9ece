"""`python -m dashboard serve`: the app with its frames as files, on localhost by default.

Frames come from a static route serving the catalog's frames (dashboard/frames.py), added through
`pn.serve(extra_patterns=...)`; requests for any host but localhost, 127.0.0.1 and those given
with `--allow-websocket-origin` are refused, frames and pages alike; every route of Panel's and
Bokeh's that the page does not use is closed (`frames.close_routes`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import panel as pn

from .app import TITLE, create_app
from .frames import LOCAL_HOSTS, close_routes, frame_routes, guard_hosts, served_hosts
from .state import RootState

ANY_ADDRESS = {"", "0.0.0.0", "::"}


def websocket_origins(port: int, address: str, origins: Sequence[str]) -> list[str]:
    """The origins whose pages may open the app: localhost, 127.0.0.1, the bound `address`
    (unless it is every interface) and `origins`."""
    hosts = sorted(LOCAL_HOSTS) + ([] if address in LOCAL_HOSTS | ANY_ADDRESS else [address])
    return [f"{h}:{port}" for h in hosts] + list(origins)


def serve(root: str | Path, scores: str | Path | None = None, port: int = 5006,
          address: str = "127.0.0.1", origins: Sequence[str] = (), show: bool = False) -> None:
    """Serve the dashboard for `root` until interrupted: every session's app reads the root
    through one `RootState`. FileNotFoundError where `root` is not a folder."""
    state = RootState.open(root, scores, background=True)
    allowed = websocket_origins(port, address, origins)
    print(f"dashboard: serving {root} at http://{address}:{port}/", flush=True)
    server = pn.serve(
        lambda: create_app(state), port=port, address=address, show=show, start=False,
        websocket_origin=allowed, title=TITLE, extra_patterns=frame_routes(root, state.frame_sizes),
    )
    # Bokeh's Server keeps its Tornado application as `_tornado` (Panel reads it too); the
    # Host rule goes first in its router, so it answers before any page, frame or asset route.
    close_routes(server._tornado)
    guard_hosts(server._tornado, served_hosts(allowed))
    server.start()
    server.io_loop.start()  # until Ctrl-C (panel stops the loop on SIGINT)
