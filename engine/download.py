"""Resumable, verified downloads of large files (model checkpoints) from a list of mirrors.

A download streams into ``<dest>.part``, resumes it with HTTP Range requests after a
broken connection (also across calls), checks its size and SHA-256, and only then
renames it onto ``dest``. Hashes can be pinned by the caller or kept in a JSON lock
file (trust on first use).

Every download is bounded: a stall deadline (no 64 KiB piece for ``stall_timeout`` seconds), a
total deadline, a size cap (``max_size``, checked against the announced size and while
streaming), and a free-disk check; a ``check`` callable refuses bodies that are not what was
asked for (an HTML error page served with 200, a truncated zip) before anything is hashed or
locked. One process at a time downloads a given file: others wait for it and use its result.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import requests
import yaml
from tqdm import tqdm

from engine.errors import StateError
from engine.fsutil import atomic_write_json, open_own, read_regular, regular_file
from engine.locks import exclusive_lock

CHUNK_SIZE = 1 << 20  # 1 MiB: file buffer and hashing block
READ_SIZE = 1 << 16  # 64 KiB socket reads
MAX_BACKOFF_S = 1.0
STALL_TIMEOUT_S = 60.0  # no READ_SIZE piece for this long: the mirror has stalled
MIN_RATE = 256 * 1024  # bytes/s the total deadline allows for, at the least
MIN_DEADLINE_S = 1800.0
DISK_MARGIN = 64 * 1024 * 1024  # keep this much free after a download

BodyCheck = Callable[[Path], "str | None"]  # a downloaded file -> why it is not acceptable, or None


MAX_LOCK_BYTES = 16_000_000  # models.lock.json: a few hundred bytes a model file
MAX_CONFIG_BYTES = 1_000_000  # a taming config is a few KB


class DownloadError(StateError):
    """No mirror produced a verified file. ``attempts`` holds (url, reason) pairs."""

    def __init__(self, message: str, *, dest: Path | None = None,
                 attempts: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.dest = dest
        self.attempts = list(attempts)


class ChecksumMismatch(DownloadError):
    """A mirror served bytes that did not hash to the expected SHA-256.

    ``url``, ``expected`` and ``actual`` describe the last mismatch seen.
    """

    def __init__(self, message: str, *, url: str, expected: str, actual: str,
                 dest: Path | None = None, attempts: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message, dest=dest, attempts=attempts)
        self.url = url
        self.expected = expected
        self.actual = actual


class CacheMismatch(DownloadError):
    """A cached file no longer matches the size or hash recorded in the checksum lock."""


class _Incomplete(Exception):
    """The body stopped before its announced end; the .part keeps what arrived."""


class _MirrorFailed(Exception):
    """This mirror cannot deliver the file; the message says why."""


class _Fatal(Exception):
    """No mirror can help (the local disk is full): stop trying."""


class _Mismatch(_MirrorFailed):
    """This mirror served bytes with the wrong SHA-256."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch (expected sha256 {expected}, got {actual})")
        self.url, self.expected, self.actual = url, expected, actual


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with regular_file(path) as f:  # a device (/dev/zero) or a FIFO would never end
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumLock:
    """A JSON lock file mapping keys to ``{"sha256": ..., "size": ..., "url": ...}``.

    Changes are read-modify-write under an OS lock, so processes sharing a cache lose no record.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict:
        try:
            text = read_regular(self.path, MAX_LOCK_BYTES, "checksum lock file").decode("utf-8", "replace")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise StateError(f"checksum lock file {self.path} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise StateError(f"checksum lock file {self.path} must hold a JSON object")
        return data

    def _update(self, change: Callable[[dict], None]) -> None:
        with exclusive_lock(self.path.with_name(f".{self.path.name}.lock"), what=str(self.path), wait=True):
            data = self._read()
            change(data)
            atomic_write_json(self.path, data)

    def get(self, key: str) -> dict | None:
        """The record stored under ``key``, or None."""
        return self._read().get(key)

    def record(self, key: str, sha256: str, size: int, url: str, mtime_ns: int | None = None) -> None:
        """Store a record under ``key``; ``mtime_ns`` says when the cached file was last hashed."""
        entry = {"sha256": sha256.lower(), "size": int(size), "url": url}
        if mtime_ns is not None:
            entry["mtime_ns"] = int(mtime_ns)
        self._update(lambda data: data.__setitem__(key, entry))

    def forget(self, key: str) -> None:
        """Remove the record under ``key`` (re-locking: the next verified file is trusted anew)."""
        self._update(lambda data: data.pop(key, None))


def verified_sha256(lock: ChecksumLock, key: str, path: Path, relock_hint: str = "") -> str:
    """The sha256 of a cached file, checked against its lock record (recorded on first use).

    A file whose size or hash differs from the record raises `CacheMismatch`: it is never
    re-locked silently. The hash is recomputed only when the file's size or mtime changed.
    """
    path = Path(path)
    stat = path.stat()
    record = lock.get(key)
    if record and record.get("mtime_ns") == stat.st_mtime_ns and record.get("size") == stat.st_size:
        return record["sha256"]
    digest = sha256_file(path) if not record or record.get("size") == stat.st_size else None
    if record and digest != record["sha256"]:
        found = f"sha256 {digest}" if digest else f"{stat.st_size} bytes"
        wanted = f"sha256 {record['sha256']}" if digest else f"{record['size']} bytes"
        raise CacheMismatch(
            f"cached file {path} has {found}, but the checksum lock {lock.path} recorded {wanted} under "
            f"{key!r}: the file changed after it was verified. Delete it to download it again"
            + (f", or {relock_hint} to trust the file as it is now" if relock_hint else ""), dest=path)
    lock.record(key, digest, stat.st_size, record["url"] if record else str(path), mtime_ns=stat.st_mtime_ns)
    return digest


def torch_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete torch checkpoint (zip or legacy pickle format), or None."""
    with regular_file(path) as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        return None if zipfile.is_zipfile(path) else "a truncated zip archive, not a complete torch checkpoint"
    if head[:1] == b"\x80":  # the legacy format starts with a pickled magic number
        return None
    return f"not a torch checkpoint: {_looks_like(head)}"


