"""The production profile against local disk and the embedded default (issue 16).

Run ``python benchmarks/bench_production.py [--quick] [--use-running] [--json out.json]``.

Brings a production profile up itself (``prnf services up`` in a fresh data root under /tmp on
free ports, the tests' ``tests/production.py``) and down at the end, checking that no process
of it is left behind. ``--use-running`` measures against an already running profile instead,
from this shell's environment (``eval "$(prnf services up)"`` first); its S3 stores of part 1
are deleted at the end, the datasets, runs and models of part 2 stay in that profile.

1. Chunk write throughput, object store vs local disk (goal: S3 >= 50 % of local). The same
   pre-simulated chunks (default abc3d, 4 chunks of 10^5 particles, float64, no snapshots; 100
   steps: the bits of X_T are as incompressible as after the paper's 1000) are written through
   the product's write path, ``Dataset.write_chunk`` on a store made by ``create_dataset``
   (Blosc zstd + bitshuffle, a checksum per chunk and array, the done marker last), once to a
   local store and once to an ``s3://`` store on the profile's SeaweedFS, interleaved over the
   repetitions (local first in even ones, S3 first in odd ones) so that the machine's load
   falls on both alike. Throughput is the uncompressed bytes of x0 and xT over the wall time of
   the ``write_chunk`` calls (the store's creation is timed apart). Then each store is read
   back through ``open_dataset(...).load`` (x0 and xT, every chunk's checksum verified) and
   compared with what was written. For what the gap is made of: the S3 requests the write
   path makes (counted from s3fs's debug log), and the same compressed chunk bytes written as
   bare files / objects, one put each (no metadata lookups, checksums or done markers): the
   object store's own ceiling against local disk.
2. Pipeline wall time: the same small ``prnf pipeline --config`` (bm1d, 4000 training pairs, a
   few epochs, an opened gate) as a subprocess, once with the embedded defaults (no
   PREFECT_*/MLFLOW_*/PRNF_*/AWS_* in the environment but a fresh temporary PRNF_DATA_ROOT,
   ``execution.workers: 2``: a LocalCluster, a temporary Prefect server, MLflow in a local
   file store) and once in the profile's exported environment (simulation on the profile's Dask
   workers, datasets on S3, runs on the MLflow and Prefect servers). A new seed per repetition,
   so neither run finds its dataset already simulated. Order alternates per repetition.

The machine's load average is printed before and after each part.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from production import Profile, bring_down, bring_up  # noqa: E402  (the tests' helpers)
from services import BIN, clean_env  # noqa: E402

GOAL_RATIO = 0.50
MB = 1e6
PIPELINE: dict[str, Any] = {
    "problem": "bm1d", "n_train": 4000, "chunk_size": 1000,
    "training": {"epochs": 4, "batch_size": 128, "lr": 3e-3, "progress": False},
    "model": {"hidden_width": 32},
    # the gate is opened: this measures time, not accuracy
    "validation": {"n_samples": 500, "chunk_size": 500, "max_kl": 1.0, "max_sw_ratio": 50,
                   "kl_samples": 500,
                   "laws": {"gaussian": {"kind": "gaussian", "mean": [0.0], "std": [0.5]}}},
}
PROFILE_KEYS = ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PRNF_DASK_ADDRESS",
                "PRNF_DATASET_ROOT", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return (f"median {statistics.median(values):.2f} (min {min(values):.2f}, "
            f"max {max(values):.2f}, n={len(values)})")


# --------------------------------------------------------------------------------------------
# 1. Chunk writes and reads


def presimulate(problem: str, particles: int, chunks: int, steps: int):
    from prnf_core.dataset_config import DatasetConfig, simulate_chunk_arrays

    step = DatasetConfig(problem=problem, n_particles=1).step
    config = DatasetConfig(problem=problem, n_particles=particles * chunks, chunk_size=particles,
                           t_end=steps * step, dtype="float64")
    started = time.perf_counter()
    arrays = [simulate_chunk_arrays(config, i)[:2] for i in range(chunks)]
    print(f"pre-simulated {chunks} {problem} chunks of {particles:,} particles, {steps} steps, "
          f"float64, in {time.perf_counter() - started:.0f} s")
    return config, arrays


def local_bytes(path: Path, names=("x0", "xT")) -> int:
    return sum(f.stat().st_size for n in names for f in (path / n).rglob("*") if f.is_file()
               and f.name != "zarr.json")


class S3Calls(logging.Handler):
    """Counts the S3 requests s3fs makes (its debug line ``CALL: <method> ...``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.calls: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("CALL:") and record.args:
            self.calls[str(record.args[0])] += 1

    @contextlib.contextmanager
    def counting(self):
        logger = logging.getLogger("s3fs")
        level, propagate = logger.level, logger.propagate
        self.calls.clear()
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        try:
            yield self.calls
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)
            logger.propagate = propagate


