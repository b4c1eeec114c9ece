"""Locks between processes: one writer per run folder, one downloader per cache file.

An OS advisory lock (`fcntl.flock`) on a small lock file. The kernel drops it when the holder
dies, however it dies (kill -9 included), so a dead holder's lock is simply taken over. The file
holds the holder's PID and host so a refused writer can name who holds it. A holder that ends
normally removes the file; a taker checks it locked the file that is still at the path.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine.errors import StateError
from engine.fsutil import open_own


class LockHeld(StateError):
    """Another live process holds the lock. ``holder`` is what it wrote ("pid 123 on host")."""

    def __init__(self, path: Path, holder: str, what: str) -> None:
        super().__init__(f"{what} is in use by {holder or 'another process'} (lock file {path}); "
                         "wait for it to finish or stop it, then run again")
        self.path, self.holder = path, holder


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        return ""


@contextmanager
def exclusive_lock(path: str | os.PathLike, *, what: str | None = None, wait: bool = False,
                   timeout_s: float | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on `path` (created if needed) for the `with` block.

    With ``wait=False`` a held lock raises `LockHeld` at once, naming the holder's PID; with
    ``wait=True`` it blocks (up to ``timeout_s`` seconds, then `LockHeld`). The lock file is
    removed on release; one left by a killed holder is taken over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        fd = open_own(path, "a lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise LockHeld(path, holder, what or str(path.parent)) from None
            time.sleep(0.05)
            continue
        if _same_file(fd, path):
            break
        os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)  # while still locked, so no taker holds a removed file
        finally:
            os.close(fd)  # closing releases the flock


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
