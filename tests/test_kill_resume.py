"""A real `prnf simulate` process group is SIGKILLed mid-run; the re-run fills only the gap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from prnf_core import DatasetConfig, open_dataset, run_dataset

PRNF = str(Path(sys.executable).with_name("prnf"))
CONFIG = dict(problem="abc3d", n_particles=30_000, chunk_size=1_500, seed=11)


def _cli(out: Path) -> list[str]:
    return [PRNF, "simulate", "--problem", CONFIG["problem"], "-n", str(CONFIG["n_particles"]),
            "--chunk-size", str(CONFIG["chunk_size"]), "--seed", str(CONFIG["seed"]),
            "--workers", "2", "--out", str(out)]


def _done_count(out: Path) -> int:
    try:
        return int(open_dataset(out).done_mask().sum())
    except Exception:  # the store is still being created
        return 0


def test_killed_run_resumes_bit_identical(prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    out = tmp_path / "abc.zarr"
    # the session's Prefect server: no temporary server started (and killed) per command
    env = {**os.environ, "PRNF_DATA_ROOT": str(tmp_path / "data"),
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    log = tmp_path / "killed-run.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(_cli(out), env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 180
        try:
            while _done_count(out) < 3:
                assert proc.poll() is None, f"run ended early: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "no chunk finished in time"
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the flow process and its Dask workers
            proc.wait()
    interrupted = open_dataset(out)
    done_before = int(interrupted.done_mask().sum())
    n_chunks = 20
    assert 3 <= done_before < n_chunks and not interrupted.is_complete

    rerun = subprocess.run(_cli(out), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (f"chunks simulated: {n_chunks - done_before} (already complete: {done_before})"
            in rerun.stdout)

    resumed = open_dataset(out)
    assert resumed.is_complete
    reference = open_dataset(run_dataset(DatasetConfig(**CONFIG), tmp_path / "ref.zarr").path)
    for name in ("x0", "xT"):
        np.testing.assert_array_equal(resumed.load(name), reference.load(name))
