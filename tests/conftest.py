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
