"""Tests for engine.download against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest

from engine.download import (ChecksumLock, ChecksumMismatch, DownloadError, download,
                             part_path, sha256_file)

DATA = os.urandom(3 * (1 << 20) + 12345)  # > 1 MiB so the body spans several chunks
DATA_SHA = hashlib.sha256(DATA).hexdigest()
HALF = len(DATA) // 2


def fetch(urls, dest: Path, **kw) -> Path:
    kw.setdefault("progress", False)
    return download(urls, dest, **kw)


def closed_port_url(name: str = "last.ckpt") -> str:
    """A URL on a 127.0.0.1 port that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def test_success_writes_dest_and_records_lock(file_server, tmp_path):
    url = file_server.add("models/last.ckpt", DATA)
    lock = ChecksumLock(tmp_path / "checksums.lock.json")
    dest = tmp_path / "cache" / "vqgan" / "last.ckpt"

    assert fetch([url], dest, lock=lock, lock_key="vqgan/last.ckpt") == dest

    assert dest.read_bytes() == DATA
    assert not part_path(dest).exists()
    assert list(dest.parent.iterdir()) == [dest]
    assert lock.get("vqgan/last.ckpt") == {"sha256": DATA_SHA, "size": len(DATA), "url": url,
                                           "mtime_ns": dest.stat().st_mtime_ns}
    # the lock file is plain JSON on disk
    on_disk = json.loads((tmp_path / "checksums.lock.json").read_text())
    assert on_disk["vqgan/last.ckpt"]["sha256"] == DATA_SHA


