"""The server: frames from a static route confined to the root, bound to localhost, serving
only its own host names, and answering whatever the folders under the root hold."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from dashboard_fixtures import (
    MALFORMED, cell_name, dashboard_server, free_port, http_get, make_grid, make_malformed_runs,
    running,
)

CELL = cell_name("sflckr", ["RN50"])
FRAME = f"/frames/{CELL}/{CELL}_1.png"
OTHER_HOST = "dashboard.example"  # given with --allow-websocket-origin


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("served")
    (base / "secret.png").write_bytes(b"\x89PNG not yours")
    (base / "secret.txt").write_text("not yours")
    root = base / "runs"
    make_grid(root, ["sflckr"], ["RN50"], 2)
    (root / CELL / "escape.png").symlink_to(base / "secret.png")
    make_malformed_runs(root)  # with a symlink loop, which once hung the server
    return root


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[str]:
    with dashboard_server(root, "--allow-websocket-origin", f"{OTHER_HOST}:80") as url:
        yield url


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_frames_are_served_as_files(server: str) -> None:
    status, body = http_get(_port(server), FRAME)
    assert status == 200 and body.startswith(b"\x89PNG")


@pytest.mark.parametrize("path", [
    "/frames/../secret.png", "/frames/%2e%2e/secret.png", "/frames/%2E%2E%2Fsecret.png",
    f"/frames/{CELL}/../../secret.txt", "/frames/..%2fsecret.png", f"/frames/{CELL}/escape.png",
    "/frames//etc/passwd", "/frames/%2fetc%2fpasswd",
])
def test_paths_leaving_the_root_are_refused(server: str, path: str) -> None:
    status, body = http_get(_port(server), path)
    assert status in (403, 404) and b"not yours" not in body and b"root:" not in body


def test_only_images_are_served(server: str) -> None:
    assert http_get(_port(server), f"/frames/{CELL}/losses.csv")[0] == 404
    assert http_get(_port(server), f"/frames/{CELL}/metrics.json")[0] == 404


def test_binds_to_localhost_by_default(server: str) -> None:
    port = _port(server)
    listening = [c for c in psutil.net_connections(kind="inet")
                 if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN]
    assert listening and {c.laddr.ip for c in listening} <= {"127.0.0.1", "::1"}


def test_serve_prints_no_warnings(root: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "dashboard", "serve", "--root", str(root), "--port", str(port)]
    with running(command, port) as proc:
        assert http_get(port, FRAME)[0] == 200
    output = proc.stdout.read()
    assert output.startswith("dashboard: serving") and "Warning" not in output, output


def test_the_page_lists_bad_folders_and_the_rest(server: str) -> None:
    import dashboard.app  # noqa: F401 - registers the page's model types with Bokeh's client
    from bokeh.client import pull_session

    assert http_get(_port(server), "/")[0] == 200
    with pull_session(url=f"{server}/") as session:  # the page's content, over its websocket
        text = " ".join(str(m.text) for m in session.document.models if hasattr(m, "text"))
    for name in [*MALFORMED, "latin1_caf"]:
        assert name in text
    assert "unreadable" in text


@pytest.mark.parametrize("path", ["/frames/%00.png", f"/frames/{CELL}/%00.png",
                                  f"/frames/{CELL}/{CELL}_1.png%00", "/frames/%ff.png",
                                  f"/frames/{'x' * 5000}.png", "/frames/loop/loop/x.png"])
def test_bad_frame_names_are_not_found(server: str, path: str) -> None:
    assert http_get(_port(server), path)[0] in (403, 404)
    assert http_get(_port(server), FRAME)[0] == 200  # and the server still answers


@pytest.mark.parametrize("host", ["evil", "evil:80", f"evil.{OTHER_HOST}", "127.0.0.1.evil", "[::1]"])
@pytest.mark.parametrize("path", ["/", FRAME])
def test_foreign_host_names_are_refused(server: str, host: str, path: str) -> None:
    status, body = http_get(_port(server), path, headers={"Host": host})
    assert status == 403 and b"PNG" not in body and CELL.encode() not in body


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", OTHER_HOST])
def test_served_host_names_are_answered(server: str, host: str) -> None:
    port = _port(server)
    assert http_get(port, FRAME, headers={"Host": f"{host}:{port}"})[0] == 200
    assert http_get(port, "/", headers={"Host": host})[0] == 200
