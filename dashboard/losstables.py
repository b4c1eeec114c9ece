"""Loss tables (`losses.csv`), read only for the runs asked for (the runs on screen, or all with
`catalog --losses`) and kept in a `LossTables` while the file is unchanged."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from engine.runfolder.frames import Losses, losses_at
from engine.runfolder.names import LOSSES_FILE
from engine.runfolder.record import read_meta, read_run_losses

LOSS_CACHE = 256  # loss tables kept in memory (the runs on screen, and some)
Read = tuple[Losses | None, list[str]]  # a run's loss table and the problems reading it


class LossTables:
    """The loss tables last read, by run and losses.csv's size and time: the `size` most recently
    used, safe to share between the threads of a server's sessions."""

    def __init__(self, size: int = LOSS_CACHE):
        self.size = size
        self._tables: OrderedDict[tuple, Read] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, folder: Path, base: str, settings_file: str | None) -> Read:
        """(loss table, problems) of the run `base` in `folder`, whose settings file the catalog
        found (`settings_file`), read again only where losses.csv changed. The folder is not
        listed again (it may hold 100 000 entries), and losses.csv is read only if it is a
        regular file, within `record.MAX_LOSSES_BYTES`."""
        try:
            stat = os.stat(folder / LOSSES_FILE)
        except FileNotFoundError:
            stat = None
        except OSError as e:
            return None, [f"unreadable {LOSSES_FILE}: {e}"]
        key = (str(folder), base, stat and (stat.st_size, stat.st_mtime_ns))
        with self._lock:
            if key in self._tables:
                self._tables.move_to_end(key)
                return self._tables[key]
        files = {name for name in (settings_file, stat and LOSSES_FILE) if name}
        meta = read_meta(folder, base, files)[0]
        problems: list[str] = []
        table = None if meta.source == "pytti" else read_run_losses(folder, files, meta, problems)
        problems = [p.replace(f"{folder}{os.sep}", "") for p in problems]  # as the catalog's reasons name files
        with self._lock:
            self._tables[key] = (table, problems)
            while len(self._tables) > self.size:
                self._tables.popitem(last=False)
        return table, problems


def _known(values: list[Any]) -> bool:
    return any(v is not None and not pd.isna(v) for v in values)


def losses(df: pd.DataFrame, root: str | Path, tables: LossTables | None = None) -> pd.DataFrame:
    """`df` (catalog rows of `root`) with each run's loss table (`losses`, through `tables`);
    runs without frame losses in their frame table (pytti's, older runs) get them from it
    (`frame_losses`), and where metrics.json has no final loss, the last frame's (`final_loss`).
    Problems reading losses.csv join the run's `reason`."""
    root, tables = Path(root).resolve(), tables or LossTables()
    out = df.copy()
    read = [tables.read(root / row.folder, PurePosixPath(row.run).name, row.settings_file)
            for row in df.itertuples()]
    out["losses"] = [table for table, _ in read]
    out["frame_losses"] = [known if _known(known) else losses_at(table, list(steps))
                           for (table, _), known, steps in zip(read, df["frame_losses"], df["frame_steps"])]
    last = [next((v for v in reversed(fl) if v is not None), None) for fl in out["frame_losses"]]
    out["final_loss"] = [f if f is not None and not pd.isna(f) else x
                         for f, x in zip(df["final_loss"], last)]
    out["reason"] = ["; ".join(filter(None, [r, *p])) for r, (_, p) in zip(df["reason"], read)]
    return out
