"""Peak memory of training on a store 5x larger than ``TrainConfig.memory_cap_mb``.

Run ``python benchmarks/bench_streaming.py [--cap-mb 50] [--factor 5] [--steps 300]
[--json out.json]``.

One ou store (2-D, float32) whose training rows, in the model's float32, take ``factor`` x the
cap (cap 50 MB: 250 MB, 15.6 M particles in chunks of 10^5) is simulated once (one Euler step:
the data's size, not their dynamics, is measured). Then, each in a fresh child process, the
same PRNF (width 32) trains ``steps`` gradient steps (batch 512, one thread) on it:

* **streamed**: ``memory_cap_mb=cap`` (:mod:`prnf_core.streaming`: a preparatory pass over
  every chunk, then a shuffle buffer under the cap);
* **in memory**: no cap (the rows loaded whole, as before);
* **model**: the same training on one chunk's rows given as arrays: what the model, Adam, a
  step's activations and torch's allocator take besides the data.

The child takes its baseline after the imports, a 2-step warm-up fit on 1000 rows (what fit
imports lazily), the model's construction and opening the store,
then a thread samples its RSS every 5 ms while ``fit`` runs; the peak growth (peak - baseline)
is compared with the cap. ``getrusage`` peaks are printed too. Goal (issue 16): the streamed
peak growth stays under the cap plus the model (the "model" run's growth), whatever the data's
size; the in-memory one grows with the data.

The store goes to a ``tempfile.mkdtemp()`` folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

CHILD_FLAG = "--child"
MB = 1_000_000


def child(path: str, cap: float | None, steps: int) -> None:
    """Train in this (fresh) process and print one JSON line of its memory and timings."""
    import numpy as np
    import psutil
    import torch

    from prnf_core.dataset import open_dataset, read_verified_chunk
    from prnf_core.models import ModelConfig, build_model
    from prnf_core.train import TrainConfig, fit

    torch.set_num_threads(1)
    dataset = open_dataset(path)
    # what fit imports lazily (torch.optim pulls in torch._dynamo) is no part of the data
    tiny = np.random.default_rng(0).normal(size=(1000, dataset.dim))
    fit(build_model(ModelConfig(dim=dataset.dim, hidden_width=32), seed=0), (tiny, tiny),
        TrainConfig(iterations=2, progress=False))
    data = dataset
    if cap == 0:  # the model alone: one chunk's rows as arrays, in memory
        data = tuple(read_verified_chunk(path, name, 0, 0, dataset.config.chunk_size)
                     for name in ("x0", "xT"))
        cap = None
    model = build_model(ModelConfig(dim=dataset.dim, hidden_width=32), seed=0)
    process = psutil.Process()
    base = process.memory_info().rss
    base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = fit(model, data, TrainConfig(iterations=steps, batch_size=512, lr=1e-3,
                                             progress=False, memory_cap_mb=cap, threads=1))
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({
        "cap_mb": cap, "baseline_mb": base / MB, "peak_growth_mb": (peak[0] - base) / MB,
        "maxrss_growth_mb": (maxrss - max(base_maxrss, base)) / MB, "seconds": seconds,
        "steps": result.steps, "n_train": result.n_train, "n_val": result.n_val,
        "best_val_nll": result.best_val_nll, "streamed": result.streamed,
        "model_mb": params / MB}))


def run_child(path: str, cap: float | None, steps: int) -> dict:
    command = [sys.executable, __file__, CHILD_FLAG, path, str(steps)]
    if cap is not None:
        command.append(str(cap))
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child {command[3:]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap-mb", type=float, default=50.0)
    parser.add_argument("--factor", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from prnf_core import DatasetConfig, run_dataset

    row_bytes = 4 * 4  # (x0, xT) of ou, 2-D, in float32
    chunk = 100_000
    n = -(-int(args.factor * args.cap_mb * MB / row_bytes) // chunk) * chunk
    root = tempfile.mkdtemp(prefix="bench_streaming_")
    try:
        started = time.perf_counter()
        cfg = DatasetConfig(problem="ou", n_particles=n, chunk_size=chunk, t_end=0.01, dt=0.01,
                            dtype="float32")
        path = run_dataset(cfg, os.path.join(root, "ou.zarr"), torch_threads=1).path
        print(f"store: {n:,} particles in {n // chunk} chunks of {chunk:,}, rows "
              f"{n * row_bytes / MB:.0f} MB = {n * row_bytes / MB / args.cap_mb:.2f} x the cap "
              f"of {args.cap_mb:g} MB (simulated in {time.perf_counter() - started:.0f} s)")
        results = {}
        for label, cap in (("streamed", args.cap_mb), ("in memory", None), ("model", 0.0)):
            results[label] = run_child(path, cap, args.steps)
        print(f"\n{'':<10} {'peak growth':>12} {'maxrss growth':>14} {'/ cap':>7} "
              f"{'seconds':>8} {'val rows':>9} {'val_nll':>8}")
        for label, r in results.items():
            print(f"{label:<10} {r['peak_growth_mb']:>9.1f} MB {r['maxrss_growth_mb']:>11.1f} MB "
                  f"{r['peak_growth_mb'] / args.cap_mb:>7.2f} {r['seconds']:>8.1f} "
                  f"{r['n_val']:>9,} {r['best_val_nll']:>8.3f}")
        streamed, whole = results["streamed"], results["in memory"]
        print(f"\nstreamed: data held at peak {streamed['streamed']['peak_mb']:.1f} MB "
              f"(its own count), pool {streamed['streamed']['pool_rows']:,} rows; model "
              f"{streamed['model_mb']:.2f} MB of parameters")
        print(f"in-memory peak / streamed peak: "
              f"{whole['peak_growth_mb'] / streamed['peak_growth_mb']:.1f}x")
        model = results["model"]["peak_growth_mb"]
        goal = streamed["peak_growth_mb"] < args.cap_mb + model
        print(f"goal: streamed peak growth {streamed['peak_growth_mb']:.1f} MB < cap "
              f"{args.cap_mb:g} MB + the model {model:.1f} MB (the same training on one chunk in "
              f"memory): {'PASS' if goal else 'MISS'}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"cap_mb": args.cap_mb, "factor": args.factor, "n": n,
                           "results": results}, f, indent=2)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        child(sys.argv[2], float(sys.argv[4]) if len(sys.argv) > 4 else None, int(sys.argv[3]))
    else:
        main()