def store_process(endpoint: str):
    """The process serving ``endpoint`` (the one listening on its port), or None."""
    import psutil

    port = int(endpoint.rsplit(":", 1)[1].split("/")[0])
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    return None


def cpu_seconds(process) -> float:
    """User + system CPU seconds of ``process`` (every thread), 0 when there is none."""
    if process is None:
        return 0.0
    times = process.cpu_times()
    return times.user + times.system


def one_store(config, arrays, path: str, store=None) -> dict[str, Any]:
    """Create, write and read back one store. ``store``: the object store's process, whose
    CPU time during the writes is counted beside this process's own (the client's)."""
    import numpy as np

    from prnf_core.dataset import create_dataset, open_dataset

    counter = S3Calls()
    started = time.perf_counter()
    dataset = create_dataset(config, path)
    created = time.perf_counter()
    with counter.counting() as calls:
        client_cpu, store_cpu = time.process_time(), cpu_seconds(store)
        for index, (x0, xT) in enumerate(arrays):
            dataset.write_chunk(index, x0, xT, None, seconds=1.0)
        written = time.perf_counter()
        client_cpu = time.process_time() - client_cpu
        store_cpu = cpu_seconds(store) - store_cpu
        write_calls = dict(calls)
    dataset.finalize()
    reopened = open_dataset(path)
    with counter.counting() as calls:
        read_start = time.perf_counter()
        x0, xT = reopened.load("x0"), reopened.load("xT")
        read = time.perf_counter() - read_start
        read_calls = dict(calls)
    if not (np.array_equal(x0, np.concatenate([a[0] for a in arrays]))
            and np.array_equal(xT, np.concatenate([a[1] for a in arrays]))):
        raise SystemExit(f"{path}: the arrays read back differ from those written")
    return {"create_s": created - started, "write_s": written - created, "read_s": read,
            "client_cpu_s": client_cpu, "store_cpu_s": store_cpu,
            "write_calls": write_calls, "read_calls": read_calls}