def text_config_problem(path: Path) -> str | None:
    """Why ``path`` is not a YAML model config (an HTML page, binary data, not a mapping), or None."""
    data = read_regular(path, MAX_CONFIG_BYTES, "model config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a YAML config: {_looks_like(data[:64])}"
    if text.lstrip().startswith("<"):
        return f"not a YAML config: {_looks_like(data[:64])}"
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        return f"not a YAML config: {str(err).splitlines()[0]}"
    return None if isinstance(loaded, dict) else "not a YAML config: no mapping of settings in it"


def _looks_like(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "the server sent an HTML page (a dead link's error page?)"
    if text.startswith(b"<"):
        return "the server sent an XML/HTML document"
    return f"it starts with {head[:16]!r}"


def part_path(dest: Path) -> Path:
    """Where the partial download of ``dest`` lives (``<dest>.part``)."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _describe(exc: BaseException) -> str:
    """A short human reason for a requests exception (refused, DNS, timeout...)."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.ReadTimeout):
        return "read timeout"
    text = str(exc)
    if "NameResolutionError" in text or "Name or service not known" in text \
            or "getaddrinfo failed" in text or "nodename nor servname" in text:
        return "DNS lookup failed (offline?)"
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if match:
        return f"connection failed: {match.group(0)}"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed: {text[:200]}"
    return f"{type(exc).__name__}: {text[:200]}"


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` or ``bytes */TOTAL`` into (start, total)."""
    if not header:
        return None, None
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header)
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _content_length(resp: requests.Response) -> int | None:
    """Content-Length of an un-encoded body, or None."""
    if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    value = resp.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


class _Watchdog:
    """Aborts a response whose body stalls (no piece for ``stall_s``) or runs past ``deadline``.

    A read blocked in the socket cannot time itself out while bytes trickle in, so a thread shuts
    the socket down; the blocked read then returns and the reason is in ``why``.
    """

    def __init__(self, resp: requests.Response, stall_s: float, deadline: float) -> None:
        self.resp, self.stall_s, self.deadline = resp, stall_s, deadline
        self.last = time.monotonic()
        self.why: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="download-watchdog")

    def __enter__(self) -> "_Watchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(min(0.2, self.stall_s / 4)):
            now = time.monotonic()
            if now - self.last > self.stall_s:
                self.why = f"stalled: less than {READ_SIZE // 1024} KiB in {self.stall_s:g} s"
            elif now > self.deadline:
                self.why = "too slow: the download deadline passed"
            else:
                continue
            _shutdown(self.resp)
            return


def _shutdown(resp: requests.Response) -> None:
    """Shut the response's socket down so that a read blocked on it returns."""
    sock = getattr(getattr(resp.raw, "_connection", None), "sock", None)
    if sock is None:
        sock = getattr(getattr(getattr(getattr(resp.raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _check_space(folder: Path, need: int) -> None:
    free = shutil.disk_usage(folder).free
    if need + DISK_MARGIN > free:
        raise _Fatal(f"not enough disk space in {folder}: the download needs {need / 2**20:.0f} MiB more, "
                     f"{free / 2**20:.0f} MiB are free; free some space (or set VQCLIP_CACHE to a larger disk)")


def _stream_body(resp: requests.Response, part: Path, start: int, total: int | None, desc: str,
                 progress: bool, max_size: int | None, stall_s: float, deadline: float) -> None:
    """Write the body into ``part`` from byte ``start``; raise _Incomplete if it breaks.

    The socket is read in small pieces (a break loses at most READ_SIZE bytes, since
    urllib3 drops a partly filled read) and written through a 1 MiB file buffer.
    """
    expected = _content_length(resp)
    received = 0
    broken: BaseException | None = None
    too_big = False
    try:
        with os.fdopen(open_own(part, "a partial download"), "r+b", buffering=CHUNK_SIZE) as f, _Watchdog(resp, stall_s, deadline) as dog, \
                tqdm(total=total, initial=start, desc=desc, unit="B", unit_scale=True,
                     unit_divisor=1024, disable=not progress, leave=False) as bar:
            f.truncate(start)
            f.seek(start)
            try:
                for chunk in resp.iter_content(chunk_size=READ_SIZE):
                    dog.last = time.monotonic()
                    if max_size is not None and start + received + len(chunk) > max_size:
                        too_big = True
                        break
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if total is None and received % (256 * CHUNK_SIZE) < len(chunk):
                        _check_space(part.parent, 0)  # size unknown: watch the disk as it fills
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as e:
                broken = e
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            part.unlink(missing_ok=True)
            raise _Fatal(f"disk full while writing {part}; free some space (or set VQCLIP_CACHE to a larger "
                         "disk) and run again") from e
        raise
    if too_big:
        part.unlink(missing_ok=True)
        raise _MirrorFailed(f"the body is larger than the {max_size / 2**20:.0f} MiB this file can be")
    if dog.why:
        raise _MirrorFailed(f"{dog.why} (at byte {start + received})")
    if broken is not None or (expected is not None and received < expected):
        of = f" of {total}" if total is not None else ""
        detail = f": {_describe(broken)}" if isinstance(broken, requests.ConnectionError) else ""
        raise _Incomplete(f"connection broken mid-stream at byte {start + received}{of}{detail}")


def _request_once(session: requests.Session, url: str, part: Path, timeout: tuple[float, float],
                  desc: str, progress: bool, max_size: int | None, stall_s: float,
                  deadline: float) -> int | None:
    """One GET into ``part`` (resuming if it exists); return the file's announced size or None."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416 and offset:
            total = _content_range(resp.headers.get("Content-Range"))[1]
            if total is None:  # cannot tell whether the .part is whole: start over
                part.unlink(missing_ok=True)
                raise _Incomplete("HTTP 416 without a file size; restarting from byte 0")
            return total
        if resp.status_code == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start is None or start > offset:
                raise _MirrorFailed(f"bad Content-Range {resp.headers.get('Content-Range')!r}")
        elif resp.status_code == 200:
            start, total = 0, _content_length(resp)
        else:
            raise _MirrorFailed(f"HTTP {resp.status_code} {resp.reason or ''}".strip())
        if total is not None and max_size is not None and total > max_size:
            raise _MirrorFailed(f"the server announces {total / 2**20:.0f} MiB, more than the "
                                f"{max_size / 2**20:.0f} MiB this file can be")
        if total is not None:
            _check_space(part.parent, total - start)
        _stream_body(resp, part, start, total, desc, progress, max_size, stall_s, deadline)
        return total


def _fetch_verified(session: requests.Session, url: str, part: Path, expected_sha: str | None, *,
                    retries: int, timeout: tuple[float, float], desc: str, progress: bool,
                    max_size: int | None, stall_s: float, deadline_s: float | None,
                    check: BodyCheck | None) -> tuple[str, int]:
    """Download ``url`` into ``part`` with resume/retry; check and verify it; return (sha256, size).

    Raises _MirrorFailed (move on to the next mirror); _Mismatch and a failed ``check`` also
    delete the .part.
    """
    reason = "no attempt made"
    deadline = time.monotonic() + (deadline_s if deadline_s is not None
                                   else max(MIN_DEADLINE_S, (max_size or 0) / MIN_RATE))
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(MAX_BACKOFF_S, 0.1 * 2 ** attempt))
        try:
            total = _request_once(session, url, part, timeout, desc, progress, max_size, stall_s, deadline)
        except _Incomplete as e:
            reason = str(e)
            continue
        except requests.RequestException as e:
            raise _MirrorFailed(_describe(e)) from e
        size = part.stat().st_size if part.exists() else 0
        if total is not None and size < total:
            reason = f"connection broken mid-stream at byte {size} of {total}"
            continue
        if total is not None and size > total:
            part.unlink(missing_ok=True)
            reason = f"local .part ({size} bytes) larger than remote file ({total} bytes)"
            continue
        problem = check(part) if check is not None else None
        if problem:
            part.unlink(missing_ok=True)
            raise _MirrorFailed(problem)
        actual = sha256_file(part)
        if expected_sha is not None and actual != expected_sha:
            part.unlink(missing_ok=True)
            raise _Mismatch(url, expected_sha, actual)
        return actual, size
    tries = "1 attempt" if retries == 0 else f"{retries + 1} attempts"
    raise _MirrorFailed(f"{reason}; gave up after {tries}")


def _failure_message(what: str, attempts: Sequence[tuple[str, str]], by_hand: str) -> str:
    """One line: every URL tried and why it failed, then what to do instead."""
    tried = "; ".join(f"{url}: {why}" for url, why in attempts)
    return f"could not download {what} (tried {len(attempts)} URL(s): {tried}); {by_hand}"


def download(urls: Sequence[str], dest: Path, *, sha256: str | None = None,
             lock: ChecksumLock | None = None, lock_key: str | None = None,
             desc: str | None = None, retries: int = 3, connect_timeout: float = 10.0,
             read_timeout: float = 60.0, stall_timeout: float = STALL_TIMEOUT_S,
             deadline_s: float | None = None, max_size: int | None = None,
             check: BodyCheck | None = None, relock_hint: str = "", by_hand: str = "",
             progress: bool = True) -> Path:
    """Fetch ``dest`` from the first mirror in ``urls`` that delivers verified bytes.

    Returns ``dest`` untouched if it exists. Otherwise streams into ``<dest>.part``
    (resuming it with Range requests; a broken stream is retried ``retries`` times),
    checks the size (at most ``max_size``, and what the server announced), the body
    (``check``: e.g. `torch_file_problem`) and the SHA-256 (``sha256`` if given, else the
    ``lock`` record under ``lock_key``, default ``dest.name``; with neither, the hash is
    recorded in ``lock`` after all checks pass), then renames ``.part`` onto ``dest``.
    A mirror that stalls for ``stall_timeout`` s or passes ``deadline_s`` (default: from
    ``max_size`` at 256 KiB/s, at least 30 min) is given up. Processes downloading the same
    ``dest`` take turns; the later ones find the file done.
    Raises DownloadError (ChecksumMismatch if a mirror served wrong bytes) listing
    every URL tried and why, then ``by_hand`` (default: put the file by hand at ``dest``);
    a full disk stops at once.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    if isinstance(urls, str):
        urls = [urls]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(dest.with_name(f".{dest.name}.lock"), what=f"download of {dest}", wait=True):
        if dest.exists():  # another process finished it while we waited
            return dest
        options = dict(retries=retries, timeout=(connect_timeout, read_timeout), progress=progress,
                       max_size=max_size, stall_s=stall_timeout, deadline_s=deadline_s,
                       by_hand=by_hand or f"put the file by hand at {dest}")
        return _download_locked(urls, dest, sha256, lock, lock_key or dest.name, desc or dest.name, check,
                                relock_hint, options)


def _download_locked(urls: Sequence[str], dest: Path, sha256: str | None, lock: ChecksumLock | None,
                     key: str, desc: str, check: BodyCheck | None, relock_hint: str, options: dict) -> Path:
    part = part_path(dest)
    by_hand = options.pop("by_hand")
    record = lock.get(key) if lock is not None else None
    expected = (sha256 or (record or {}).get("sha256") or "").lower() or None
    attempts: list[tuple[str, str]] = []
    mismatch: _Mismatch | None = None
    with requests.Session() as session:
        for url in urls:
            try:
                actual, size = _fetch_verified(session, url, part, expected, desc=desc, check=check, **options)
            except _Fatal as e:
                raise DownloadError(f"could not download {desc}: {e}", dest=dest,
                                    attempts=[*attempts, (url, str(e))]) from None
            except _MirrorFailed as e:
                attempts.append((url, str(e)))
                if isinstance(e, _Mismatch):
                    mismatch = e
                continue
            os.replace(part, dest)
            if lock is not None and record is None:
                lock.record(key, actual, size, url, mtime_ns=dest.stat().st_mtime_ns)
            return dest
    message = _failure_message(desc, attempts, by_hand)
    if mismatch is not None:
        if not sha256 and record is not None:
            message += (f"; the expected sha256 is the one recorded in {lock.path} under {key!r} when this file "
                        "was first downloaded" + (f"; if the new file is legitimate, {relock_hint}"
                                                  if relock_hint else ""))
        raise ChecksumMismatch(message, url=mismatch.url, expected=mismatch.expected,
                               actual=mismatch.actual, dest=dest, attempts=attempts)
    raise DownloadError(message, dest=dest, attempts=attempts)
