"""Injected faults, for real: a SIGKILLed Dask worker, a SIGKILLed training run, a full disk.

A killed `prnf simulate` (flow process and workers together) is covered by
``tests/test_kill_resume.py``; these tests add the faults that one does not reach.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from typer.testing import CliRunner

from flows.cli import app
from prnf_core import DatasetConfig, create_dataset, open_dataset, run_dataset
from prnf_core.cluster import ExecutionConfig, dask_client
from prnf_core.dataset import simulate_and_write_chunk
from prnf_core.storage import (
    METADATA_BYTES,
    check_disk_space,
    chunks_to_write,
    data_bytes,
    estimate_store_bytes,
)

PRNF = str(Path(sys.executable).with_name("prnf"))


def test_dask_worker_killed_mid_run_is_replaced_and_the_data_is_identical(tmp_path):
    config = DatasetConfig(problem="abc3d", n_particles=16_000, chunk_size=1_000, seed=5)
    finished: list[int] = []
    killed: dict[str, int] = {}
    with dask_client(ExecutionConfig(workers=2)) as client:
        pids_before = set(client.run(os.getpid).values())

        def kill_a_busy_worker(done: int, total: int) -> None:
            finished.append(done)
            if done == 3:  # a few chunks written, most still to run
                address = next(a for a, keys in client.processing().items() if keys)
                killed["pid"] = client.run(os.getpid, workers=[address])[address]
                os.kill(killed["pid"], signal.SIGKILL)  # mid-chunk: it was processing one

        summary = run_dataset(config, tmp_path / "killed.zarr", client=client,
                              progress=kill_a_busy_worker, torch_threads=1)
        client.wait_for_workers(2, timeout=60)
        pids_after = set(client.run(os.getpid).values())
        reference = run_dataset(config, tmp_path / "reference.zarr", client=client,
                                torch_threads=1)

    assert killed["pid"] in pids_before and killed["pid"] not in pids_after, "no restart"
    assert finished[-1] == config.n_chunks > 3, "chunks finished after the kill"
    assert summary.complete and reference.complete
    resumed, undisturbed = open_dataset(summary.path), open_dataset(reference.path)
    for name in ("x0", "xT"):
        np.testing.assert_array_equal(resumed.load(name), undisturbed.load(name))


def _checkpoint_epoch(model_dir: Path) -> int:
    """The last epoch in ``checkpoint.pt`` (-1 before the first one is written)."""
    path = model_dir / "checkpoint.pt"
    if not path.is_file():  # written atomically (tmp + rename): never half there
        return -1
    return int(torch.load(path, weights_only=True)["epoch"])


def _kill_after_epoch(command: list[str], env: dict[str, str], model_dir: Path, log: Path,
                      epoch: int) -> int:
    """Run ``command`` in its own process group, SIGKILL the group once the checkpoint of
    ``epoch`` exists; return the epoch of the checkpoint left behind."""
    with log.open("w") as output:
        proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=output,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        try:
            while _checkpoint_epoch(model_dir) < epoch:
                assert proc.poll() is None, f"run ended early: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "no checkpoint in time"
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return _checkpoint_epoch(model_dir)


def test_killed_training_resumes_from_its_checkpoint_to_the_same_weights(
        prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    data = run_dataset(DatasetConfig(problem="bm1d", n_particles=4_000, chunk_size=4_000,
                                     dt=0.05), tmp_path / "bm.zarr").path
    epochs = 10
    # The subprocesses report to the harness's Prefect server instead of each starting one.
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}

    def command(out: Path) -> list[str]:
        return [PRNF, "train", "--data", data, "--epochs", str(epochs), "--batch-size", "64",
                "--width", "32", "--layers", "2", "--seed", "3", "--out", str(out)]

    # The uninterrupted reference runs alongside (one torch thread each: the same numbers).
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    with (tmp_path / "reference.log").open("w") as output:
        straight = subprocess.Popen(command(reference), env=env, stdout=output,
                                    stderr=subprocess.STDOUT)
    try:
        epoch_killed = _kill_after_epoch(command(killed), env, killed,
                                         tmp_path / "killed.log", epoch=1)
        assert 1 <= epoch_killed < epochs - 1 and not (killed / "summary.json").exists()
        rerun = subprocess.run(command(killed), env=env, capture_output=True, text=True,
                               timeout=180)
        assert straight.wait(timeout=180) == 0, (tmp_path / "reference.log").read_text()[-2000:]
    finally:
        if straight.poll() is None:
            straight.kill()
            straight.wait()
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    logged = [int(e) for e in re.findall(r"\bepoch (\d+): loss=", rerun.stdout + rerun.stderr)]
    assert logged == list(range(epoch_killed + 1, epochs)), "resumed after the checkpoint"
    assert (json.loads((killed / "history.json").read_text())
            == json.loads((reference / "history.json").read_text()))
    resumed_weights = torch.load(killed / "weights.pt", weights_only=True)
    reference_weights = torch.load(reference / "weights.pt", weights_only=True)
    assert resumed_weights.keys() == reference_weights.keys()
    for key, value in reference_weights.items():
        assert torch.equal(resumed_weights[key], value), key


def test_store_estimate_bounds_a_real_store(tmp_path):
    config = DatasetConfig(problem="ou", n_particles=1_000, chunk_size=300, t_end=0.1,
                           save_times=[0.05, 0.1], dtype="float32")
    path = tmp_path / "small.zarr"
    assert check_disk_space(config, path) == estimate_store_bytes(config)
    simulate_and_write_chunk(create_dataset(config, path).path, 0)
    assert chunks_to_write(config, path) == [1, 2, 3]
    assert check_disk_space(config, path) == estimate_store_bytes(config, [1, 2, 3])

    run_dataset(config, path)
    group = zarr.open_group(str(path), mode="r")
    assert data_bytes(config) == sum(group[a].nbytes for a in ("x0", "xT", "snapshots"))
    on_disk = sum(p.stat().st_blocks * 512 for p in [path, *path.rglob("*")])
    assert on_disk <= estimate_store_bytes(config) <= on_disk + METADATA_BYTES
    assert check_disk_space(config, path) == 0, "a complete store needs nothing more"


def test_simulate_refuses_a_store_larger_than_the_free_space(prefect_harness, tmp_path):
    n = 10**15  # only a config: nothing is simulated or allocated
    out = tmp_path / "new" / "huge.zarr"
    result = CliRunner().invoke(app, ["simulate", "--problem", "abc3d", "-n", str(n),
                                      "--chunk-size", str(n), "--workers", "0",
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    needed = estimate_store_bytes(DatasetConfig(problem="abc3d", n_particles=n, chunk_size=n))
    message = " ".join(result.output.split())
    assert f"not enough disk space for {out}" in message
    assert f"({needed} bytes, uncompressed upper bound)" in message
    free = int(re.search(r"\((\d+) bytes\) free", message).group(1))
    assert 0 < free < needed
    assert not out.exists(), "nothing may be written"
