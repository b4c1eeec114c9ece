"""The routes of the dashboard's server (dashboard/server.py): the frame route, the Host check,
and the closing of every route of Panel's and Bokeh's the page does not use.

Frames never travel over the websocket: the page gets `/frames/<path>` URLs and the browser
fetches and caches the files. The route serves the catalog's frames and nothing else, each only
where its header says it is an image of its run's size (nothing is decoded), read as a regular
file. Every request whose Host header names a host the server does not serve is refused (DNS
rebinding: a foreign page whose name resolves to 127.0.0.1).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import quote

from bokeh.server.views.ico_handler import IcoHandler
from bokeh.server.views.multi_root_static_handler import MultiRootStaticHandler
from bokeh.server.views.static_handler import StaticHandler
from panel.io.server import DocHandler, WSHandler
from tornado.httputil import HTTPServerRequest
from tornado.routing import Matcher, Rule
from tornado.web import Application, HTTPError, RequestHandler, StaticFileHandler

from engine.fsutil import BadFile, regular_file

from .rows import check_frame

FRAMES_ROUTE = "/frames"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})
CHUNK = 64 * 1024  # bytes of a frame sent at a time
#: {frame path relative to the root: its run's (width, height), None where unknown}
FrameSizes = Callable[[], Mapping[str, "tuple[int, int] | None"]]


class FrameHandler(StaticFileHandler):
    """Serve the frames of the catalog (`frames()`) and nothing else: a path that leaves the root,
    by `..`, `%2e%2e` or a symlink, is refused with 403; one that is no frame of the catalog, a
    name that is not UTF-8 or holds a NUL byte, and a frame whose header says it is not an
    image of its run's size (`rows.check_frame`) are 404."""

    def initialize(self, path: str, frames: FrameSizes, default_filename: str | None = None) -> None:
        super().initialize(path, default_filename)
        self.frames = frames

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(404) from None

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if "\x00" in absolute_path:
            raise HTTPError(404)
        real_root, real = os.path.realpath(root), os.path.realpath(absolute_path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise HTTPError(403, "outside the root")
        frames = self.frames()
        name = Path(os.path.relpath(absolute_path, root)).as_posix()
        if name not in frames:
            raise HTTPError(404, "not a frame of the catalog")
        try:
            check_frame(Path(absolute_path), frames[name])
        except (OSError, BadFile) as e:
            raise HTTPError(404, "not a frame the run can show: %s", getattr(e, "strerror", None) or e) from None
        return super().validate_absolute_path(root, absolute_path)

    @classmethod
    def get_content(cls, abspath: str, start: int | None = None, end: int | None = None) -> Iterator[bytes]:
        """The frame's bytes from `start` to `end`, opened only as a regular file (a FIFO put in
        its place after the check is named, never opened blocking)."""
        with regular_file(abspath) as f:
            f.seek(start or 0)
            left = None if end is None else end - (start or 0)
            while left is None or left > 0:
                chunk = f.read(CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    return
                left = None if left is None else left - len(chunk)
                yield chunk


def frame_url(path: str) -> str:
    """The URL of a frame, from its path relative to the root."""
    return f"{FRAMES_ROUTE}/{quote(path)}"


def frame_routes(root: str | Path, frames: FrameSizes) -> list[tuple[str, type, dict[str, Any]]]:
    """Tornado routes serving the frames `frames()` lists under `root`
    (`pn.serve(extra_patterns=...)`)."""
    return [(rf"{FRAMES_ROUTE}/(.*)", FrameHandler, {"path": str(Path(root).resolve()), "frames": frames})]


#: The handlers of the routes the page uses: the page, its websocket, Bokeh's and Panel's static
#: assets, the icon, the frames and the Host check. Every other route is closed.
USED = (DocHandler, WSHandler, StaticHandler, MultiRootStaticHandler, IcoHandler, FrameHandler)


def close_routes(app: Application) -> list[str]:
    """Drop every route of `app` whose handler the page does not use (`USED`): Panel's
    `/components/`, which imports the module a URL names, `/autoload.js`, `/metadata`; such
    requests get 404. The patterns dropped."""
    router = app.wildcard_router
    used = [isinstance(r.target, type) and issubclass(r.target, USED) for r in router.rules]
    dropped = [r.matcher.regex.pattern for r, keep in zip(router.rules, used) if not keep]
    router.rules = [r for r, keep in zip(router.rules, used) if keep]
    return dropped


def host_name(host: str) -> str:
    """`Example.org:5006` -> `example.org`; `[::1]:5006` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def served_hosts(origins: Iterable[str]) -> frozenset[str] | None:
    """The host names a server answers: localhost, 127.0.0.1 and those of `origins`
    (`host[:port]`, as given to `--allow-websocket-origin`); None (any) where one is `*`."""
    origins = list(origins)
    if "*" in origins:
        return None
    return LOCAL_HOSTS | {host_name(o) for o in origins}


class ForeignHost(Matcher):
    """Matches a request whose Host header names none of `hosts`."""

    def __init__(self, hosts: frozenset[str]):
        self.hosts = hosts

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        return None if host_name(request.host) in self.hosts else {}


class HostRefused(RequestHandler):
    """403 for every request (routed here by `ForeignHost`)."""

    def prepare(self) -> None:
        raise HTTPError(403, "unknown Host header")


def guard_hosts(app: Application, hosts: frozenset[str] | None) -> None:
    """Refuse, before any other route, every request to `app` for a host not in `hosts`."""
    if hosts is not None:
        rule = app.default_router.process_rule(Rule(ForeignHost(hosts), HostRefused))
        app.default_router.rules.insert(0, rule)
