"""Chunk checksums, corruption detection, repair and the exclusive writer lock, on real stores.

Damage is done to real chunk files on disk (flipped bytes, truncation, deletion); concurrent
writers and a SIGKILLed lock holder are real processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from flows.cli import app
from flows.repair import RepairParams, repair_flow, report_lines
from prnf_core import DatasetConfig, open_dataset, run_dataset
from prnf_core.errors import CorruptChunkError, StoreLockedError
from prnf_core.integrity import lock_path

PRNF = str(Path(sys.executable).with_name("prnf"))
CFG = dict(problem="ou", n_particles=4000, chunk_size=1000, t_end=0.1, dt=0.01, seed=3,
           save_times=[0.0, 0.05, 0.1])
CLI_ARGS = ["--problem", "ou", "-n", "4000", "--chunk-size", "1000", "--t-end", "0.1",
            "--dt", "0.01", "--seed", "3", "--save-times", "0,0.05,0.1", "--workers", "0"]
runner = CliRunner()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An undamaged store of CFG, written once by a single run."""
    path = tmp_path_factory.mktemp("reference") / "ref.zarr"
    run_dataset(DatasetConfig(**CFG), path)
    return path


@pytest.fixture
def store(reference, tmp_path) -> Path:
    """A copy of the reference store, to damage."""
    copy = tmp_path / "store.zarr"
    shutil.copytree(reference, copy)
    return copy


def chunk_file(store: Path, name: str, index: int) -> Path:
    """The file of simulation chunk ``index`` of array ``name`` (Zarr v3 default chunk keys)."""
    if name == "snapshots":
        return store / name / "c" / "0" / str(index) / "0"
    if name.endswith("_checksum"):
        return store / name / "c" / str(index)
    return store / name / "c" / str(index) / "0"


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {"flipped": flip, "truncated": truncate, "removed": Path.unlink}


def assert_identical(path: Path, reference: Path) -> None:
    """Every array (data, checksums, completion) equal; only the chunk timings may differ."""
    got, want = zarr.open_group(str(path), mode="r"), zarr.open_group(str(reference), mode="r")
    assert sorted(got.array_keys()) == sorted(want.array_keys())
    for name in sorted(set(want.array_keys()) - {"chunk_seconds"}):
        np.testing.assert_array_equal(got[name][:], want[name][:], err_msg=name)
    assert open_dataset(path).is_complete


@pytest.mark.parametrize(
    ("damaged", "damage", "fault"),
    [
        ("xT", "flipped", "xT (checksum mismatch|unreadable)"),
        ("xT", "truncated", "xT unreadable"),
        ("xT", "removed", "xT checksum mismatch"),
        ("x0", "flipped", "x0 (checksum mismatch|unreadable)"),
        ("snapshots", "flipped", "snapshots (checksum mismatch|unreadable)"),
        ("xT_checksum", "removed", "xT no checksum recorded"),
    ],
)
def test_damaged_chunk_is_detected_and_named(store, reference, damaged, damage, fault):
    DAMAGE[damage](chunk_file(store, damaged, 2))
    name = damaged.removesuffix("_checksum")
    dataset = open_dataset(store)
    assert dataset.verify() == [2]
    with pytest.raises(CorruptChunkError, match=rf"\[2\] \(chunk 2: {fault}.*prnf repair ") as info:
        dataset.load(name)
    assert info.value.chunks == [2] and info.value.path == str(store)
    assert f"`prnf repair {store}`" in str(info.value)
    with pytest.raises(CorruptChunkError, match="chunk 2"):
        dataset.to_dask(name).compute()
    if name != "snapshots":
        with pytest.raises(CorruptChunkError, match="chunk 2"):
            dataset.pairs()
    other = "x0" if name != "x0" else "xT"  # undamaged arrays still read
    np.testing.assert_array_equal(dataset.load(other), open_dataset(reference).load(other))


def test_undamaged_store_verifies_and_reads(reference):
    dataset = open_dataset(reference)
    assert dataset.verify() == []
    np.testing.assert_array_equal(dataset.to_dask("snapshots").compute(),
                                  dataset.load("snapshots"))


