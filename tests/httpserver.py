"""A small threaded HTTP file server on 127.0.0.1 for tests (supports Range requests).

Usage::

    with LocalFileServer() as server:
        url = server.add("models/last.ckpt", b"...")   # or a Path to serve from disk
        server.cut_after("models/last.ckpt", 1000)      # next response breaks after 1000 bytes
        server.ignore_range = True                      # answer every GET with 200 + full body
        server.max_range_bytes = 4096                   # 206 answers carry at most 4096 bytes
        server.chunked = True                           # chunked bodies, no Content-Length
        server.set_status("models/last.ckpt", 500)      # answer with an error status
        server.range_log                                # Range headers received, in order
        server.misbehave("x.ckpt", announce=10**10)       # lie about the length
        server.misbehave("x.ckpt", trickle_s=2)          # one byte every 2 s
        server.misbehave("x.ckpt", endless=True)         # a body that never ends (chunked)
        server.misbehave("x.ckpt", pause_s=0.05)         # sleep between 64 KiB pieces
        server.add("page", b"<html>", content_type="text/html")

Misbehaving bodies stop by themselves after ``MAX_MISBEHAVE_S`` seconds, so a test cannot hang.
"""
from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

_WRITE_CHUNK = 64 * 1024
MAX_MISBEHAVE_S = 30.0


@dataclass(frozen=True)
class Misbehaviour:
    """How the server lies about or drags out one file's body."""

    announce: int | None = None  # Content-Length to send instead of the real one
    trickle_s: float | None = None  # send one byte, then sleep this long
    endless: bool = False  # repeat the content forever (chunked, no length)
    pause_s: float = 0.0  # sleep between pieces


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received."""

    method: str
    name: str
    range: str | None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Ignore clients that hang up early; report anything else."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class LocalFileServer:
    """Serve registered files over HTTP/1.1 on 127.0.0.1 at a free port.

    Unknown names get 404. Single byte ranges (``bytes=A-``, ``bytes=A-B``,
    ``bytes=-N``) get 206, unsatisfiable ones 416 with ``Content-Range: bytes */size``.
    """

    def __init__(self) -> None:
        self._files: dict[str, bytes | Path] = {}
        self._cuts: dict[str, list[int]] = {}
        self._statuses: dict[str, int] = {}
        self._types: dict[str, str] = {}
        self._misbehaviours: dict[str, Misbehaviour] = {}
        self._lock = threading.Lock()
        self.ignore_range = False
        self.max_range_bytes: int | None = None
        self.chunked = False
        self.requests: list[RequestRecord] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup -------------------------------------------------------------
    def add(self, name: str, data: bytes | Path, content_type: str = "application/octet-stream") -> str:
        """Register ``name`` with its bytes (or a file path to serve); return its URL."""
        name = name.lstrip("/")
        with self._lock:
            self._files[name] = data if isinstance(data, bytes) else Path(data)
            self._types[name] = content_type
        return self.url(name)

    def misbehave(self, name: str, **how: object) -> None:
        """Serve ``name``'s body badly from now on (see `Misbehaviour`)."""
        with self._lock:
            self._misbehaviours[name.lstrip("/")] = Misbehaviour(**how)

    def remove(self, name: str) -> None:
        """Forget ``name`` (it will get 404 from now on)."""
        with self._lock:
            self._files.pop(name.lstrip("/"), None)

    def cut_after(self, name: str, nbytes: int) -> None:
        """Make the next GET of ``name`` send full headers, ``nbytes`` body bytes, then close.

        Calls queue up: two calls cut the next two GETs, in order.
        """
        with self._lock:
            self._cuts.setdefault(name.lstrip("/"), []).append(nbytes)

    def set_status(self, name: str, status: int | None) -> None:
        """Answer requests for ``name`` with ``status`` (None: back to normal)."""
        with self._lock:
            if status is None:
                self._statuses.pop(name.lstrip("/"), None)
            else:
                self._statuses[name.lstrip("/")] = status

    # -- inspection --------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    def url(self, name: str) -> str:
        """The URL of ``name`` on this server (registered or not)."""
        return f"http://127.0.0.1:{self.port}/{quote(name.lstrip('/'))}"

    @property
    def range_log(self) -> list[str | None]:
        """The Range header of every request received (None where absent), in order."""
        with self._lock:
            return [r.range for r in self.requests]

    def requests_for(self, name: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.name == name.lstrip("/")]

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "LocalFileServer":
        self._httpd = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,),
                                        daemon=True, name="LocalFileServer")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "LocalFileServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler -----------------------------------------------
    def _lookup(self, method: str, name: str, range_header: str | None
                ) -> tuple[bytes | None, int | None, int | None, str, Misbehaviour]:
        """Log the request; return (content or None, forced status, cut-after bytes, type, misbehaviour)."""
        with self._lock:
            self.requests.append(RequestRecord(method, name, range_header))
            data = self._files.get(name)
            status = self._statuses.get(name)
            queued = self._cuts.get(name) if method == "GET" and data is not None else None
            cut = queued.pop(0) if queued else None
            kind = self._types.get(name, "application/octet-stream")
            bad = self._misbehaviours.get(name, Misbehaviour())
        if isinstance(data, Path):
            data = data.read_bytes()
        return data, status, cut, kind, bad


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) for a single ``bytes=`` range, or None if unsatisfiable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.groups()
    if not first:  # suffix range: the last N bytes
        n = int(last)
        return (max(size - n, 0), size - 1) if n and size else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start < size and start <= end else None


def _make_handler(server: LocalFileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _send_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _serve(self, body: bool) -> None:
            name = unquote(urlsplit(self.path).path).lstrip("/")
            range_header = self.headers.get("Range")
            data, status, cut, kind, bad = server._lookup(self.command, name, range_header)
            if status is not None:
                return self._send_empty(status)
            if data is None:
                return self._send_empty(404)
            size = len(data)
            start, end, code = 0, size - 1, 200
            if range_header and not server.ignore_range:
                span = _parse_range(range_header, size)
                if span is None:
                    return self._send_empty(416, {"Content-Range": f"bytes */{size}"})
                (start, end), code = span, 206
                if server.max_range_bytes is not None:
                    end = min(end, start + server.max_range_bytes - 1)
            chunked = server.chunked or bad.endless
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Accept-Ranges", "none" if server.ignore_range else "bytes")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(bad.announce or end - start + 1))
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if body and bad != Misbehaviour():
                self._misbehave(memoryview(data)[start:end + 1], bad, chunked)
            elif body:
                self._write_body(memoryview(data)[start:end + 1], cut)

        def _misbehave(self, payload: memoryview, bad: Misbehaviour, chunked: bool) -> None:
            """Trickle, pause or repeat the body, for at most MAX_MISBEHAVE_S; then hang up."""
            self.close_connection = True
            piece_size = 1 if bad.trickle_s else _WRITE_CHUNK
            stop = time.monotonic() + MAX_MISBEHAVE_S
            i = 0
            while time.monotonic() < stop and (bad.endless or i < len(payload)):
                piece = payload[i % len(payload):i % len(payload) + piece_size]
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece)
                self.wfile.flush()
                i += len(piece)
                time.sleep(bad.trickle_s or bad.pause_s)

        def _write_body(self, payload: memoryview, cut: int | None) -> None:
            """Send ``payload`` (chunked if asked); with ``cut``, stop after that many bytes."""
            if cut is not None:
                payload = payload[:cut]
                self.close_connection = True
            for i in range(0, len(payload), _WRITE_CHUNK):
                piece = payload[i:i + _WRITE_CHUNK]
                if server.chunked:
                    self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
            if server.chunked and cut is None:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler
