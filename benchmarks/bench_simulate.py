"""Euler–Maruyama kernel throughput of ``prnf_core.simulate`` against its baselines, on one core.

Run ``python benchmarks/bench_simulate.py [--quick] [--json out.json] [--wait-quiet SECONDS]
[--problems NAME ...] [--warm-cache] [--skip-accuracy]``.

For every built-in problem (default: abc3d, runaway2d, bm1d, ou, ou1d_rate) it measures
particle-steps per second (particles × steps / time) of ``simulate()`` in float64 and float32 with
``torch.set_num_threads(1)``, uncompiled (the default, bit for bit the stored datasets) and with
``compile=True`` (the step as one ``torch.compile`` kernel), side by side in the same process and
in interleaved rounds (the best round is reported). Time is measured twice: per CPU-second of the
process (``time.process_time``; the verdicts use it: insensitive to other processes taking the
core, equal to wall time on an idle machine) and on the wall clock. With, for the same particle
count:

* the random-normal ceiling: the fastest of numpy ``Generator(SFC64)``/``Generator(PCG64)``
  ``standard_normal(out=...)`` into a preallocated buffer and torch ``Tensor.normal_`` with a
  ``torch.Generator``, per dtype, converted to the particle-steps/s reachable if drawing the
  ``noise_dim`` normals of each particle-step were the only cost;
* for abc3d and runaway2d: ``torchsde.sdeint(method="euler")`` with the same dt on an SDE class
  wrapping the same fused coefficients (noise_type "diagonal", sde_type "ito"); torchsde has no
  boundary rules, so runaway2d runs there *without* its boundaries (labelled); and a plain numpy
  float64 loop "as in the paper's research scripts": allocate-per-step expressions
  ``x = x + b(x)*dt + sigma*np.sqrt(dt)*rng.standard_normal(x.shape)`` (runaway2d with
  ``scipy.special.erf`` and its boundary rules written the same way).

The one-off compile time of each compiled kernel is measured on its first call (a fresh, empty
inductor cache directory unless ``--warm-cache``), with the break-even point: the particle-steps
after which compiling has paid for itself.

Then it checks float32 against float64 statistically, for abc3d and runaway2d: the same x0 (a
test initial distribution of the paper), many particles, the full horizon; mean and std of X_T
per coordinate and the problem's quantity of interest (runaway2d: the runaway fraction
P(p > 1.75); abc3d: the box probability), for float32 uncompiled, float32 compiled and float64
compiled against float64 uncompiled, each with its own noise stream; differences are compared
with 3 standard errors.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prnf_core.initial import Maxwellian, TruncatedGaussian
from prnf_core.problems import get_problem
from prnf_core.sde import SDE
from prnf_core.simulate import simulate

GOAL_VS_TORCHSDE = 10.0
GOAL_VS_NUMPY = 5.0
GOAL_VS_CEILING = 0.5
P_STAR = 1.75  # runaway threshold of the paper's quantity of interest
DTYPES = {"float64": torch.float64, "float32": torch.float32}
PROBLEMS = ("abc3d", "runaway2d", "bm1d", "ou", "ou1d_rate")
BASELINES = ("abc3d", "runaway2d")  # the problems with torchsde and numpy-loop baselines
MODES = {"uncompiled": False, "compiled": True}


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one benchmark run."""

    n: int  # particles in the throughput runs
    steps: int  # steps of prnf's simulate()
    steps_slow: int  # steps of the slower baselines and of the normal-ceiling fills
    rounds: int  # interleaved repetitions; the best is reported
    acc_n: dict[str, int] = field(default_factory=dict)  # particles of the accuracy check
    acc_t_end: dict[str, float] = field(default_factory=dict)  # horizon of the accuracy check


FULL = Sizes(n=100_000, steps=200, steps_slow=50, rounds=4,
             acc_n={"abc3d": 100_000, "runaway2d": 40_000},
             acc_t_end={"abc3d": 2.0, "runaway2d": 20.0})
