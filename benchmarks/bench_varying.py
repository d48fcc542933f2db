"""Throughput of ``simulate()`` with fixed θ against per-particle θ (``param_values``), one core.

Run ``python benchmarks/bench_varying.py [--quick] [--json out.json]``.

For ``bm1d`` (additive noise: per-particle σ turns the ``(1,)`` noise vector into an ``(n, 1)``
per-particle diagonal) and ``runaway2d`` (diagonal noise; E0 and Z as ``(n, 1)`` tensors), float64
and float32, ``torch.set_num_threads(1)``: the same x0 and seed simulated with

* ``fixed``: ``param_values=None``, the path every dataset without ``param_box`` takes;
* ``per-particle``: every varying parameter of the problem given per particle (bm1d: mu, sigma;
  runaway2d: E0, Z), values drawn around the defaults.

Rounds interleave the two (best round reported), timed on ``time.process_time`` (CPU seconds of
this process: insensitive to other processes sharing the core). Reported: particle-steps per
second and particles per second over the problem's default horizon (particle-steps/s divided by
its number of steps). It also checks that per-particle θ at the defaults reproduces the fixed
path bit for bit (float64).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from prnf_core.problems import get_problem
from prnf_core.simulate import simulate, step_count

CASES = {  # problem -> (particles, steps timed)
    "bm1d": (200_000, 50),
    "runaway2d": (50_000, 40),
}


def _x0(sde, n: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = (np.asarray(v) for v in sde.domain)
    return lo + (hi - lo) * rng.random((n, sde.dim))


def _values(sde, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: float(sde.params[k]) * rng.uniform(0.5, 1.5, n) for k in sde.varying}


def _time(sde, x0: np.ndarray, **kw) -> float:
    start = time.process_time()
    simulate(sde, x0, **kw)
    return time.process_time() - start


def run(quick: bool, rounds: int) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    for name, (n, steps) in CASES.items():
        if quick:
            n, steps = n // 10, max(steps // 2, 5)
        sde = get_problem(name)
        rng = np.random.default_rng(0)
        x0 = _x0(sde, n, rng)
        values = _values(sde, n, rng)
        t_end = steps * sde.dt
        horizon_steps = step_count(sde.t_end, sde.dt)
        defaults = {k: np.full(n, float(sde.params[k])) for k in sde.varying}
        same = np.array_equal(
            simulate(sde, x0, t_end=t_end, seed=1, device="cpu").xT,
            simulate(sde, x0, t_end=t_end, seed=1, device="cpu", param_values=defaults).xT)
        for dtype in ("float64", "float32"):
            kw = dict(t_end=t_end, seed=1, dtype=dtype, device="cpu")
            simulate(sde, x0[:1000], **{**kw, "t_end": sde.dt})  # warm-up
            best = {"fixed": float("inf"), "per-particle": float("inf")}
            for _ in range(rounds):
                best["fixed"] = min(best["fixed"], _time(sde, x0, **kw))
                best["per-particle"] = min(best["per-particle"],
                                           _time(sde, x0, param_values=values, **kw))
            rate = {k: n * steps / v for k, v in best.items()}
            rows.append({
                "problem": name, "dtype": dtype, "n": n, "steps": steps,
                "varying": list(sde.varying),
                "fixed_particle_steps_per_s": rate["fixed"],
                "varying_particle_steps_per_s": rate["per-particle"],
                "fixed_particles_per_s": rate["fixed"] / horizon_steps,
                "varying_particles_per_s": rate["per-particle"] / horizon_steps,
                "ratio": rate["per-particle"] / rate["fixed"],
                "defaults_bit_identical_float64": bool(same),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x fewer particles")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    rows = run(args.quick, args.rounds)
    print(f"torch {torch.__version__}, numpy {np.__version__}, 1 thread, best of {args.rounds}")
    print("| problem | dtype | varying | fixed θ: M particle-steps/s | per-particle θ: M "
          "particle-steps/s | fixed θ: particles/s (default T) | per-particle θ: particles/s "
          "| per-particle / fixed | defaults bit-identical |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['problem']} | {r['dtype']} | {', '.join(r['varying'])} | "
              f"{r['fixed_particle_steps_per_s'] / 1e6:.2f} | "
              f"{r['varying_particle_steps_per_s'] / 1e6:.2f} | "
              f"{r['fixed_particles_per_s']:,.0f} | {r['varying_particles_per_s']:,.0f} | "
              f"{r['ratio']:.2f} | {'yes' if r['defaults_bit_identical_float64'] else 'NO'} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
