"""experiments.cluster on a local Ray cluster of 2 simulated nodes with 2 fake GPUs each.

One module-scoped cluster; the demo grid (4 UNTRAINED tiny cells) runs on it once, through a
local DVC remote, and the other tests reuse its results.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from experiments import cluster, demo
from test_grid_dvc import OUT, commit, dvc, ran

pytestmark = pytest.mark.dvc

GRID_CELLS = ["cell@tiny-tiny-vit", "cell@tiny-tiny-rn", "cell@tiny-gumbel-tiny-vit", "cell@tiny-gumbel-tiny-rn"]
KILLED = "cell@tiny-tiny-vit"
KILLED_NAME = "demo_untrained__tiny_tiny-vit"


@pytest.fixture(scope="module")
def ray_cluster():
    """2 nodes × (2 CPUs, 2 fake GPUs, 100 MB object store), the test process connected as driver."""
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 2, "num_gpus": 2, "object_store_memory": 100 * 2**20}
    nodes = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        nodes.add_node(**node)
        nodes.wait_for_nodes()
        ray.init(address=nodes.address, include_dashboard=False, log_to_driver=False)
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def _run(repo: Path, **kwargs) -> tuple[cluster.Report, str]:
    """run_cluster in `repo`; returns its report and the lines it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report = cluster.run_cluster(repo, **kwargs)
    return report, out.getvalue()


def _with_remote(repo: Path, remote: Path) -> Path:
    dvc(repo, "remote", "add", "-d", "shared", str(remote))
    commit(repo, "shared DVC remote")
    return repo


@pytest.fixture(scope="module")
def grid_run(ray_cluster, tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    """The demo grid run by the cluster: (repo, remote, report, printed lines)."""
    base = tmp_path_factory.mktemp("cluster")
    repo = _with_remote(demo.create_demo(base / "demo"), base / "remote")
    report, printed = _run(repo, gpus=1, max_retries=1, work_dir=base / "work")
    commit(repo, "grid results")
    return repo, base / "remote", report, printed


def test_grid_runs_on_both_nodes_and_lands_through_the_remote(grid_run) -> None:
    repo, _, report, printed = grid_run
    assert report.ok, report.failed
    assert report.pending == GRID_CELLS
    assert sorted(report.finished) == sorted(["fetch_models", *GRID_CELLS])  # the stamps first, as a task too
    assert all(report.finished[c]["outcome"] == "ran" for c in GRID_CELLS)
    assert len({report.finished[c]["node"] for c in GRID_CELLS}) == 2, "cells spread over both nodes"
    for cell in GRID_CELLS:
        assert f"cluster: {cell} started on node" in printed and f"cluster: {cell} finished (ran)" in printed
    assert "cluster: total: 4 of 4 cell(s) finished (4 ran, 0 from the remote), 0 failed" in printed
    # The coordinator restored every cell from the remote; nothing is left to run.
    folders = [p for p in (repo / OUT).iterdir() if p.is_dir()]
    assert len(folders) == 4
    assert all(json.loads((f / "metrics.json").read_text())["frames"] == 4 for f in folders)
    output = dvc(repo, "repro")
    assert ran(output) == [], output
    assert "up to date" in dvc(repo, "status")


def test_each_task_sees_its_own_fake_gpu(grid_run) -> None:
    _, _, report, _ = grid_run
    by_node: dict[str, list[str]] = {}
    for result in report.finished.values():
        if result["stage"] in GRID_CELLS:
            by_node.setdefault(result["node"], []).append(result["cuda_visible_devices"])
    # 2 cells per node, submitted together, one GPU each: Ray gave them the node's two GPUs.
    assert sorted(sorted(devices) for devices in by_node.values()) == [["0", "1"], ["0", "1"]]


def test_refuses_a_dirty_tree(grid_run) -> None:
    repo = grid_run[0]
    params = repo / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("seed: 12345", "seed: 7"))
    try:
        with pytest.raises(cluster.ClusterError, match=r"uncommitted changes \(params.yaml\)"):
            cluster.run_cluster(repo)
    finally:
        params.write_text(text)


