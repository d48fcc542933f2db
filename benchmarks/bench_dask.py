"""Dask scaling, store overhead and peak memory of ``prnf_core.runner.run_dataset``.

Run ``python benchmarks/bench_dask.py [--quick] [--json out.json] [--wait-quiet SECONDS]``.

Each timed run also reports how many cores other processes used meanwhile (from /proc/stat minus
this process tree): a 2-worker run on a 2-core machine only scales if nothing else runs.

1. Scaling: the same abc3d dataset (paper horizon T = 2, dt = 0.002) simulated in-process
   (``workers=0``), on a ``LocalCluster`` of 1 and of 2 single-threaded worker processes
   (``prnf_core.cluster.dask_client(ExecutionConfig(workers=k))``). Only ``run_dataset`` is
   timed: the cluster is started and every worker has imported prnf and run a tiny simulation
   before the clock starts. Best of the rounds. Goal: 2 workers >= 1.7x 1 worker. The same
   with Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` removed from the workers' environment shows what
   that setting costs (it disables glibc's dynamic mmap threshold, so every large torch temporary
   is a fresh mmap with page faults).
2. Store overhead: ``RunSummary.write_seconds / RunSummary.simulate_seconds`` (summed over
   chunks) of those runs. Goal: <= 10 %.
3. Peak memory: 10^7 abc3d particles with a tiny horizon (t_end = 0.01, dt = 0.002; memory does
   not depend on the step count) in chunks of 10^5, in-process and with 2 workers, each in a fresh
   child process. A thread polls the child's whole process tree (itself, Dask nannies and
   workers) every 50 ms and records the peak of the summed RSS (counts shared library pages once
   per process) and of the summed PSS (shared pages divided among the processes: the physical
   memory the tree uses), plus ``getrusage`` peaks. The same with 10^6 particles shows whether the
   peak is bounded by the chunk size rather than the dataset size. Goal: < 1 GiB, bounded.

All stores go to a ``tempfile.mkdtemp()`` folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

GOAL_SPEEDUP = 1.7
GOAL_OVERHEAD = 0.10
GOAL_MEMORY = 1 << 30
CONTENDED = 0.25  # cores used by other processes above which a timing is flagged
MEM_CHILD_FLAG = "--memory-child"
TRIM_KEY = "MALLOC_TRIM_THRESHOLD_"
# The environment at start-up. Dask's nannies write their pre-spawn variables
# (MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS, ...) into this process's os.environ; every case starts
# from this copy again.
CLEAN_ENV = dict(os.environ)
WAIT_QUIET = [0.0]  # --wait-quiet: seconds to wait for a quiet machine before each timed run
# (label, workers, keep Dask's MALLOC_TRIM_THRESHOLD_=65536 for the workers)
CASES = (("in-process", 0, True), ("1 worker", 1, True), ("2 workers", 2, True),
         ("1 worker, trim unset", 1, False), ("2 workers, trim unset", 2, False))


@dataclass(frozen=True)
class Sizes:
    """Sizes of one benchmark run."""

    n_particles: int
    chunk_size: int
    t_end: float
    rounds: int
    mem_particles: tuple[int, ...]
    mem_chunk: int


FULL = Sizes(n_particles=160_000, chunk_size=10_000, t_end=2.0, rounds=2,
             mem_particles=(1_000_000, 10_000_000), mem_chunk=100_000)
QUICK = Sizes(n_particles=40_000, chunk_size=5_000, t_end=0.2, rounds=1,
              mem_particles=(100_000, 1_000_000), mem_chunk=100_000)


def _warm_worker() -> str:
    """Import prnf and run a tiny simulation (runs on each worker before timing)."""
    import numpy as np
    import torch

    from prnf_core.dataset import DatasetConfig, simulate_chunk_arrays

    torch.set_num_threads(1)
    simulate_chunk_arrays(DatasetConfig(problem="abc3d", n_particles=100, chunk_size=100,
                                        t_end=0.004), 0)
    return f"torch {torch.__version__}, numpy {np.__version__}"


@contextlib.contextmanager
def client_for(workers: int, malloc_trim: bool = True) -> Iterator[Any]:
    """``dask_client(ExecutionConfig(workers=...))`` from the start-up environment.

    ``malloc_trim=False`` removes Dask's ``MALLOC_TRIM_THRESHOLD_`` from the workers' environment
    (a ``dask.config`` override around the cluster start): the variant that shows its cost.
    """
    import dask

    from prnf_core.cluster import ExecutionConfig, dask_client

    os.environ.clear()
    os.environ.update(CLEAN_ENV)
    override = {} if malloc_trim else {f"distributed.nanny.pre-spawn-environ.{TRIM_KEY}": None}
    try:
        with dask.config.set(override), dask_client(ExecutionConfig(workers=workers)) as client:
            yield client
    finally:
        os.environ.clear()
        os.environ.update(CLEAN_ENV)


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores, from /proc/stat)."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def tree_cpu() -> float:
    """CPU seconds used so far by this process and its live descendants (Dask workers)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def wait_quiet(max_wait: float, threshold: float = 0.3, window: float = 3.0) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores; return it."""
    deadline = time.monotonic() + max_wait
    while True:
        busy, ours = machine_cpu(), tree_cpu()
        time.sleep(window)
        other = ((machine_cpu() - busy) - (tree_cpu() - ours)) / window
        if other < threshold or time.monotonic() > deadline:
            return other


def run_once(workers: int, sizes: Sizes, folder: str, seed: int, client: Any) -> dict[str, Any]:
    """Time one ``run_dataset`` of the scaling dataset; return its summary, wall time and the
    CPU load of other processes on the machine during the run (in cores)."""
    from prnf_core.dataset import DatasetConfig
    from prnf_core.runner import run_dataset

    # A fresh seed per run: a new dataset id (and Dask keys) every time, never a cache hit.
    config = DatasetConfig(problem="abc3d", n_particles=sizes.n_particles,
                           chunk_size=sizes.chunk_size, t_end=sizes.t_end, seed=seed)
    path = os.path.join(folder, f"scaling-w{workers}-s{seed}.zarr")
    if WAIT_QUIET[0] > 0:
        wait_quiet(WAIT_QUIET[0])
    busy, ours = machine_cpu(), tree_cpu()
    start = time.perf_counter()
    summary = run_dataset(config, path, client=client, torch_threads=1)
    wall = time.perf_counter() - start
    other = max(((machine_cpu() - busy) - (tree_cpu() - ours)) / wall, 0.0)
    if not summary.complete:
        raise RuntimeError(f"run with {workers} workers left an incomplete dataset: {summary}")
    shutil.rmtree(path)
    return {"workers": workers, "wall": wall, "other_cores": other, **summary.as_dict()}


def scaling(sizes: Sizes, folder: str) -> list[dict[str, Any]]:
    """Run time of every case in ``CASES``, ``sizes.rounds`` times each."""
    import torch

    runs: list[dict[str, Any]] = []
    seed = 0
    for label, workers, trim in CASES:
        with client_for(workers, trim) as client:
            if client is None:
                torch.set_num_threads(1)
                _warm_worker()
            else:
                client.run(_warm_worker)
            for _ in range(sizes.rounds):
                seed += 1
                run = {"case": label, "malloc_trim": trim,
                       **run_once(workers, sizes, folder, seed, client)}
                runs.append(run)
                print(f"  {label:<22} {run['wall']:6.2f} s  (simulate "
                      f"{run['simulate_seconds']:.2f} s, write {run['write_seconds']:.2f} s "
                      f"summed over chunks; other processes {run['other_cores']:.2f} cores)",
                      flush=True)
    return runs


# -- memory -------------------------------------------------------------------------------------
class TreeMemoryPoller:
    """Polls the summed RSS and PSS of this process and all its descendants in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_single_rss = 0
        self.peak_processes = 0
        self.samples = 0

    def sample(self) -> tuple[int, int, int, int]:
        """(summed RSS, summed PSS, largest single RSS, number of processes) now."""
        import psutil

        rss = pss = single = count = 0
        for proc in [self._proc, *self._proc.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            single = max(single, info.rss)
            count += 1
        return rss, pss, single, count

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss, pss, single, count = self.sample()
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_single_rss = max(self.peak_single_rss, single)
            self.peak_processes = max(self.peak_processes, count)
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> TreeMemoryPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def memory_child(workers: int, n_particles: int, chunk: int, folder: str,
                 malloc_trim: bool = True) -> dict[str, Any]:
    """In a fresh process: run 10^k particles with a tiny horizon and measure the peak memory."""
    import torch

    from prnf_core.dataset import DatasetConfig
    from prnf_core.runner import run_dataset

    config = DatasetConfig(problem="abc3d", n_particles=n_particles, chunk_size=chunk,
                           t_end=0.01, dt=0.002, seed=3)
    path = os.path.join(folder, f"memory-w{workers}-n{n_particles}-t{int(malloc_trim)}.zarr")
    with client_for(workers, malloc_trim) as client:
        if client is None:
            torch.set_num_threads(1)
            _warm_worker()
        else:
            client.run(_warm_worker)
        poller = TreeMemoryPoller()
        idle_rss, idle_pss, _, idle_count = poller.sample()
        with poller:
            start = time.perf_counter()
            summary = run_dataset(config, path, client=client, torch_threads=1)
            wall = time.perf_counter() - start
    on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    shutil.rmtree(path)
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {
        "workers": workers, "n_particles": n_particles, "chunk_size": chunk,
        "malloc_trim": malloc_trim,
        "complete": summary.complete, "wall": wall, "simulate_seconds": summary.simulate_seconds,
        "write_seconds": summary.write_seconds, "store_bytes": on_disk,
        "idle_rss": idle_rss, "idle_pss": idle_pss, "idle_processes": idle_count,
        "peak_rss": poller.peak_rss, "peak_pss": poller.peak_pss,
        "peak_single_rss": poller.peak_single_rss, "processes": poller.peak_processes,
        "samples": poller.samples,
        "maxrss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib,
        "maxrss_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib,
    }


def memory(sizes: Sizes, folder: str) -> list[dict[str, Any]]:
    """Run each memory case in a fresh child process (clean peaks) and collect the results."""
    results = []
    cases = [(w, n, True) for w in (0, 2) for n in sizes.mem_particles]
    cases.append((2, sizes.mem_particles[-1], False))
    for workers, n, trim in cases:
        cmd = [sys.executable, os.path.abspath(__file__), MEM_CHILD_FLAG, str(workers), str(n),
               str(sizes.mem_chunk), folder, str(int(trim))]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=CLEAN_ENV)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child failed:\n{proc.stdout}\n{proc.stderr}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"  workers={workers} n={n:>10,}{'' if trim else ' trim unset'}: peak PSS "
              f"{result['peak_pss'] / 2**20:6.0f} MiB, peak RSS {result['peak_rss'] / 2**20:6.0f} "
              f"MiB over {result['processes']} processes ({result['wall']:.1f} s)", flush=True)
    return results


