"""Shared pytest fixtures."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

_TESTS = Path(__file__).resolve().parent
for _p in (str(_TESTS.parent), str(_TESTS)):  # repo root (for `engine`) and tests/ helpers
    if _p not in sys.path:
        sys.path.insert(0, _p)

from httpserver import LocalFileServer  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One model cache for the whole session (tiny models are generated once), isolated from the
    user's cache and user models file; subprocesses inherit it through the environment."""
    cache = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VQCLIP_CACHE", str(cache))
        patch.setenv("VQCLIP_MODELS", str(cache / "no-user-models.yaml"))
        yield cache


@pytest.fixture(scope="session", autouse=True)
def ci_environment() -> Iterator[None]:
    """The suite runs here as on CI: with CI set (to "true" unless set), which some libraries read
    (torch's inductor fails a compile that falls back to aten for an op it could decompose)."""
    import os

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CI", os.environ.get("CI") or "true")
        yield


@pytest.fixture
def file_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFileServer]:
    """A LocalFileServer on 127.0.0.1 (see tests/httpserver.py), stopped after the test.

    Proxy settings from the environment are bypassed for 127.0.0.1.
    """
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with LocalFileServer() as server:
        yield server


@pytest.fixture(scope="module")
def chromium_browser():
    """Headless Debian Chromium driven by Playwright (one per test module, so that no Playwright
    event loop outlives its module); skips where /usr/bin/chromium is missing."""
    from dashboard_fixtures import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