def _kill_mid_cell(partial: Path, work: Path, seen: dict) -> None:
    """When the cell has saved a frame and its resume state, freeze it and kill its Ray worker
    (the process Ray titles `ray::<task name>`, the parent of the task's command guard)."""
    folder = partial / KILLED_NAME
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not (folder / "resume.pt").exists():
        time.sleep(0.02)
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        ours = str(proc.info["cwd"]).startswith(str(work))  # other tests may run cells too
        if ours and "experiments.run_cell" in " ".join(proc.info["cmdline"] or []):
            proc.send_signal(signal.SIGSTOP)
            try:
                seen["frames"] = len(list(folder.glob("*.png")))
                worker = next(p for p in proc.parents() if p.name().startswith("ray::") or
                              " ".join(p.cmdline()).startswith("ray::"))
                worker.kill()
                seen["worker"] = worker.pid
            finally:
                if "worker" not in seen:
                    proc.send_signal(signal.SIGCONT)  # let the run finish; the test then fails
            return


def test_killed_task_is_retried_and_resumes_to_the_same_frames(grid_run, tmp_path: Path) -> None:
    repo, remote, _, _ = grid_run
    # A copy of the results that lacks one cell, with no run cache, and a remote that has the
    # model stamps but not that cell's result: the cell must run again.
    other = tmp_path / "other"
    shutil.copytree(repo, other, symlinks=True)
    shutil.rmtree(other / ".dvc/cache/runs")
    shutil.rmtree(other / OUT / KILLED_NAME)
    lock = yaml.safe_load((other / "dvc.lock").read_text())
    del lock["stages"][KILLED]
    (other / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    commit(other, f"forget {KILLED}")
    remote2 = tmp_path / "remote2"
    shutil.copytree(remote, remote2)
    for entry in (remote2 / "runs").rglob("*"):
        if entry.is_file() and f"run_cell {KILLED.removeprefix('cell@').replace('-', ' ', 1)}" in entry.read_text():
            entry.unlink()
    dvc(other, "remote", "add", "--local", "-f", "-d", "shared", str(remote2))

    partial, work, seen = tmp_path / "partial", tmp_path / "work", {}
    killer = threading.Thread(target=_kill_mid_cell, args=(partial, work, seen), daemon=True)
    killer.start()
    report, printed = _run(other, gpus=1, max_retries=2, partial_dir=str(partial), work_dir=work, cells=[KILLED])
    killer.join(timeout=60)
    assert "worker" in seen, f"the cell was never caught mid-run:\n{printed}"
    assert 1 <= seen["frames"] < 4, seen
    assert report.ok, report.failed
    assert "fetch_models" not in report.attempts, "stamps up to date here: pushed, not made again"
    assert len(report.attempts[KILLED]) == 2 and f"{KILLED} started again (attempt 2)" in printed
    assert report.finished[KILLED]["outcome"] == "ran"
    resumed, reference = other / OUT / KILLED_NAME, repo / OUT / KILLED_NAME
    assert json.loads((resumed / "metrics.json").read_text())["resumed_from_step"] >= 5
    frames = sorted(p.name for p in reference.glob("*.png"))
    assert sorted(p.name for p in resumed.glob("*.png")) == frames and len(frames) == 4
    assert all((resumed / f).read_bytes() == (reference / f).read_bytes() for f in frames)


def test_a_model_that_cannot_be_fetched_is_reported_once_not_retried(grid_run, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"vqgans": {"offline-vq": {
        "config_urls": ["http://127.0.0.1:9/offline.yaml"], "checkpoint_urls": ["http://127.0.0.1:9/offline.ckpt"]}}}))
    monkeypatch.setenv("VQCLIP_MODELS", str(models))  # the coordinator checks the grid with it
    params = demo.demo_params()
    params["grid"]["vqgan_models"] = {"offline-vq": "offline-vq"}
    repo = _with_remote(demo.create_demo(tmp_path / "bad", params=params), tmp_path / "remote")
    report, printed = _run(repo, max_retries=2, work_dir=tmp_path / "work", env={"VQCLIP_MODELS": str(models)})
    assert list(report.failed) == ["fetch_models"]
    assert "not retried" in report.failed["fetch_models"] and "offline-vq" in report.failed["fetch_models"]
    assert len(report.attempts["fetch_models"]) == 1, "a download that cannot work is not retried"
    assert printed.count("fetch_models FAILED") == 1 and "no cell was started" in printed
    assert not report.finished and not (repo / OUT).exists()
