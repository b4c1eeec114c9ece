"""engine.run in a real Jupyter kernel: inline previews (display_every) and resuming after an interrupt."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

jupyter_client = pytest.importorskip("jupyter_client")

TINY = ("vqgan_model='tiny', perceptors=['tiny-vit'], width=32, height=32, cutouts=2, "
        "steps_per_scene=20, steps_per_frame=20, save_every=5, seed=1, device='cpu'")


def execute(client, code: str) -> list[dict]:
    """Run `code` in the kernel; its iopub output messages."""
    msg_id = client.execute(code)
    outputs = []
    while True:
        msg = client.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return outputs
        outputs.append(msg)


@pytest.fixture(scope="module")
def kernel():
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def test_display_every_shows_inline_previews(kernel, tmp_path: Path) -> None:
    outputs = execute(kernel, f"import engine\nengine.run({TINY}, out_dir={str(tmp_path)!r}, "
                              "file_namespace='shown', display_every=5)")
    images = [m for m in outputs if m["msg_type"] == "display_data" and "image/png" in m["content"]["data"]]
    captions = [m["content"]["data"].get("text/html", "") for m in outputs if m["msg_type"] == "display_data"]
    errors = [m["content"] for m in outputs if m["msg_type"] == "error"]
    assert not errors, json.dumps(errors)[:2000]
    assert len(images) >= 3, [m["msg_type"] for m in outputs]
    assert any("step 20" in c for c in captions)
    assert (tmp_path / "shown" / "metrics.json").exists()


def test_interrupt_leaves_a_resumable_folder(kernel, tmp_path: Path) -> None:
    """Interrupting the kernel mid-run, then the same call, gives the frames of an uninterrupted run."""
    import threading
    import time

    call = (f"engine.run(vqgan_model='tiny', perceptors=['tiny-vit'], width=32, height=32, cutouts=2, "
            f"steps_per_scene=300, steps_per_frame=300, save_every=50, seed=3, device='cpu', "
            f"out_dir={str(tmp_path)!r}, file_namespace=NAME)")
    frame = tmp_path / "cut" / "cut_2.png"

    def interrupt_after_frame_2() -> None:
        deadline = time.monotonic() + 120
        while not frame.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        kernel.parent.interrupt_kernel()  # the client's KernelManager: SIGINT to the kernel

    threading.Thread(target=interrupt_after_frame_2, daemon=True).start()
    outputs = execute(kernel, "import engine\nNAME='cut'\n" + call)
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    assert any(m["msg_type"] == "error" and m["content"]["ename"] == "KeyboardInterrupt" for m in outputs)
    assert "run the same engine.run(...) call again to resume" in text
    assert not (tmp_path / "cut" / "metrics.json").exists()
    execute(kernel, call)
    execute(kernel, "NAME='whole'\n" + call)
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    tables = [(tmp_path / name / "frames.csv").read_text() for name in ("cut", "whole")]
    assert cut["resumed_from_step"] and tables[0] == tables[1]
