"""The frame route and the Host check of the dashboard's server (dashboard/server.py).

Frames never travel over the websocket: the page gets `/frames/<path>` URLs and the browser
fetches and caches the files. Every request whose Host header names a host the server does
not serve is refused (DNS rebinding: a foreign page whose name resolves to 127.0.0.1).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from tornado.httputil import HTTPServerRequest
from tornado.routing import Matcher, Rule
from tornado.web import Application, HTTPError, RequestHandler, StaticFileHandler

FRAMES_ROUTE = "/frames"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})


class FrameHandler(StaticFileHandler):
    """Serve image files under the root and nothing else: a path that leaves the root, by
    `..`, `%2e%2e` or a symlink, is refused with 403; a name that is not an image, not UTF-8
    or holds a NUL byte is 404."""

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
        if Path(real).suffix.lower() not in IMAGE_SUFFIXES:
            raise HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)


def frame_url(path: str) -> str:
    """The URL of a frame, from its path relative to the root."""
    return f"{FRAMES_ROUTE}/{quote(path)}"


def frame_routes(root: str | Path) -> list[tuple[str, type, dict[str, Any]]]:
    """Tornado routes serving the frames under `root` (`pn.serve(extra_patterns=...)`)."""
    return [(rf"{FRAMES_ROUTE}/(.*)", FrameHandler, {"path": str(Path(root).resolve())})]


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