# -- report -------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    """PASS/MISS label."""
    return "PASS" if ok else "MISS"


def contended(other: float) -> str:
    """A warning suffix when other processes took CPU during a timing."""
    if other <= CONTENDED:
        return ""
    return (f" (CONTENDED: other processes used {other:.2f} of {os.cpu_count()} cores; "
            f"not a clean measurement)")


def mib(x: float) -> str:
    """Bytes as MiB."""
    return f"{x / 2**20:.0f} MiB"


def report(sizes: Sizes, runs: list[dict[str, Any]], mem: list[dict[str, Any]]) -> dict[str, Any]:
    """Print the tables and verdicts; return the summary figures."""
    best_run = {label: min((r for r in runs if r["case"] == label), key=lambda r: r["wall"])
                for label, _, _ in CASES}
    best = {label: r["wall"] for label, r in best_run.items()}
    steps = round(sizes.t_end / 0.002)
    n_chunks = -(-sizes.n_particles // sizes.chunk_size)
    print(f"\nScaling: abc3d, {sizes.n_particles:,} particles in {n_chunks} chunks of "
          f"{sizes.chunk_size:,}, T = {sizes.t_end} ({steps} steps), float64, 1 torch thread per "
          f"worker; best of {sizes.rounds}; run_dataset only (cluster started and warmed before)")
    ps = sizes.n_particles * steps
    for label, _, _ in CASES:
        run = best_run[label]
        rate = ps / best[label] / 1e6
        in_flight = (run["simulate_seconds"] + run["write_seconds"]) / run["wall"]
        print(f"  {label:<22} {best[label]:7.2f} s  {rate:6.2f} M particle-steps/s  "
              f"({best['in-process'] / best[label]:.2f}x in-process; {in_flight:.2f} chunks in "
              f"flight on average; other processes used {run['other_cores']:.2f} of "
              f"{os.cpu_count()} cores meanwhile)")
    print("  (chunks in flight = chunk time summed over chunks / wall time: how many chunks Dask "
          "kept running at once, whatever the CPU left to them)")
    speedup = best["1 worker"] / best["2 workers"]
    other = max(best_run["1 worker"]["other_cores"], best_run["2 workers"]["other_cores"])
    print(f"  speedup 1 -> 2 workers (prnf's dask_client as shipped): {speedup:.2f}x   "
          f"goal >= {GOAL_SPEEDUP}x: {verdict(speedup >= GOAL_SPEEDUP)}{contended(other)}")
    unset = best["1 worker, trim unset"] / best["2 workers, trim unset"]
    other_unset = max(best_run["1 worker, trim unset"]["other_cores"],
                      best_run["2 workers, trim unset"]["other_cores"])
    print(f"  speedup 1 -> 2 workers with {TRIM_KEY} unset: {unset:.2f}x{contended(other_unset)}")
    print(f"  Dask's default {TRIM_KEY}=65536 for workers: 1 worker takes "
          f"{best['1 worker'] / best['in-process']:.2f}x the in-process time, "
          f"{best['1 worker, trim unset'] / best['in-process']:.2f}x with it unset")

    default_runs = [r for r in runs if r["malloc_trim"]]
    sim = sum(r["simulate_seconds"] for r in default_runs)
    write = sum(r["write_seconds"] for r in default_runs)
    overhead = write / sim
    particles = sum(r["n_particles"] for r in default_runs)
    print(f"\nStore overhead (scaling runs as shipped, all rounds): write {write:.2f} s / simulate "
          f"{sim:.2f} s = {overhead:.1%}   goal <= {GOAL_OVERHEAD:.0%}: "
          f"{verdict(overhead <= GOAL_OVERHEAD)}")
    print(f"  per particle: write {write / particles * 1e6:.2f} us (x0 and xT, zstd), simulate "
          f"{sim / particles * 1e6:.1f} us at {steps} steps, summed over chunks")
    for m in mem:
        print(f"  memory run workers={m['workers']} n={m['n_particles']:,}"
              f"{'' if m['malloc_trim'] else ' trim unset'} (5 steps): write "
              f"{m['write_seconds']:.2f} s / simulate {m['simulate_seconds']:.2f} s "
              f"= {m['write_seconds'] / m['simulate_seconds']:.0%} (tiny horizon: write-bound)")

    print(f"\nPeak memory: abc3d, chunks of {sizes.mem_chunk:,}, t_end = 0.01 (5 steps); whole "
          f"process tree (the run's process with the Dask scheduler, nannies, workers)")
    print(f"  {'workers':>14} {'particles':>11} {'idle PSS':>9} {'peak PSS':>9} {'peak RSS':>9} "
          f"{'largest proc':>12} {'ru_maxrss':>10} {'store':>8}  < 1 GiB (PSS)")
    verdicts: dict[str, bool] = {}
    for m in mem:
        ru = m["maxrss_self"] if m["workers"] == 0 else m["maxrss_children"]
        ok = m["peak_pss"] < GOAL_MEMORY
        key = f"w{m['workers']}-n{m['n_particles']}" + ("" if m["malloc_trim"] else "-trim-unset")
        verdicts[key] = ok
        label = f"{m['workers']}" + ("" if m["malloc_trim"] else " (trim unset)")
        print(f"  {label:>14} {m['n_particles']:>11,} {mib(m['idle_pss']):>9} "
              f"{mib(m['peak_pss']):>9} {mib(m['peak_rss']):>9} {mib(m['peak_single_rss']):>12} "
              f"{mib(ru):>10} {mib(m['store_bytes']):>8}  {verdict(ok)}")
    print("  ru_maxrss: this process for in-process runs; the largest single worker/nanny for "
          "Dask runs. RSS counts shared library pages once per process; PSS divides them.")
    bounded = {}
    for w in (0, 2):
        small, large = (next(m for m in mem if m["workers"] == w and m["n_particles"] == n
                             and m["malloc_trim"]) for n in sizes.mem_particles)
        growth = large["peak_pss"] - small["peak_pss"]
        # If memory followed the dataset, the peak would grow by at least the extra x0 + xT.
        data_growth = (large["n_particles"] - small["n_particles"]) * 3 * 8 * 2
        bounded[w] = growth < 0.1 * data_growth
        ratio = large["n_particles"] // small["n_particles"]
        judged = (f"{verdict(bounded[w])}" if data_growth >= 256 * 2**20
                  else "(too small to judge; run without --quick)")
        print(f"  workers={w}: {ratio}x the particles -> peak PSS {growth / 2**20:+.0f} MiB, "
              f"against {data_growth / 2**20:.0f} MiB more x0 + xT data: bounded by the chunk "
              f"size (growth < 10 % of that): {judged}")
    return {"best_seconds": best, "speedup": speedup, "speedup_trim_unset": unset,
            "overhead": overhead, "memory_verdicts": verdicts, "bounded": bounded}


def main() -> None:
    """Run the scaling, overhead and memory benchmarks in a temporary folder."""
    if len(sys.argv) > 1 and sys.argv[1] == MEM_CHILD_FLAG:
        workers, n, chunk, folder, trim = sys.argv[2:7]
        print(json.dumps(memory_child(int(workers), int(n), int(chunk), folder, trim == "1")))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each timed scaling run, wait up to SECONDS for other "
                        "processes to use < 0.3 cores (for shared machines)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    WAIT_QUIET[0] = args.wait_quiet
    os.environ.setdefault("DO_NOT_TRACK", "true")
    started = time.perf_counter()
    print(f"bench_dask {datetime.date.today()}: {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    # SIGTERM -> SystemExit, so that the finally below still deletes the temporary stores.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    folder = tempfile.mkdtemp(prefix="prnf-bench-dask-")
    try:
        print("Scaling runs:")
        runs = scaling(sizes, folder)
        print("Memory runs (fresh child process each):")
        mem = memory(sizes, folder)
        summary = report(sizes, runs, mem)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f}; temporary stores deleted: {not os.path.exists(folder)}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": str(datetime.date.today()), "sizes": sizes.__dict__,
                       "scaling": runs, "memory": mem, "summary": summary}, fh, indent=1,
                      default=str)


if __name__ == "__main__":
    main()
