"""`python -m dashboard serve`: the app with its frames as files, on localhost by default.

Frames come from a static route confined to the root (dashboard/frames.py); requests for any
host but localhost, 127.0.0.1 and those given with `--allow-websocket-origin` are refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import panel as pn

from .app import TITLE, create_app
from .frames import LOCAL_HOSTS, mount_frames

ANY_ADDRESS = {"", "0.0.0.0", "::"}


def serve(root: str | Path, scores: str | Path | None = None, port: int = 5006,
          address: str = "127.0.0.1", origins: Sequence[str] = (), show: bool = False) -> None:
    """Serve the dashboard for `root` until interrupted."""
    if not Path(root).is_dir():
        raise SystemExit(f"no such folder: {root}")
    hosts = sorted(LOCAL_HOSTS) + ([] if address in LOCAL_HOSTS | ANY_ADDRESS else [address])
    print(f"dashboard: serving {root} at http://{address}:{port}/", flush=True)
    server = pn.serve(
        lambda: create_app(root, scores), port=port, address=address, show=show, start=False,
        websocket_origin=[f"{h}:{port}" for h in hosts] + list(origins), title=TITLE,
    )
    mount_frames(root)  # before the first request: frames and the Host check
    server.start()
    server.io_loop.start()  # until Ctrl-C (panel stops the loop on SIGINT)
