"""Analyses off the page's thread: `Background` computes what a root's frames say (the effects
analysis, the fingerprints) one job at a time in a thread of its own, and keeps each result under
a key naming what it was computed from (`signature`), so a page that opens again, or another
session, gets it at once and a changed run makes a new key. A served page never waits for them:
`Waiting` hands each result to the page once it is ready."""
from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

import pandas as pd

log = logging.getLogger(__name__)
KEEP = 64  # results kept (the most recently asked for)
PERIOD_MS = 250  # how often a page looks for the results it waits for


class Background:
    """Jobs run one at a time by a daemon thread (a server stops without waiting for one);
    results kept by key, the `keep` most recently asked for."""

    def __init__(self, keep: int = KEEP):
        self.keep = keep
        self._jobs: OrderedDict[Hashable, Future] = OrderedDict()
        self._todo: queue.SimpleQueue[tuple[Future, Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def submit(self, key: Hashable, compute: Callable[[], Any]) -> Future:
        """The future result of `compute()`, computed once per `key`."""
        with self._lock:
            if key in self._jobs:
                self._jobs.move_to_end(key)
                return self._jobs[key]
            future: Future = Future()
            self._jobs[key] = future
            while len(self._jobs) > self.keep:
                self._jobs.popitem(last=False)
            self._todo.put((future, compute))
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="dashboard-analyses", daemon=True)
                self._worker.start()
            return future

    def _work(self) -> None:
        while True:
            future, compute = self._todo.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(compute())
            except Exception as e:  # noqa: BLE001 - a failed analysis must not stop the others
                log.exception("dashboard: an analysis failed")
                future.set_exception(e)


def signature(runs: pd.DataFrame) -> tuple:
    """What an analysis of these catalog rows depends on: each run's name, status, size,
    runtime, last file time and frames."""
    columns = ["run", "status", "modified", "width", "height", "seconds_per_step", "wall_time_s"]
    return tuple((*(str(v) for v in row[:-1]), tuple(row[-1])) for row in
                 runs[[*columns, "frames"]].itertuples(index=False))


def stamps(folder: Path | None, names: Iterable[str]) -> tuple:
    """(name, size, mtime) of each file `names` in `folder` (None: missing): the score files an
    analysis read."""
    found = []
    for name in names:
        try:
            st = (folder / name).stat() if folder else None
        except OSError:
            st = None
        found.append((name, st and (st.st_size, st.st_mtime_ns)))
    return tuple(found)


class Waiting:
    """Results of `Background` futures handed to the page on its own thread. Where `live` (a
    served page): polled every PERIOD_MS, from the moment the page has
    loaded (Panel's `onload`: a change made between the page's making and its websocket's
    opening never reaches the browser); elsewhere waited for. A result whose job failed (logged
    by `Background`) is None."""

    def __init__(self, live: bool):
        self.live = live
        self.loaded = False
        self.pending: dict[str, tuple[list[Future], Callable[[list[Any]], None]]] = {}
        self.callback: Any = None
        if live:
            import panel as pn

            pn.state.onload(self._loaded)

    def then(self, name: str, futures: list[Future], show: Callable[[list[Any]], None]) -> None:
        """`show(results)` once every future is done; a later call for the same `name` replaces
        this one (the page asked for something else meanwhile)."""
        self.pending.pop(name, None)
        if not self.live or all(f.done() for f in futures):
            show(_results(futures))
            return
        self.pending[name] = (futures, show)
        self._poll()

    def _loaded(self) -> None:
        self.loaded = True
        self._poll()

    def _poll(self) -> None:
        if self.loaded and self.pending and (self.callback is None or not self.callback.running):
            import panel as pn

            self.callback = pn.state.add_periodic_callback(self._check, period=PERIOD_MS)

    def _check(self) -> None:
        for name, (futures, show) in list(self.pending.items()):
            if all(f.done() for f in futures):
                del self.pending[name]
                show(_results(futures))
        if not self.pending:
            self.callback.stop()


def _results(futures: list[Future]) -> list[Any]:
    return [None if f.exception() else f.result() for f in futures]
