"""Files, written atomically (a reader never sees a half-written file) and read defensively (only
regular files, within a budget of bytes: a FIFO, a device or a huge file in a user's folder never
hangs or exhausts a reader)."""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from engine.errors import InputError, StateError

TEMP_MARK = "vqclip-"  # in every temporary name this project makes: `.<name>.vqclip-<random>.tmp`
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
          (stat.S_ISLNK, "a symbolic link"))


class BadFile(InputError):
    """A file a command must read is not a regular file, or is larger than its budget."""


class NotOwnFile(StateError):
    """Where the project writes one of its own files (a lock, a partial download) lies a symbolic
    link or something else than a regular file."""


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, flags: int = os.O_RDONLY) -> int:
    """A file descriptor of `path`, which must be a regular file: opened without blocking (a FIFO
    would wait for a writer) and checked on the open file itself; BadFile names what it is instead."""
    return _only_regular(os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY),
                         lambda kind: BadFile(f"{path} is {kind}, not a regular file: it is not read"))


def _only_regular(fd: int, refusal: Callable[[str], Exception]) -> int:
    """`fd` made blocking again where it is a regular file; else closed, and `refusal(what it is)` raised."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise refusal(kind_of(mode))
    os.set_blocking(fd, True)
    return fd


def open_own(path: str | os.PathLike, what: str) -> int:
    """A read-write descriptor of `path`, a file this project writes (`what`: "a lock file"), created
    if needed: never through a symbolic link (in a shared folder anyone could plant one pointing at
    another user's file), and only a regular file; NotOwnFile says what lies there instead."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise NotOwnFile(f"{path} is a symbolic link, not {what}: refusing to write through it; remove it "
                             "(it is not this project's) and run again") from None
        raise
    return _only_regular(fd, lambda kind: NotOwnFile(f"{path} is {kind}, not {what}: remove it and run again"))


@contextmanager
def regular_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """`path` opened for binary reading, only if it is a regular file (`open_regular`)."""
    with os.fdopen(open_regular(path), "rb") as f:
        yield f


def read_regular(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them: BadFile names the budget a
    larger file breaks, before reading more than the budget."""
    with regular_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise BadFile(f"{path}: {max(size, len(data))} bytes, more than the {limit} bytes a {what} may have")
    return data


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, else delete it.

    Temporary names are `.<name>.vqclip-<random>.tmp` (exclusive create: never a file that is
    there, never through a link). An OSError that names no file (a failed write:
    disk full) is given `path` as its file name, so that every error says where it happened.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{TEMP_MARK}", suffix=".tmp")
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as err:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        if isinstance(err, OSError) and not err.filename:
            err.filename = str(path)
        raise


def write_file(path: str | os.PathLike, data: bytes | str, *, durable: bool = False) -> None:
    """Write bytes or UTF-8 text to `path`; `durable` flushes them to the disk before returning."""
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, data: bytes | str, *, durable: bool = False) -> Path:
    """Write bytes or UTF-8 text to `path` atomically (temp file + rename); see `write_file`."""
    with atomic_path(path) as tmp:
        write_file(tmp, data, durable=durable)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON to `path` atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


_HINTS = {errno.ENOSPC: "free some space, then run the same command again",
          errno.EDQUOT: "free some space, then run the same command again",
          errno.EROFS: "the file system is read-only; choose another folder (setting out_dir)",
          errno.EACCES: "no permission; choose a folder you can write (setting out_dir)",
          errno.EPERM: "no permission; choose a folder you can write (setting out_dir)",
          errno.ENOENT: "check the path (a folder on it may be missing or not creatable)",
          errno.ENAMETOOLONG: "the name is too long for the file system; use a shorter file_namespace or out_dir"}


def describe_os_error(err: OSError) -> str:
    """One line: the path, the cause (with its errno name) and, for the usual causes, what to do."""
    if err.errno is None or not err.filename:
        return str(err)
    paths = f"{err.filename} -> {err.filename2}" if err.filename2 else str(err.filename)
    cause = f"{err.strerror or os.strerror(err.errno)} ({errno.errorcode.get(err.errno, err.errno)})"
    hint = _HINTS.get(err.errno)
    return f"{paths}: {cause}" + (f"; {hint}" if hint else "")