def bench_chunks(args, s3_root: str) -> dict[str, Any]:
    config, arrays = presimulate(args.problem, args.particles, args.chunks, args.steps)
    raw = sum(a.nbytes for pair in arrays for a in pair)
    local_root = Path(tempfile.mkdtemp(prefix="bench_production_"))
    store = store_process(os.environ["AWS_ENDPOINT_URL"])
    rows: list[dict[str, Any]] = []
    try:
        print(f"{args.reps} repetitions of {args.chunks} chunks, {raw / MB:.1f} MB "
              f"uncompressed (x0 + xT) per store; {load()}")
        blobs: list[tuple[str, bytes]] = []
        for rep in range(args.reps):
            order = ("local", "s3") if rep % 2 == 0 else ("s3", "local")
            for target in order:
                path = (str(local_root / f"w{rep}.zarr") if target == "local"
                        else f"{s3_root}/w{rep}.zarr")
                row = {"rep": rep, "target": target,
                       **one_store(config, arrays, path, store if target == "s3" else None)}
                row["write_mbps"] = raw / MB / row["write_s"]
                row["read_mbps"] = raw / MB / row["read_s"]
                if target == "local":
                    row["stored_mb"] = local_bytes(Path(path)) / MB
                    blobs = blobs or chunk_objects(Path(path))
                rows.append(row)
                print(f"  rep {rep} {target:<9} create {row['create_s']:6.3f} s  write "
                      f"{row['write_s']:6.3f} s = {row['write_mbps']:6.1f} MB/s  read "
                      f"{row['read_s']:6.3f} s = {row['read_mbps']:6.1f} MB/s")
                if target == "s3" and rep == 0:
                    print(f"    S3 requests of the {args.chunks} write_chunk calls: "
                          f"{row['write_calls']}; of the two loads: {row['read_calls']}")
            for target in order:  # the same compressed chunks as bare files / objects
                seconds = put_objects(blobs, target, local_root / f"raw{rep}",
                                      f"{s3_root}/raw{rep}")
                rows.append({"rep": rep, "target": f"raw {target}", "write_s": seconds,
                             "write_mbps": raw / MB / seconds})
                print(f"  rep {rep} raw {target:<5} {'':>16} write {seconds:6.3f} s = "
                      f"{raw / MB / seconds:6.1f} MB/s")
    finally:
        shutil.rmtree(local_root, ignore_errors=True)
        remove_s3(s3_root)

    def of(target, key):
        return [r[key] for r in rows if r["target"] == target]

    def ratio(key, prefix=""):  # S3 over local, repetition by repetition
        return [s / loc for s, loc in zip(of(f"{prefix}s3", key), of(f"{prefix}local", key),
                                          strict=True)]

    write_ratio, read_ratio = ratio("write_mbps"), ratio("read_mbps")
    raw_ratio = ratio("write_mbps", "raw ")
    stored = of("local", "stored_mb")[0]
    verdict = "MET" if statistics.median(write_ratio) >= GOAL_RATIO else "MISSED"
    print(f"\nstored (compressed) {stored:.1f} MB of {raw / MB:.1f} MB: "
          f"{raw / MB / stored:.2f}x compression")
    for target in ("local", "s3"):
        print(f"  {target:<5} write MB/s {spread(of(target, 'write_mbps'))}")
        print(f"  {target:<5} read  MB/s {spread(of(target, 'read_mbps'))}")
        print(f"  {target:<5} create s   {spread(of(target, 'create_s'))}")
        print(f"  {target:<5} bare objects write MB/s {spread(of('raw ' + target, 'write_mbps'))}")
    print(f"write S3 / local: {spread(write_ratio)}  -> {verdict} (goal >= {GOAL_RATIO:.0%})")
    print(f"read  S3 / local: {spread(read_ratio)}")
    print(f"bare objects write S3 / local: {spread(raw_ratio)} (the store's ceiling: the same "
          "compressed chunk bytes, one put each, no metadata, checksums or markers)")
    bound = cpu_bound(rows, args.chunks, store)
    print(load())
    return {"rows": rows, "raw_mb": raw / MB, "stored_mb": stored, "write_ratio": write_ratio,
            "read_ratio": read_ratio, "raw_write_ratio": raw_ratio, "verdict": verdict,
            "cpu_bound_ratio": bound,
            "problem": args.problem, "particles": args.particles, "chunks": args.chunks,
            "steps": args.steps}