def test_prnf_repair_restores_bit_identical_data(prefect_harness, store, reference):
    flip(chunk_file(store, "xT", 1))
    chunk_file(store, "snapshots", 3).unlink()
    result = runner.invoke(app, ["repair", str(store)])
    assert result.exit_code == 0, result.output
    assert "found 2 corrupt chunk(s)" in result.output
    assert "chunk 3: snapshots checksum mismatch" in result.output
    assert "re-simulated 2 corrupt chunk(s)" in result.output
    assert_identical(store, reference)

    again = repair_flow(RepairParams(store=str(store)))
    assert again["chunks_repaired"] == again["chunks_simulated"] == 0 and again["complete"]
    assert "verified 4 chunks: all intact, nothing to repair" in report_lines(again)

    missing = runner.invoke(app, ["repair", str(store.with_name("nothing.zarr"))])
    assert missing.exit_code == 2 and "no dataset at" in missing.output


def test_rerun_repairs_corrupt_chunks_automatically(store, reference):
    truncate(chunk_file(store, "x0", 0))
    summary = run_dataset(DatasetConfig(**CFG), store)
    assert summary.chunks_repaired == 1 and summary.chunks_simulated == 1
    assert summary.chunks_already_done == 3 and summary.complete
    assert re.match(r"chunk 0: x0 (unreadable|checksum mismatch)", summary.corruption[0])
    assert_identical(store, reference)


def test_store_without_checksums_reads_and_gets_them_on_next_run(store, reference):
    for name in ("x0", "xT", "snapshots"):  # what a store written before checksums looks like
        shutil.rmtree(store / f"{name}_checksum")
    dataset = open_dataset(store)
    np.testing.assert_array_equal(dataset.load("xT"), open_dataset(reference).load("xT"))
    assert dataset.verify() == []
    chunk_file(store, "xT", 1).unlink()  # reads as NaN: caught even without checksums
    assert dataset.verify() == [1]
    summary = run_dataset(DatasetConfig(**CFG), store)
    assert summary.chunks_repaired == 1
    assert_identical(store, reference)  # the digests recorded late equal those of a new store


HOLD_WHILE_WRITING = """
import json, sys, time
from pathlib import Path
from prnf_core import DatasetConfig, run_dataset

store, gate, cfg = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])

def pause_after_first_chunk(done, total):
    deadline = time.monotonic() + 120
    while done == 1 and not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)

run_dataset(DatasetConfig(**cfg), store, progress=pause_after_first_chunk)
"""


def test_second_writer_is_refused_and_store_matches_a_single_run(prefect_harness, tmp_path,
                                                                 reference):
    from prefect.settings import PREFECT_API_URL

    out, gate = tmp_path / "shared.zarr", tmp_path / "gate"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # no server per command
    first = subprocess.Popen([sys.executable, "-c", HOLD_WHILE_WRITING, str(out), str(gate),
                              json.dumps(CFG)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _chunks_done(out):
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first writer wrote no chunk in time"
            time.sleep(0.05)
        second = subprocess.run([PRNF, "simulate", *CLI_ARGS, "--out", str(out)],
                                env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        message = " ".join(second.stderr.split())
        assert f"output: {out} is being written by another run (pid {first.pid} on " in message
        with pytest.raises(StoreLockedError, match=r"waited 0\.3 s"):
            run_dataset(DatasetConfig(**CFG), out, lock_timeout=0.3)
        # Waiting instead: this run gets the lock once the first finishes, and finds it all done.
        threading.Timer(0.5, gate.touch).start()
        waited = run_dataset(DatasetConfig(**CFG), out, lock_timeout=60)
        assert waited.chunks_already_done == 4 and waited.chunks_simulated == 0
        assert first.wait(timeout=60) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert_identical(out, reference)
    assert not lock_path(out).exists(), "the lock file is removed on release"


def _chunks_done(path: Path) -> bool:
    try:
        return bool(open_dataset(path).done_mask().any())
    except Exception:  # the store is still being created
        return False


HOLD_LOCK = """
import sys, time
from prnf_core.integrity import store_lock

with store_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_sigkilled_lock_holder_does_not_block_the_next_run(tmp_path, reference):
    out = tmp_path / "killed.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=rf"pid {holder.pid} on .*, started "):
            run_dataset(DatasetConfig(**CFG), out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    assert str(holder.pid) in lock_path(out).read_text(), "a killed holder leaves its file"
    summary = run_dataset(DatasetConfig(**CFG), out)  # the kernel released the dead one's flock
    assert summary.complete and summary.chunks_simulated == 4
    assert_identical(out, reference)
    assert not lock_path(out).exists()