QUICK = Sizes(n=20_000, steps=100, steps_slow=20, rounds=2,
              acc_n={"abc3d": 20_000, "runaway2d": 10_000},
              acc_t_end={"abc3d": 0.5, "runaway2d": 2.0})


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall-clock and process-CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores, from /proc/stat)."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]
    except OSError:
        return math.nan
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


class OtherLoad:
    """Cores used by other processes while the ``with`` block runs (accumulates)."""

    def __init__(self) -> None:
        self.other = 0.0
        self.wall = 0.0

    def __enter__(self) -> OtherLoad:
        self._start = (machine_cpu(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy, ours, wall = self._start
        self.other += (machine_cpu() - busy) - (time.process_time() - ours)
        self.wall += time.perf_counter() - wall

    @property
    def cores(self) -> float:
        """Average number of cores other processes used."""
        return max(self.other / self.wall, 0.0) if self.wall else math.nan


def wait_quiet(max_wait: float, threshold: float = 0.3, window: float = 3.0) -> None:
    """Wait up to ``max_wait`` s until other processes use < ``threshold`` cores."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        with OtherLoad() as load:
            time.sleep(window)
        if load.cores < threshold:
            return


def training_x0(sde: SDE, n: int, seed: int = 0) -> np.ndarray:
    """``n`` initial states uniform on the problem's training box."""
    low, high = (np.asarray(v) for v in sde.domain)
    return np.random.default_rng(seed).uniform(low, high, size=(n, sde.dim))


# -- normal-generation ceiling -----------------------------------------------------------------
def normal_fillers(shape: tuple[int, int], dtype: str, device: str = "cpu"
                   ) -> dict[str, Callable[[], None]]:
    """Candidate ways to fill a preallocated ``shape`` buffer with standard normals."""
    if device != "cpu":  # on a GPU: torch's generator there (what simulate uses)
        t_buf = torch.empty(shape, dtype=DTYPES[dtype], device=device)
        gen = torch.Generator(device=device).manual_seed(1)
        return {"torch normal_": lambda: t_buf.normal_(generator=gen)}
    np_dtype = np.float64 if dtype == "float64" else np.float32
    np_buf = np.empty(shape, dtype=np_dtype)
    t_buf = torch.empty(shape, dtype=DTYPES[dtype])
    sfc = np.random.Generator(np.random.SFC64(1))
    pcg = np.random.Generator(np.random.PCG64(1))
    gen = torch.Generator().manual_seed(1)
    return {
        "numpy SFC64": lambda: sfc.standard_normal(out=np_buf, dtype=np_dtype),
        "numpy PCG64": lambda: pcg.standard_normal(out=np_buf, dtype=np_dtype),
        "torch normal_": lambda: t_buf.normal_(generator=gen),
    }


# -- torchsde baseline -------------------------------------------------------------------------
class TorchsdeWrapper(torch.nn.Module):
    """The problem's fused coefficients as a torchsde SDE (diagonal noise, Itô)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde: SDE) -> None:
        super().__init__()
        self.sde = sde
        self.calls = 0

    def f_and_g(self, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and (expanded to (n, d)) diagonal diffusion; counts the steps taken."""
        self.calls += 1
        b, s = self.sde.coefficients(y, float(t))
        return b, s.expand_as(y)


def run_torchsde(sde: SDE, x0: np.ndarray, steps: int, dtype: str) -> int:
    """Integrate with ``torchsde.sdeint(method='euler')``; return the number of steps taken."""
    import torchsde

    wrapper = TorchsdeWrapper(sde)
    y0 = torch.from_numpy(x0).to(DTYPES[dtype])
    ts = torch.tensor([0.0, steps * sde.dt], dtype=DTYPES[dtype])
    with torch.no_grad():
        ys = torchsde.sdeint(wrapper, y0, ts, method="euler", dt=sde.dt)
    if not torch.isfinite(ys[-1]).all():
        print(f"  note: torchsde {sde.name} {dtype}: non-finite end states (no boundaries)")
    return wrapper.calls


# -- plain numpy loops, written as in the research scripts --------------------------------------
def numpy_loop_abc3d(sde: SDE, x0: np.ndarray, steps: int, seed: int = 0) -> np.ndarray:
    """ABC flow, allocate-per-step numpy float64 Euler–Maruyama."""
    p = sde.params
    pe, a, b, c, sigma = p["pe"], p["A"], p["B"], p["C"], p["noise_scale"]
    dt = sde.dt
    rng = np.random.default_rng(seed)

    def drift(x: np.ndarray) -> np.ndarray:
        return pe * np.stack([a * np.sin(x[:, 2]) + c * np.cos(x[:, 1]),
                              b * np.sin(x[:, 0]) + a * np.cos(x[:, 2]),
                              c * np.sin(x[:, 1]) + b * np.cos(x[:, 0])], axis=1)

    x = x0.copy()
    for _ in range(steps):
        x = x + drift(x) * dt + sigma * np.sqrt(dt) * rng.standard_normal(x.shape)
    return x


def numpy_loop_runaway2d(sde: SDE, x0: np.ndarray, steps: int, seed: int = 0) -> np.ndarray:
    """Runaway electrons, allocate-per-step numpy float64 Euler–Maruyama with boundaries."""
    from scipy.special import erf

    from prnf_core.problems.runaway2d import derived_constants

    p = sde.params
    k = derived_constants(p)
    vt, nu, e_field, tau, z = k["vT"], k["nu"], k["E"], p["tau"], p["Z"]
    dtil, delta, p_min = k["delta_tilde"], k["delta"], p["p_min"]
    dt = sde.dt
    rng = np.random.default_rng(seed)

    def coefficients(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mom, xi = x[:, 0], x[:, 1]
        gamma = np.sqrt(1 + (dtil * mom) ** 2)
        u = mom / (vt * gamma)
        phi = erf(u)
        dphi = 2 / np.sqrt(np.pi) * np.exp(-u * u)
        psi = (phi - u * dphi) / (2 * u * u)
        c_a = np.maximum(nu * vt**2 * psi / u, 1e-10)
        c_b = np.maximum(0.5 * nu * vt**2 * (z + phi - psi + delta**4 * u * u / 2) / u, 1e-10)
        c_f = 2 * nu * vt * psi
        dca_dp = nu * vt**2 * ((dphi - 2 * psi / u) * u - psi) / (u * u) / (vt * gamma**3)
        one_m_xi2 = np.maximum(1 - xi * xi, 0)
        b_p = e_field * xi - gamma * mom * one_m_xi2 / tau - c_f + 2 * c_a / mom + dca_dp
        b_xi = (e_field * one_m_xi2 / mom + xi * one_m_xi2 / (tau * gamma)
                - 2 * xi * c_b / mom**2)
        s_p = np.sqrt(2 * c_a)
        s_xi = np.sqrt(2 * c_b) * np.sqrt(one_m_xi2) / mom
        return np.stack([b_p, b_xi], axis=1), np.stack([s_p, s_xi], axis=1)

    x = x0.copy()
    for _ in range(steps):
        b, s = coefficients(x)
        x = x + b * dt + s * np.sqrt(dt) * rng.standard_normal(x.shape)
        x[:, 0] = np.maximum(x[:, 0], p_min)
        x[:, 1] = np.where(x[:, 1] > 1, 2 - x[:, 1], x[:, 1])
        x[:, 1] = np.where(x[:, 1] < -1, -2 - x[:, 1], x[:, 1])
    return x


NUMPY_LOOPS = {"abc3d": numpy_loop_abc3d, "runaway2d": numpy_loop_runaway2d}


# -- throughput ---------------------------------------------------------------------------------
def compile_first(sde: SDE, x0: np.ndarray, dtype: str, device: str) -> float:
    """Compile the step for these particles (one step); the seconds it took (wall clock)."""
    out = simulate(sde, x0, t_end=sde.dt, dt=sde.dt, seed=1, dtype=dtype, device=device,
                   compile=True, compile_fallback=False)
    return float(out.compile_seconds)


def synced(fn: Callable[[], Any], device: str) -> Callable[[], Any]:
    """``fn`` followed by a device synchronization (GPU work is asynchronous)."""
    if device == "cpu":
        return fn

    def run() -> Any:
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def throughput(name: str, sizes: Sizes, quiet_wait: float = 0.0, device: str = "cpu"
               ) -> dict[str, Any]:
    """Best-of-rounds particle-steps/s of every variant for one problem, and compile times.

    On a GPU (``device="cuda"``) only prnf and torch's normal generator there are measured (the
    baselines are CPU code), and the wall clock is the one to read.
    """
    sde = get_problem(name)
    n, m = sizes.n, sde.noise_dim
    x0 = training_x0(sde, n)
    fillers = {dt: normal_fillers((m, n), dt, device) for dt in DTYPES}
    baselines = name in BASELINES and device == "cpu"

    variants: dict[str, tuple[Callable[[], Any], int]] = {}
    for dt in DTYPES:
        for mode, compiled in MODES.items():
            variants[f"prnf {mode} {dt}"] = (
                lambda dt=dt, compiled=compiled: simulate(
                    sde, x0, t_end=sizes.steps * sde.dt, dt=sde.dt, seed=1, dtype=dt,
                    device=device, compile=compiled, compile_fallback=False),
                sizes.steps,
            )
        for gen, fill in fillers[dt].items():
            variants[f"normals {dt} {gen}"] = (
                synced(lambda fill=fill: [fill() for _ in range(sizes.steps_slow)], device),
                sizes.steps_slow)
    torchsde_steps: dict[str, int] = {}
    if baselines:
        for dt in DTYPES:
            def _sde(dt: str = dt) -> None:
                torchsde_steps[dt] = run_torchsde(sde, x0, sizes.steps_slow, dt)
            variants[f"torchsde {dt}"] = (_sde, sizes.steps_slow)
        variants["numpy-loop float64"] = (
            lambda: NUMPY_LOOPS[name](sde, x0, sizes.steps_slow), sizes.steps_slow)

    # Compile first (the one-off cost, measured here), then warm up (lazy initializations,
    # page faults of the first buffers), then interleaved rounds.
    compile_s = {dt: compile_first(sde, x0, dt, device) for dt in DTYPES}
    warm_x0 = x0[:1000]
    for dt in DTYPES:
        simulate(sde, warm_x0, t_end=2 * sde.dt, dt=sde.dt, dtype=dt, device=device)
        if baselines:
            run_torchsde(sde, warm_x0, 2, dt)
    if baselines:
        NUMPY_LOOPS[name](sde, warm_x0, 2)
    best: dict[str, dict[str, float]] = {"cpu": {}, "wall": {}}
    load = OtherLoad()
    for _ in range(sizes.rounds):
        if quiet_wait > 0:
            wait_quiet(quiet_wait)
        for key, (fn, steps) in variants.items():
            with load:
                seconds = dict(zip(("wall", "cpu"), timed(fn), strict=True))
            if key.startswith("torchsde"):
                steps = torchsde_steps[key.split()[1]]
            for clock, sec in seconds.items():
                best[clock][key] = max(best[clock].get(key, 0.0), n * steps / sec)

    out: dict[str, list[dict[str, Any]]] = {}
    for clock, rates in best.items():
        out[clock] = []
        for dt in DTYPES:
            # One fill draws the noise_dim normals of all n particles: one step's worth.
            gens = {g: rates[f"normals {dt} {g}"] for g in fillers[dt]}  # particle-steps/s
            gen_best = max(gens, key=gens.__getitem__)
            out[clock].append({
                "problem": name, "dtype": dt, "clock": clock,
                "prnf": rates[f"prnf uncompiled {dt}"],
                "prnf_compiled": rates[f"prnf compiled {dt}"],
                "compile_seconds": compile_s[dt],
                "ceiling": gens[gen_best], "ceiling_generator": gen_best,
                "ceiling_all": gens,
                "torchsde": rates.get(f"torchsde {dt}"), "torchsde_steps": torchsde_steps.get(dt),
                "numpy_loop": rates.get("numpy-loop float64"),
                "torchsde_boundaries": not sde.has_boundaries, "other_cores": load.cores,
            })
    return out


def verdict(ok: bool) -> str:
    """PASS/MISS label."""
    return "PASS" if ok else "MISS"


def ratio(a: float | None, b: float | None, fmt: str = "5.1f") -> str:
    """``a / b`` as ``1.2x``, or a dash without a baseline."""
    return f"{a / b:{fmt}}x" if a is not None and b else f"{'-':>6}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rates and ratios, uncompiled and compiled side by side, PASS/MISS against the goals."""
    head = (f"{'problem':<10} {'dtype':<8} {'uncomp.':>7} {'compiled':>8} "
            f"{'ceiling (fastest gen.)':>24} {'comp/unc':>8} | {'unc/ceiling':>12} "
            f"{'comp/ceiling':>13} | {'torchsde':>8} {'np-loop':>7} | {'best/torchsde':>13} "
            f"{'best/np-loop':>12}")
    print(head)
    print("-" * len(head))
    for r in rows:
        best = max(r["prnf"], r["prnf_compiled"])
        r_unc, r_comp = r["prnf"] / r["ceiling"], r["prnf_compiled"] / r["ceiling"]
        mark = "" if r["torchsde_boundaries"] else "*"
        tsde = f"{r['torchsde'] / 1e6:7.2f}{mark:1}" if r["torchsde"] else f"{'-':>8}"
        nloop = f"{r['numpy_loop'] / 1e6:7.2f}" if r["numpy_loop"] else f"{'-':>7}"
        print(f"{r['problem']:<10} {r['dtype']:<8} {r['prnf'] / 1e6:7.2f} "
              f"{r['prnf_compiled'] / 1e6:8.2f} {r['ceiling'] / 1e6:7.2f} "
              f"({r['ceiling_generator']:<14}) {ratio(r['prnf_compiled'], r['prnf'], '6.2f')} | "
              f"{r_unc:4.0%} {verdict(r_unc >= GOAL_VS_CEILING):<7} "
              f"{r_comp:4.0%} {verdict(r_comp >= GOAL_VS_CEILING):<8} | {tsde} {nloop} | "
              f"{ratio(best, r['torchsde'])} "
              f"{verdict(bool(r['torchsde']) and best / r['torchsde'] >= GOAL_VS_TORCHSDE):<6}"
              f"{ratio(best, r['numpy_loop'])} "
              f"{verdict(bool(r['numpy_loop']) and best / r['numpy_loop'] >= GOAL_VS_NUMPY)}")


def print_throughput(rows: list[dict[str, Any]], wall_rows: list[dict[str, Any]],
                     sizes: Sizes) -> None:
    """Both tables (CPU time, then wall clock), compile times and the notes."""
    print(f"\nThroughput, one core, {sizes.n:,} particles; prnf {sizes.steps} steps, baselines and "
          f"normal fills {sizes.steps_slow} steps; best of {sizes.rounds} interleaved rounds.")
    print("Rates in millions of particle-steps per second (Mps/s); 'best' = the faster of "
          "uncompiled and compiled.")
    print(f"Goals: prnf >= {GOAL_VS_CEILING:.0%} of the normal-generation ceiling, "
          f">= {GOAL_VS_TORCHSDE:.0f}x torchsde, >= {GOAL_VS_NUMPY:.0f}x numpy loop.")
    print("\nA. Per CPU-second of this process (time.process_time: insensitive to other processes "
          "taking the core; equals wall time on an idle machine):\n")
    print_table(rows)
    others = ", ".join(f"{r['problem']} {r['other_cores']:.2f}" for r in rows[::2])
    print(f"\nB. Wall clock (time.perf_counter). Other processes used on average ~{others} of "
          f"the {os.cpu_count()} cores while these were measured:\n")
    if any(r["other_cores"] > 0.25 for r in rows):
        print("   CONTENDED: other processes were using the machine; wall-clock rates are low "
              "and the CPU-time rates (table A) may be too (shared caches, memory bandwidth).\n")
    print_table(wall_rows)
    print("\n* torchsde has no boundary rules: runaway2d runs there WITHOUT its boundaries "
          "(p clamp at p_min, xi reflection at +-1), so it does less work than prnf.")
    print("np-loop is float64 for both rows (the research scripts' precision).")
    print("\nCompile time (one-off, wall clock, first call with these particles) and break-even "
          "(particle-steps after which compiling has paid for itself, table A rates):")
    for r in rows:
        saved = 1 / r["prnf"] - 1 / r["prnf_compiled"]  # seconds per particle-step
        even = (f"{r['compile_seconds'] / saved:9.2e} particle-steps "
                f"(= {r['compile_seconds'] / saved / sizes.n:7.0f} steps of {sizes.n:,})"
                if saved > 0 else "never (compiled is not faster)")
        print(f"  {r['problem']:<10} {r['dtype']:<8} {r['compile_seconds']:6.1f} s   "
              f"break-even {even}")
    print("Ceiling candidates (Mps/s = normals/s / noise_dim):")
    for r in rows:
        cands = ", ".join(f"{g} {v / 1e6:.1f}" for g, v in r["ceiling_all"].items())
        print(f"  {r['problem']:<10} {r['dtype']:<8} {cands}")
    for r in rows:
        if r["torchsde_steps"] not in (None, sizes.steps_slow):
            print(f"  note: torchsde took {r['torchsde_steps']} steps for {r['problem']} "
                  f"{r['dtype']} (asked {sizes.steps_slow}); its rate uses the steps taken")


# -- where the time goes -----------------------------------------------------------------------
def best_time(fn: Callable[[], Any], reps: int = 10) -> float:
    """Best of ``reps`` CPU times of ``fn`` (after one warm-up call)."""
    fn()
    return min(timed(fn)[1] for _ in range(reps))


def breakdown(rows: list[dict[str, Any]], sizes: Sizes) -> None:
    """Coefficient cost per step against prnf's step time, and runaway2d's exp underflow."""
    from prnf_core.problems.runaway2d import derived_constants

    print("\nWhere prnf's step time goes (same particles, one step; isolated best-of-10 CPU times, "
          "they need not add up exactly). Uncompiled: the coefficient evaluation; compiled: "
          "the whole step is one kernel (step minus normals):")
    for r in rows:
        sde = get_problem(r["problem"])
        state = torch.from_numpy(training_x0(sde, sizes.n).T.copy()).to(DTYPES[r["dtype"]])
        step = sizes.n / r["prnf"]
        coef = best_time(lambda sde=sde, state=state: sde.coefficients(state.T, 0.0))
        normals = sizes.n / r["ceiling"]
        kernel = sizes.n / r["prnf_compiled"] - normals
        print(f"  {r['problem']:<10} {r['dtype']:<8} uncompiled step {step * 1e3:6.2f} ms: "
              f"coefficients {coef * 1e3:6.2f} ms ({coef / step:4.0%}), normals >= "
              f"{normals * 1e3:5.2f} ms ({normals / step:4.0%}), rest "
              f"{max(step - coef - normals, 0) * 1e3:5.2f} ms | compiled step "
              f"{(kernel + normals) * 1e3:6.2f} ms: kernel {kernel * 1e3:5.2f} ms")
    if not any(r["problem"] == "runaway2d" for r in rows):
        return
    sde = get_problem("runaway2d")
    k = derived_constants(sde.params)
    p = torch.from_numpy(training_x0(sde, sizes.n)[:, 0].copy())
    for dt, floor in (("float64", -700.0), ("float32", -87.0)):
        mom = p.to(DTYPES[dt])
        u = mom / (k["vT"] * torch.sqrt(1 + (k["delta_tilde"] * mom) ** 2))
        arg = -u * u
        plain = best_time(lambda arg=arg: torch.exp(arg))
        clamped = best_time(lambda arg=arg, floor=floor: torch.exp(arg.clamp_min(floor)))
        under = float((arg < floor).double().mean())
        print(f"  runaway2d {dt}: torch.exp(-u*u) {plain * 1e3:.2f} ms per step, "
              f"{clamped * 1e3:.2f} ms with the argument clamped at {floor:g} "
              f"({under:.0%} of the arguments underflow; torch's CPU exp is slow there)")


# -- float32 accuracy ---------------------------------------------------------------------------
def test_x0(name: str, n: int) -> tuple[np.ndarray, str]:
    """Initial states from one of the paper's test initial distributions."""
    rng = np.random.default_rng(12345)
    if name == "abc3d":
        spec = TruncatedGaussian(mu=[1.5 * math.pi, math.pi, math.pi],
                                 s=[math.pi / 3, math.pi / 5, math.pi / 4],
                                 low=[0.0] * 3, high=[2 * math.pi] * 3)
        return spec.sample(n, rng), "truncated Gaussian (3pi/2, pi, pi; s = pi/3, pi/5, pi/4)"
    return Maxwellian(temperature=10.0).sample(n, rng), "Maxwellian T0_hat = 10"


def se_std(x: np.ndarray) -> float:
    """Standard error of the sample standard deviation (delta method, any distribution)."""
    n = len(x)
    c = x - x.mean()
    m2, m4 = float((c**2).mean()), float((c**4).mean())
    return math.sqrt(max(m4 - m2**2, 0.0) / (4 * m2 * n)) if m2 > 0 else 0.0


ACCURACY_VARIANTS = {  # label: (dtype, compile, seed); compared with float64 uncompiled, seed 7
    "f32": ("float32", False, 8),
    "f32 compiled": ("float32", True, 9),
    "f64 compiled": ("float64", True, 10),
}


def qoi_indicator(name: str, x: np.ndarray) -> np.ndarray:
    """Per-particle indicator of the problem's quantity of interest."""
    if name == "runaway2d":
        return (x[:, 0] > P_STAR).astype(float)
    # The paper's parameter-study quantity, a small probability: P[(X, Z) in [0,pi]x[2pi,3pi]].
    return ((x[:, 0] >= 0) & (x[:, 0] <= math.pi) & (x[:, 2] >= 2 * math.pi)
            & (x[:, 2] <= 3 * math.pi)).astype(float)


def accuracy(name: str, sizes: Sizes, device: str = "cpu") -> list[dict[str, Any]]:
    """float32 and compiled runs vs float64 uncompiled: statistics of X_T with standard errors."""
    sde = get_problem(name)
    n, t_end = sizes.acc_n[name], sizes.acc_t_end[name]
    x0, x0_label = test_x0(name, n)
    runs, seconds = {}, {}
    for label, (dtype, compiled, seed) in {"f64": ("float64", False, 7),
                                           **ACCURACY_VARIANTS}.items():
        start = time.perf_counter()
        runs[label] = simulate(sde, x0, t_end=t_end, seed=seed, dtype=dtype, device=device,
                               compile=compiled, compile_fallback=False).xT.astype(float)
        seconds[label] = time.perf_counter() - start
    print(f"\n{name}: x0 ~ {x0_label}, n = {n:,}, T = {t_end} ({round(t_end / sde.dt)} steps); "
          + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
          + "; independent noise streams")
    x64 = runs["f64"]
    stats: list[tuple[str, Callable[[np.ndarray], np.ndarray | None], str]] = []
    for i, coord in enumerate(sde.coord_names):
        stats.append((f"mean {coord}", lambda x, i=i: x[:, i], "paired"))
    for i, coord in enumerate(sde.coord_names):
        stats.append((f"std {coord}", lambda x, i=i: x[:, i], "std"))
    qoi = f"P(p > {P_STAR})" if name == "runaway2d" else "P(box)"
    stats.append((qoi, lambda x: qoi_indicator(name, x), "paired"))
    out = []
    for stat, f, kind in stats:
        ref = f(x64)
        row: dict[str, Any] = {"problem": name, "stat": stat,
                               "f64": float(ref.std() if kind == "std" else ref.mean())}
        for label in ACCURACY_VARIANTS:
            other = f(runs[label])
            if kind == "std":
                # independent-sample delta-method errors (conservative with a shared x0)
                value, se = float(other.std()), math.hypot(se_std(ref), se_std(other))
            else:
                # paired differences: the same x0 row in both runs, independent noise given x0,
                # so the standard error accounts for the shared x0 exactly
                value, se = float(other.mean()), float((ref - other).std() / math.sqrt(n))
            diff = value - row["f64"]
            z = abs(diff) / se if se > 0 else (0.0 if diff == 0 else math.inf)
            row[label] = {"value": value, "se": se, "z": z, "within": z <= 3}
        out.append(row)
    head = "".join(f" {label + ' (z)':>22}" for label in ACCURACY_VARIANTS)
    print(f"  {'statistic':<14} {'float64':>10}{head}   (z = |diff| / SE(diff); within 3 SE?)")
    for row in out:
        cells = "".join(f" {row[label]['value']:10.5f} ({row[label]['z']:4.2f} "
                        f"{'ok' if row[label]['within'] else 'NO':>2})"
                        for label in ACCURACY_VARIANTS)
        print(f"  {row['stat']:<14} {row['f64']:10.5f}{cells}")
    return out


def machine() -> str:
    """One line about the machine and the load on it."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, numpy {np.__version__}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def main() -> None:
    """Parse arguments, run the throughput and accuracy benchmarks, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each throughput round, wait up to SECONDS for other "
                        "processes to use < 0.3 cores (for shared machines)")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS,
                        help="problems to measure (default: all built-in)")
    parser.add_argument("--warm-cache", action="store_true",
                        help="keep inductor's on-disk cache (default: a fresh, empty one, so "
                        "the compile times are those of a first run)")
    parser.add_argument("--skip-accuracy", action="store_true",
                        help="throughput only (no float32 / compiled accuracy check)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="simulation device (cuda: prnf and torch's normals there only; "
                        "read the wall-clock table)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    sizes = QUICK if args.quick else FULL
    cache = None
    if not args.warm_cache:
        cache = tempfile.mkdtemp(prefix="bench_simulate_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    torch.set_num_threads(1)
    started = time.perf_counter()
    print(f"bench_simulate {datetime.date.today()}: {machine()}; device {args.device}; "
          f"torch threads = 1; inductor "
          f"cache {'fresh (cold compiles)' if cache else 'as found (--warm-cache)'}")
    rows: list[dict[str, Any]] = []
    wall_rows: list[dict[str, Any]] = []
    try:
        startup = time.perf_counter()
        torch.compile(lambda x: x + 1.0, dynamic=False)(torch.zeros(8))
        print(f"compiler start-up (imports, worker pool, a trivial kernel): "
              f"{time.perf_counter() - startup:.1f} s, not counted in the compile times below")
        for name in args.problems:
            result = throughput(name, sizes, args.wait_quiet, args.device)
            rows += result["cpu"]
            wall_rows += result["wall"]
        print_throughput(rows, wall_rows, sizes)
        if args.device == "cpu":
            breakdown(rows, sizes)
        acc = []
        if not args.skip_accuracy:
            print("\nfloat32 and compiled vs float64 uncompiled (difference within 3 standard "
                  "errors = no bias detectable at this sample size)")
            for name in (p for p in BASELINES if p in args.problems):
                acc += accuracy(name, sizes, args.device)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": str(datetime.date.today()), "machine": machine(),
                       "sizes": sizes.__dict__, "throughput_cpu": rows,
                       "throughput_wall": wall_rows, "accuracy": acc}, fh,
                      indent=1, default=float)


if __name__ == "__main__":
    main()