def cpu_bound(rows: list[dict[str, Any]], chunks: int, store) -> list[float]:
    """What the machine's cores allow: CPU time per chunk of each write (this process, the
    client, and the object store's process), and, per repetition, the highest S3 / local
    ratio possible here: even with every core busy all the time, an S3 write takes at least
    its CPU time (client + store) over the cores, so S3 / local <= local wall time / that."""
    if store is None:
        print("CPU per chunk: the object store's process was not found (not on this machine?)")
        return []
    cores = os.cpu_count() or 1

    def per_chunk(target: str, key: str) -> list[float]:
        return [r[key] / chunks * 1e3 for r in rows if r["target"] == target]

    local_wall, s3_wall = per_chunk("local", "write_s"), per_chunk("s3", "write_s")
    s3_cpu = [c + st for c, st in zip(per_chunk("s3", "client_cpu_s"),
                                      per_chunk("s3", "store_cpu_s"), strict=True)]
    print(f"CPU ms per chunk write ({store.name()} is the store, pid {store.pid}):")
    print(f"  local: wall {spread(local_wall)}; this process's CPU "
          f"{spread(per_chunk('local', 'client_cpu_s'))}")
    print(f"  s3:    wall {spread(s3_wall)}; this process's CPU "
          f"{spread(per_chunk('s3', 'client_cpu_s'))}; the store's CPU "
          f"{spread(per_chunk('s3', 'store_cpu_s'))}; "
          f"together {spread(s3_cpu)}")
    bound = [loc / (cpu / cores) for loc, cpu in zip(local_wall, s3_cpu, strict=True)]
    print(f"highest S3 / local this machine's {cores} cores allow (local wall / (S3 CPU / "
          f"{cores})): {spread(bound)}")
    return bound


def chunk_objects(store: Path) -> list[tuple[str, bytes]]:
    """The compressed chunk files of x0 and xT in a local store: (relative key, content)."""
    return [(str(f.relative_to(store)), f.read_bytes()) for name in ("x0", "xT")
            for f in sorted((store / name / "c").rglob("*")) if f.is_file()]


def put_objects(blobs: list[tuple[str, bytes]], target: str, local: Path, url: str) -> float:
    """Seconds to write ``blobs`` as plain files under ``local`` or objects under ``url``."""
    import s3fs

    from prnf_core import objectstore

    fs = s3fs.S3FileSystem(**objectstore.storage_options()) if target == "s3" else None
    started = time.perf_counter()
    for key, data in blobs:
        if fs is not None:
            fs.pipe_file(f"{url.removeprefix('s3://')}/{key}", data)
        else:
            (local / key).parent.mkdir(parents=True, exist_ok=True)
            (local / key).write_bytes(data)
    return time.perf_counter() - started


def remove_s3(url: str) -> None:
    import s3fs

    from prnf_core import objectstore

    fs = s3fs.S3FileSystem(**objectstore.storage_options())
    with contextlib.suppress(FileNotFoundError):
        fs.rm(url.removeprefix("s3://"), recursive=True)


# --------------------------------------------------------------------------------------------
# 2. The pipeline