def test_matching_lock_record_is_accepted(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    lock = ChecksumLock(tmp_path / "lock.json")
    lock.record("k", DATA_SHA, len(DATA), "http://elsewhere/last.ckpt")
    dest = fetch([url], tmp_path / "last.ckpt", lock=lock, lock_key="k")
    assert dest.read_bytes() == DATA
    assert lock.get("k")["url"] == "http://elsewhere/last.ckpt"  # existing record untouched


def test_existing_dest_is_returned_without_network(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    dest = tmp_path / "last.ckpt"
    dest.write_bytes(b"already here")
    assert fetch([url], dest) == dest
    assert dest.read_bytes() == b"already here"
    assert file_server.requests == []


def test_wrong_sha256_leaves_nothing(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    cache = tmp_path / "cache"
    dest = cache / "last.ckpt"
    wrong = "0" * 64

    with pytest.raises(ChecksumMismatch) as info:
        fetch([url], dest, sha256=wrong)

    assert isinstance(info.value, DownloadError)
    message = str(info.value)
    assert wrong in message and DATA_SHA in message and url in message
    assert str(dest) in message
    assert not dest.exists()
    assert list(cache.iterdir()) == []  # no .part, no temp files


def test_lock_with_different_hash_rejects_download(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    lock = ChecksumLock(tmp_path / "lock.json")
    pinned = hashlib.sha256(b"the file we saw the first time").hexdigest()
    lock.record("last.ckpt", pinned, 30, "http://old-mirror/last.ckpt")
    dest = tmp_path / "cache" / "last.ckpt"

    with pytest.raises(ChecksumMismatch) as info:
        fetch([url], dest, lock=lock)  # lock_key defaults to dest.name

    assert pinned in str(info.value) and DATA_SHA in str(info.value)
    assert not dest.exists() and not part_path(dest).exists()
    assert lock.get("last.ckpt")["sha256"] == pinned  # the pin is not overwritten


def test_explicit_sha256_wins_over_lock(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    lock = ChecksumLock(tmp_path / "lock.json")
    lock.record("last.ckpt", "f" * 64, 1, "http://old/last.ckpt")
    dest = fetch([url], tmp_path / "last.ckpt", sha256=DATA_SHA.upper(), lock=lock)
    assert dest.read_bytes() == DATA


def test_resumes_after_connection_cut_mid_body(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    file_server.cut_after("last.ckpt", HALF)
    dest = tmp_path / "last.ckpt"

    fetch([url], dest, sha256=DATA_SHA)

    assert dest.read_bytes() == DATA
    assert not part_path(dest).exists()
    ranges = file_server.range_log
    assert ranges[0] is None
    assert len(ranges) == 2
    start = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
    assert HALF - (1 << 20) < start <= HALF  # resumed near the break, not from byte 0


def test_part_left_by_earlier_call_is_resumed(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    file_server.cut_after("last.ckpt", HALF)
    dest = tmp_path / "last.ckpt"

    with pytest.raises(DownloadError) as info:
        fetch([url], dest, retries=0)
    assert "mid-stream" in str(info.value)
    part = part_path(dest)
    assert part.name == "last.ckpt.part"
    kept = part.stat().st_size
    assert 0 < kept <= HALF and not dest.exists()

    fetch([url], dest)

    assert file_server.range_log[-1] == f"bytes={kept}-"
    assert dest.read_bytes() == DATA
    assert not part.exists()


def test_complete_part_is_verified_after_416(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    dest = tmp_path / "last.ckpt"
    part_path(dest).write_bytes(DATA)

    fetch([url], dest, sha256=DATA_SHA)

    assert file_server.range_log == [f"bytes={len(DATA)}-"]
    assert dest.read_bytes() == DATA


def test_oversized_stale_part_is_discarded(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    dest = tmp_path / "last.ckpt"
    part_path(dest).write_bytes(DATA + b"junk from another file")

    fetch([url], dest)

    assert dest.read_bytes() == DATA
    assert file_server.range_log[-1] is None  # restarted from byte 0


def test_404_on_first_mirror_uses_second(file_server, tmp_path):
    good = file_server.add("mirror2/last.ckpt", DATA)
    missing = file_server.url("mirror1/last.ckpt")
    lock = ChecksumLock(tmp_path / "lock.json")
    dest = tmp_path / "last.ckpt"

    fetch([missing, good], dest, lock=lock)

    assert dest.read_bytes() == DATA
    assert [r.name for r in file_server.requests] == ["mirror1/last.ckpt", "mirror2/last.ckpt"]
    assert lock.get("last.ckpt")["url"] == good


def test_all_mirrors_http_errors_listed(file_server, tmp_path):
    file_server.add("broken/last.ckpt", DATA)
    file_server.set_status("broken/last.ckpt", 500)
    urls = [file_server.url("nope/last.ckpt"), file_server.url("broken/last.ckpt")]
    dest = tmp_path / "last.ckpt"

    with pytest.raises(DownloadError) as info:
        fetch(urls, dest)

    message = str(info.value)
    assert not isinstance(info.value, ChecksumMismatch)
    assert f"{urls[0]}: HTTP 404" in message
    assert f"{urls[1]}: HTTP 500" in message
    assert f"put the file by hand at {dest}" in message
    assert info.value.attempts[0][0] == urls[0]
    assert len(file_server.requests) == 2  # no retries on HTTP errors


def test_checksum_mismatch_on_one_mirror_tries_next(file_server, tmp_path):
    bad = file_server.add("bad/last.ckpt", b"corrupted" * 1000)
    good = file_server.add("good/last.ckpt", DATA)
    dest = tmp_path / "last.ckpt"

    fetch([bad, good], dest, sha256=DATA_SHA)
    assert dest.read_bytes() == DATA

    dest2 = tmp_path / "other" / "last.ckpt"
    with pytest.raises(ChecksumMismatch) as info:
        fetch([bad, file_server.url("gone/last.ckpt")], dest2, sha256=DATA_SHA)
    message = str(info.value)
    assert "checksum mismatch" in message and bad in message and "HTTP 404" in message
    assert info.value.url == bad and info.value.expected == DATA_SHA
    assert not dest2.exists() and not part_path(dest2).exists()


def test_offline_fails_fast_and_lists_every_url(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    urls = [closed_port_url("a/last.ckpt"), closed_port_url("b/last.ckpt")]
    dest = tmp_path / "last.ckpt"

    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch(urls, dest, retries=3)
    elapsed = time.monotonic() - started

    assert elapsed < 3.0
    message = str(info.value)
    for url in urls:
        assert url in message
    assert "refused" in message.lower()
    assert str(dest) in message
    assert not dest.exists() and not part_path(dest).exists()


def test_server_ignoring_range_restarts_cleanly(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    file_server.ignore_range = True
    file_server.cut_after("last.ckpt", HALF)
    dest = tmp_path / "last.ckpt"

    fetch([url], dest, sha256=DATA_SHA)

    assert dest.read_bytes() == DATA  # full body on retry overwrote, not appended
    assert len(file_server.range_log) == 2 and file_server.range_log[1] is not None


def test_server_ignoring_range_with_leftover_part(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    file_server.ignore_range = True
    dest = tmp_path / "last.ckpt"
    part_path(dest).write_bytes(DATA[:1000])

    fetch([url], dest)

    assert file_server.range_log == ["bytes=1000-"]
    assert dest.read_bytes() == DATA
    assert sha256_file(dest) == DATA_SHA


def test_checksum_lock_keeps_other_keys(tmp_path):
    path = tmp_path / "sub" / "lock.json"
    a, b = ChecksumLock(path), ChecksumLock(path)
    assert a.get("x") is None
    a.record("x", "AB" * 32, 5, "http://h/x")
    b.record("y", "cd" * 32, 6, "http://h/y")  # another instance re-reads the file first
    assert a.get("x") == {"sha256": "ab" * 32, "size": 5, "url": "http://h/x"}
    assert a.get("y")["size"] == 6
    assert sorted(json.loads(path.read_text())) == ["x", "y"]


def test_chunked_body_cut_is_detected_and_resumed(file_server, tmp_path):
    # no Content-Length: only the broken chunked encoding tells the body was cut
    url = file_server.add("last.ckpt", DATA)
    file_server.chunked = True
    file_server.cut_after("last.ckpt", HALF)
    dest = tmp_path / "last.ckpt"

    fetch([url], dest)

    assert dest.read_bytes() == DATA
    assert len(file_server.range_log) == 2 and file_server.range_log[1] is not None


def test_short_range_answers_are_continued(file_server, tmp_path):
    # a server that answers each range with only part of it (Content-Range tells the size)
    url = file_server.add("last.ckpt", DATA)
    file_server.max_range_bytes = len(DATA) // 3 + 1
    dest = tmp_path / "last.ckpt"
    part_path(dest).write_bytes(DATA[:1000])

    fetch([url], dest, retries=3)

    assert dest.read_bytes() == DATA
    assert len(file_server.range_log) == 3  # 1000 + 3 pieces of a third


# ---------------------------------------------------------------- bounded downloads

def _in_thread(call, limit_s: float = 60.0):
    """Run ``call`` in a thread; return (result, exception); fail the test if it does not end."""
    import threading

    box: dict = {}

    def target():
        try:
            box["result"] = call()
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"download still running after {limit_s} s"
    return box.get("result"), box.get("error")


def test_trickling_mirror_is_given_up_and_the_next_used(file_server, tmp_path):
    slow = file_server.add("slow/last.ckpt", DATA)
    file_server.misbehave("slow/last.ckpt", trickle_s=2)
    good = file_server.add("good/last.ckpt", DATA)
    dest = tmp_path / "last.ckpt"
    _, error = _in_thread(lambda: fetch([slow, good], dest, sha256=DATA_SHA, stall_timeout=1.5))
    assert error is None
    assert dest.read_bytes() == DATA


def test_trickle_alone_fails_with_the_reason(file_server, tmp_path):
    slow = file_server.add("last.ckpt", DATA)
    file_server.misbehave("last.ckpt", trickle_s=2)
    _, error = _in_thread(lambda: fetch([slow], tmp_path / "last.ckpt", stall_timeout=1.5, retries=0))
    assert isinstance(error, DownloadError) and "stalled" in str(error)
    assert not (tmp_path / "last.ckpt").exists()


def test_total_deadline_ends_a_slow_but_steady_download(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    file_server.misbehave("last.ckpt", pause_s=0.3)  # 64 KiB every 0.3 s: never stalls, takes ~15 s
    _, error = _in_thread(lambda: fetch([url], tmp_path / "last.ckpt", deadline_s=1.0, retries=0))
    assert isinstance(error, DownloadError) and "deadline" in str(error)


def test_announced_size_over_the_cap_is_refused_before_writing(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    file_server.misbehave("last.ckpt", announce=10 * 2**30)
    dest = tmp_path / "last.ckpt"
    _, error = _in_thread(lambda: fetch([url], dest, max_size=2 * len(DATA)))
    assert isinstance(error, DownloadError) and "announces 10240 MiB" in str(error)
    assert not part_path(dest).exists() and not dest.exists()


def test_announced_size_over_free_disk_is_refused_before_writing(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    file_server.misbehave("last.ckpt", announce=2**60)
    dest = tmp_path / "last.ckpt"
    _, error = _in_thread(lambda: fetch([url, file_server.add("other", DATA)], dest))
    assert isinstance(error, DownloadError) and "not enough disk space" in str(error)
    assert len(error.attempts) == 1  # a full disk is not a reason to try the next mirror
    assert not part_path(dest).exists()


def test_endless_body_is_cut_at_the_cap(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    file_server.misbehave("last.ckpt", endless=True)
    dest = tmp_path / "last.ckpt"
    _, error = _in_thread(lambda: fetch([url], dest, max_size=2 * len(DATA)))
    assert isinstance(error, DownloadError) and "larger than" in str(error)
    assert not part_path(dest).exists() and not dest.exists()


def test_body_shorter_than_announced_is_not_cached_or_locked(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA[:HALF])
    file_server.misbehave("last.ckpt", announce=len(DATA))
    lock = ChecksumLock(tmp_path / "lock.json")
    dest = tmp_path / "last.ckpt"
    _, error = _in_thread(lambda: fetch([url], dest, lock=lock, retries=1))
    assert isinstance(error, DownloadError) and "mid-stream" in str(error)
    assert not dest.exists() and lock.get("last.ckpt") is None


def test_html_page_served_with_200_is_refused_and_not_locked(file_server, tmp_path):
    from engine.download import torch_file_problem

    page = file_server.add("dead/last.ckpt", b"<!DOCTYPE html><html><body>Link does not exist.</body></html>",
                           content_type="text/html")
    buf = tmp_path / "real.ckpt"
    import torch
    torch.save({"state_dict": {"w": torch.zeros(3)}}, buf)
    good = file_server.add("good/last.ckpt", buf.read_bytes())
    lock = ChecksumLock(tmp_path / "lock.json")
    dest = tmp_path / "cache" / "last.ckpt"

    with pytest.raises(DownloadError, match="HTML page"):
        fetch([page], dest, lock=lock, check=torch_file_problem)
    assert lock.get("last.ckpt") is None and not dest.exists() and not part_path(dest).exists()

    fetch([page, good], dest, lock=lock, check=torch_file_problem)
    assert dest.read_bytes() == buf.read_bytes()
    assert lock.get("last.ckpt")["sha256"] == sha256_file(buf)


def test_text_config_check_refuses_html_and_accepts_yaml(tmp_path):
    from engine.download import text_config_problem, torch_file_problem

    page, config, zip_cut = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    page.write_bytes(b"  <html><head><title>404</title></head></html>")
    config.write_text("model:\n  target: taming.models.vqgan.VQModel\n")
    import torch
    torch.save({"x": torch.ones(100)}, zip_cut)
    zip_cut.write_bytes(zip_cut.read_bytes()[:-100])
    assert "HTML page" in text_config_problem(page)
    assert text_config_problem(config) is None
    assert "truncated zip" in torch_file_problem(zip_cut)


def test_lock_mismatch_message_says_how_to_relock(file_server, tmp_path):
    url = file_server.add("last.ckpt", DATA)
    lock = ChecksumLock(tmp_path / "lock.json")
    lock.record("k", "ab" * 32, len(DATA), "http://first/last.ckpt")
    with pytest.raises(ChecksumMismatch) as info:
        fetch([url], tmp_path / "last.ckpt", lock=lock, lock_key="k",
              relock_hint="run `python -m engine fetch x --relock`")
    assert "recorded in" in str(info.value) and "fetch x --relock" in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_mid_download_is_one_clear_error(file_server, tmp_path):
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        url = file_server.add("last.ckpt", DATA)
        file_server.chunked = True  # no announced size: the disk fills while streaming
        with pytest.raises(DownloadError, match="disk full") as info:
            fetch([url, file_server.add("other", DATA)], small / "last.ckpt")
        assert len(info.value.attempts) == 1
        assert [p.name for p in small.iterdir()] == []  # the .part is gone, the space freed
    finally:
        subprocess.run(["umount", str(small)])


def test_verified_sha256_refuses_a_changed_cached_file(tmp_path):
    from engine.download import CacheMismatch, verified_sha256

    lock = ChecksumLock(tmp_path / "lock.json")
    path = tmp_path / "last.ckpt"
    path.write_bytes(DATA)
    assert verified_sha256(lock, "k", path) == DATA_SHA  # first use: recorded
    assert verified_sha256(lock, "k", path) == DATA_SHA
    path.write_bytes(DATA[:-1] + b"\0")  # same size, other bytes
    with pytest.raises(CacheMismatch, match="changed after it was verified") as info:
        verified_sha256(lock, "k", path, relock_hint="run fetch --relock")
    assert "--relock" in str(info.value)
    path.write_bytes(DATA[:10])
    with pytest.raises(CacheMismatch, match="10 bytes"):
        verified_sha256(lock, "k", path)
    assert lock.get("k")["sha256"] == DATA_SHA  # never re-locked silently


def test_two_processes_downloading_one_file_share_one_download(file_server, tmp_path):
    import subprocess
    import sys

    url = file_server.add("last.ckpt", DATA)
    file_server.misbehave("last.ckpt", pause_s=0.05)  # ~3 s, so the two overlap
    dest = tmp_path / "cache" / "last.ckpt"
    code = ("import sys; from pathlib import Path; from engine.download import download, ChecksumLock;"
            f"download([{url!r}], Path({str(dest)!r}), lock=ChecksumLock(Path({str(tmp_path / 'lock.json')!r})),"
            " progress=False); print('ok')")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert dest.read_bytes() == DATA
    assert len(file_server.requests_for("last.ckpt")) == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == ["last.ckpt"]  # no .part, no lock left