def run_pipeline(env: dict[str, str], config: dict[str, Any], workdir: Path,
                 timeout: float) -> dict[str, Any]:
    path = workdir / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    proc = subprocess.run([str(BIN / "prnf"), "pipeline", "--config", str(path)], env=env,
                          cwd=workdir, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    match = re.search(r"MLflow run ([0-9a-f]{32}) \((\S+)\)", proc.stdout)
    result = {"seconds": seconds, "rc": proc.returncode,
              "tracking": match.group(2) if match else None}
    if proc.returncode != 0:
        result["tail"] = (proc.stdout[-1500:] + "\n" + proc.stderr[-2500:]).strip()
    return result


def bench_pipeline(args, profile_env: dict[str, str]) -> dict[str, Any]:
    base_seed = int(time.time()) % 1_000_000
    rows = []
    print(f"pipeline: bm1d n_train {PIPELINE['n_train']}, chunk {PIPELINE['chunk_size']}, "
          f"{PIPELINE['training']['epochs']} epochs; {load()}")
    for rep in range(args.pipeline_runs):
        order = ("embedded", "profile") if rep % 2 == 0 else ("profile", "embedded")
        for mode in order:
            work = Path(tempfile.mkdtemp(prefix=f"bench_production_{mode}_"))
            try:
                config = {**PIPELINE, "seed": base_seed + rep}
                if mode == "embedded":
                    env = {k: v for k, v in clean_env(PRNF_DATA_ROOT=work / "data").items()
                           if not k.startswith("AWS_")}
                    config["execution"] = {"workers": 2}
                else:
                    env = dict(profile_env)
                    config["execution"] = {}  # PRNF_DASK_ADDRESS: the profile's scheduler
                row = {"rep": rep, "mode": mode,
                       **run_pipeline(env, config, work, args.pipeline_timeout)}
            finally:
                shutil.rmtree(work, ignore_errors=True)
            rows.append(row)
            status = "ok" if row["rc"] == 0 else f"FAILED (exit {row['rc']})"
            print(f"  rep {rep} {mode:<8} {row['seconds']:6.1f} s  {status}  tracking "
                  f"{row['tracking']}")
            if row["rc"] != 0:
                print("    " + row["tail"].replace("\n", "\n    "))
    ok = [r for r in rows if r["rc"] == 0]
    times = {m: [r["seconds"] for r in ok if r["mode"] == m] for m in ("embedded", "profile")}
    ratios = [p["seconds"] / e["seconds"] for p in ok if p["mode"] == "profile"
              for e in ok if e["mode"] == "embedded" and e["rep"] == p["rep"]]
    for mode, values in times.items():
        if values:
            print(f"  {mode:<8} wall s {spread(values)}")
    if ratios:
        print(f"profile / embedded wall time: {spread(ratios)}")
    print(load())
    return {"rows": rows, "ratio": ratios, "config": PIPELINE}


# --------------------------------------------------------------------------------------------


def profile_environment(profile: Profile | None) -> dict[str, str]:
    if profile is not None:
        return profile.env
    missing = [k for k in PROFILE_KEYS if not os.environ.get(k)]
    if missing:
        raise SystemExit(f"--use-running: {', '.join(missing)} not set; run "
                         "eval \"$(prnf services up)\" first")
    return {**os.environ, "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 repetitions of 2 chunks, one pipeline run each way")
    parser.add_argument("--use-running", action="store_true",
                        help="measure the profile exported in this environment")
    parser.add_argument("--problem", default="abc3d")
    parser.add_argument("--particles", type=int, default=100_000, help="per chunk")
    parser.add_argument("--chunks", type=int, default=4, help="per store")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--reps", type=int, default=6, help="stores written each way")
    parser.add_argument("--pipeline-runs", type=int, default=2, help="runs each way")
    parser.add_argument("--pipeline-timeout", type=float, default=900)
    parser.add_argument("--skip-chunks", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.reps, args.pipeline_runs = 2, 2, 1

    print(f"bench_production {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {load()}")
    profile = None
    results: dict[str, Any] = {"load_start": os.getloadavg()}
    try:
        if not args.use_running:
            started = time.perf_counter()
            profile = bring_up()
            results["up_seconds"] = time.perf_counter() - started
            print(f"prnf services up: {results['up_seconds']:.0f} s (data root {profile.root})")
        env = profile_environment(profile)
        for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                    "AWS_REGION"):
            if env.get(key):
                os.environ[key] = env[key]
        print(f"S3 endpoint {env['AWS_ENDPOINT_URL']}, datasets {env['PRNF_DATASET_ROOT']}, "
              f"Dask {env['PRNF_DASK_ADDRESS']}")
        if not args.skip_chunks:
            print("\n== 1. chunk writes: S3 vs local disk ==")
            s3_root = (f"{env['PRNF_DATASET_ROOT'].rstrip('/')}/bench-production-"
                       f"{os.getpid()}-{int(time.time())}")
            results["chunks"] = bench_chunks(args, s3_root)
        if not args.skip_pipeline:
            print("\n== 2. prnf pipeline: profile vs embedded defaults ==")
            results["pipeline"] = bench_pipeline(args, env)
    finally:
        if profile is not None:
            started = time.perf_counter()
            problems = bring_down(profile)
            results["down_seconds"] = time.perf_counter() - started
            results["left_behind"] = problems
            print(f"\nprnf services down: {results['down_seconds']:.0f} s; "
                  + ("nothing left behind" if not problems else
                     "PROBLEMS:\n" + "\n".join(problems)))
    results["load_end"] = os.getloadavg()
    print(load())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if results.get("left_behind"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
