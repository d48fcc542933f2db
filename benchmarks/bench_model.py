"""Speed of the PRNF surrogate: training steps against the reference, sampling against NSF and MC.

Run ``python benchmarks/bench_model.py [--quick] [--device cpu|cuda] [--threads 1] [--json out]``.

1. **Training step** (forward + loss + backward + Adam step) at d = 3, batch 5000, width 512,
   2 hidden layers, tanh, λ = 100 (the paper's 3-D settings), of

   * ``prnf``: ``PRNF.training_loss`` (the d×d Jacobian propagated through the layers in the
     forward pass, :class:`prnf_core.models.prnf.JacobianMLP`);
   * ``reference``: the same two MLPs, ``log|det ∇_y f|`` from d separate
     ``torch.autograd.grad(z[:, i].sum(), y, create_graph=True)`` passes, stacked, ``slogdet``;
   * ``vmap(jacfwd)`` and ``vmap(jacrev)`` of ``torch.func`` (for information);
   * ``prnf (torch.compile)``: ``PRNF.training_loss`` under ``torch.compile(dynamic=True)``, as
     ``TrainConfig(torch_compile=True)`` trains (the one-off compile, tens of CPU seconds on a
     cold cache, happens before timing and is not counted).

   All variants start from the same weights; before timing, the script checks that their losses
   agree to 1e-5 (relative) and their float64 gradients to 1e-8, and reports the float32
   gradient differences. The same is then timed at the CPU default size (width 128, batch 512)
   for information.
2. **Sampling throughput** (samples/s of ``model.sample(x0)`` under ``torch.no_grad``, batch
   1e5) of the PRNF generator at width 128 and 512 against the zuko NSF baseline
   (``architecture="nsf"``, default config), untrained (weights do not change the cost) with the
   normalization set by ``fit_normalization``; and against Monte Carlo: ``simulate()`` of
   ``abc3d`` (T = 2, dt = 0.002) and ``runaway2d`` (T = 20, dt = 0.005) on 20k particles in
   float64 and float32, i.e. the per-sample speed-up of the surrogate once trained.

Timings run side by side in the same process, in interleaved rounds; the best round is reported.
On CPU, both the wall clock and the process CPU time (``time.process_time``) are reported; the
verdicts use the wall clock of the best round (with one thread and an idle core they agree).
The time-to-accuracy comparison is in ``bench_time_to_accuracy.py``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prnf_core.models import ConditionalSampler, ModelConfig, build_model
from prnf_core.problems import get_problem
from prnf_core.simulate import simulate

GOAL_TRAIN_VS_REFERENCE = 1.5
GOAL_SAMPLE_VS_NSF = 10.0
LOG_2PI = math.log(2 * math.pi)
LAM = 100.0


@dataclass(frozen=True)
class Sizes:
    """Sizes of one benchmark run."""

    train_rounds: int  # interleaved rounds of the training-step timing
    train_steps: int  # steps per round at the paper size
    sample_n: int  # batch of the sampling runs
    sample_rounds: int
    mc_n: int  # particles of the Monte Carlo runs
    mc_fraction: float  # share of the horizon simulated (the cost is extrapolated linearly)
    mc_rounds: int  # repetitions of each simulation; the best is reported


FULL = Sizes(train_rounds=5, train_steps=3, sample_n=100_000, sample_rounds=10, mc_n=20_000,
             mc_fraction=1.0, mc_rounds=2)
QUICK = Sizes(train_rounds=2, train_steps=1, sample_n=100_000, sample_rounds=2, mc_n=20_000,
              mc_fraction=0.05, mc_rounds=1)


# -- timing helpers -----------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA) so timings are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """Wall and process-CPU seconds of one call."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, reps: int,
                device: torch.device, warm: bool = True) -> dict[str, dict[str, float]]:
    """Best-of-``rounds`` wall and CPU seconds per call of each function, run round-robin."""
    for fn in fns.values() if warm else ():  # warm-up: allocator, lazy init, graph caches
        fn()
    best = {name: {"wall": math.inf, "cpu": math.inf} for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            wall, cpu = timed(lambda fn=fn: [fn() for _ in range(reps)], device)
            best[name]["wall"] = min(best[name]["wall"], wall / reps)
            best[name]["cpu"] = min(best[name]["cpu"], cpu / reps)
    return best


# -- 1. training step ---------------------------------------------------------------------------
def _loss_from_jacobian(model: Any, z: torch.Tensor, jac: torch.Tensor, yn: torch.Tensor,
                        ctx: torch.Tensor, lam: float) -> torch.Tensor:
    """The PRNF loss given ``z = f(x0, y)`` and its ``(n, d, d)`` Jacobian in y."""
    d = z.shape[1]
    logdet = torch.linalg.slogdet(jac)[1]
    nll = (0.5 * (z * z).sum(dim=1) + 0.5 * d * LOG_2PI - logdet).mean()
    rev = ((model.inverse_map(z, ctx) - yn) ** 2).sum(dim=1).mean()
    return nll + lam * rev


def reference_loss(model: Any, yn: torch.Tensor, ctx: torch.Tensor, lam: float) -> torch.Tensor:
    """The reference computation: d autograd passes for the rows of ∇_y f, then slogdet."""
    y = yn.detach().clone().requires_grad_(True)
    z = model.forward_net(torch.cat([ctx, y], dim=1))
    rows = [torch.autograd.grad(z[:, i].sum(), y, create_graph=True)[0]
            for i in range(z.shape[1])]
    return _loss_from_jacobian(model, z, torch.stack(rows, dim=1), yn, ctx, lam)


def func_loss(model: Any, yn: torch.Tensor, ctx: torch.Tensor, lam: float,
              mode: str) -> torch.Tensor:
    """The loss with ``torch.func.vmap(jacfwd)`` or ``vmap(jacrev)`` per-sample Jacobians."""
    from torch.func import jacfwd, jacrev, vmap

    def single(y1: torch.Tensor, c1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model.forward_net(torch.cat([c1, y1]).unsqueeze(0)).squeeze(0)
        return out, out

    jac_fn = jacfwd if mode == "jacfwd" else jacrev
    jac, z = vmap(jac_fn(single, has_aux=True))(yn, ctx)
    return _loss_from_jacobian(model, z, jac, yn, ctx, lam)


_COMPILED: dict[int, Callable] = {}  # per model: the compiled bound method keeps it alive


def compiled_loss(model: Any, yn: torch.Tensor, ctx: torch.Tensor, lam: float) -> torch.Tensor:
    """``PRNF.training_loss`` under ``torch.compile``, compiled once per model."""
    if id(model) not in _COMPILED:
        _COMPILED[id(model)] = torch.compile(model.training_loss, dynamic=True)
    return _COMPILED[id(model)](yn, ctx, lam)[0]


LOSSES: dict[str, Callable[[Any, torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "prnf": lambda m, yn, ctx, lam: m.training_loss(yn, ctx, lam)[0],
    "prnf (torch.compile)": compiled_loss,
    "reference (d autograd passes)": reference_loss,
    "vmap(jacfwd)": lambda m, yn, ctx, lam: func_loss(m, yn, ctx, lam, "jacfwd"),
    "vmap(jacrev)": lambda m, yn, ctx, lam: func_loss(m, yn, ctx, lam, "jacrev"),
}


def _losses_and_grads(model: ConditionalSampler, yn: torch.Tensor, ctx: torch.Tensor
                      ) -> dict[str, tuple[float, list[torch.Tensor]]]:
    """Loss and parameter gradients of every variant at the model's current weights."""
    out = {}
    for name, loss_fn in LOSSES.items():
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model, yn, ctx, LAM)
        loss.backward()
        out[name] = (float(loss.detach()), [p.grad.detach().clone() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return out


def _max_rel(grads: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    return max(float((g - r).norm() / r.norm().clamp_min(1e-30))
               for g, r in zip(grads, ref, strict=True))


def check_losses(model: ConditionalSampler, yn: torch.Tensor, ctx: torch.Tensor
                 ) -> dict[str, dict[str, float]]:
    """Check that every variant computes the same loss and gradients as ``prnf``.

    Losses at the benchmark precision must agree to 1e-5 (relative). Gradients are compared
    in float64 on the first 500 rows (must agree to 1e-8: the same function), and reported at
    the benchmark precision (float32 rounding, amplified by the inverse Jacobian in the
    gradient of ``slogdet``, gives about 1e-3 there).
    """
    res = _losses_and_grads(model, yn, ctx)
    model64 = copy.deepcopy(model).double()
    res64 = _losses_and_grads(model64, yn[:500].double(), ctx[:500].double())
    base, base_grads = res["prnf"]
    out: dict[str, dict[str, float]] = {}
    for name, (loss, grads) in res.items():
        row = {"loss": loss, "loss_rel_diff": abs(loss - base) / abs(base),
               "grad_rel_diff": _max_rel(grads, base_grads),
               "grad_rel_diff_float64": _max_rel(res64[name][1], res64["prnf"][1])}
        if row["loss_rel_diff"] > 1e-5:
            raise AssertionError(f"{name}: loss {loss} differs from prnf's {base}")
        if row["grad_rel_diff_float64"] > 1e-8:
            raise AssertionError(f"{name}: float64 gradients differ from prnf's by "
                                 f"{row['grad_rel_diff_float64']:.1e}")
        out[name] = row
    return out


def bench_training_step(width: int, batch: int, sizes: Sizes, steps: int,
                        device: torch.device) -> dict[str, Any]:
    """Time one Adam step of every loss variant at d = 3 (see module doc)."""
    d = 3
    config = ModelConfig(dim=d, hidden_width=width, hidden_layers=2, activation="tanh")
    base = build_model(config, seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    yn = torch.randn(batch, d, generator=gen).to(device)
    ctx = (torch.rand(batch, d, generator=gen) * 2 - 1).to(device)
    checks = check_losses(base, yn, ctx)
    fns = {}
    for name, loss_fn in LOSSES.items():
        model = copy.deepcopy(base)  # own weights and optimizer state: no variant sees another's
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model: ConditionalSampler = model, opt: torch.optim.Optimizer = opt,
                 loss_fn: Callable = loss_fn) -> None:
            loss = loss_fn(model, yn, ctx, LAM)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        fns[name] = step
    times = interleaved(fns, sizes.train_rounds, steps, device)
    ref = times["reference (d autograd passes)"]
    return {
        "width": width, "batch": batch, "dim": d,
        "checks": checks,
        "seconds_per_step": times,
        "speedup_vs_reference": {name: ref["wall"] / t["wall"] for name, t in times.items()},
        "speedup_vs_reference_cpu": {name: ref["cpu"] / t["cpu"] for name, t in times.items()},
    }


# -- 2. sampling throughput ---------------------------------------------------------------------
def training_x0(sde: Any, n: int, seed: int = 0) -> np.ndarray:
    """``n`` initial states uniform on the problem's training box."""
    low, high = (np.asarray(v) for v in sde.domain)
    return np.random.default_rng(seed).uniform(low, high, size=(n, sde.dim))


def surrogate(config: ModelConfig, x0: np.ndarray, device: torch.device) -> ConditionalSampler:
    """An untrained model with its normalization fitted on ``x0`` (weights do not change speed)."""
    model = build_model(config, seed=0).to(device)
    rng = np.random.default_rng(1)
    model.fit_normalization(x0, x0 + rng.normal(size=x0.shape))
    return model.eval()


def bench_sampling(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Samples/s of PRNF (width 128, 512) and NSF, and of Monte Carlo, for abc3d and runaway2d."""
    out: dict[str, Any] = {}
    for name in ("abc3d", "runaway2d"):
        sde = get_problem(name)
        x0 = training_x0(sde, sizes.sample_n)
        x0_t = torch.from_numpy(x0).to(device=device, dtype=torch.float32)
        models = {
            "prnf w128": ModelConfig(dim=sde.dim),
            "prnf w512": ModelConfig(dim=sde.dim, hidden_width=512),
            "nsf (default)": ModelConfig(dim=sde.dim, architecture="nsf"),
        }
        fns = {}
        for label, config in models.items():
            model = surrogate(config, x0, device)

            def draw(model: ConditionalSampler = model, x0_t: torch.Tensor = x0_t) -> None:
                with torch.no_grad():
                    model.sample(x0_t)

            fns[label] = draw
        times = interleaved(fns, sizes.sample_rounds, 1, device)
        rates = {label: {"wall": sizes.sample_n / t["wall"], "cpu": sizes.sample_n / t["cpu"]}
                 for label, t in times.items()}

        mc: dict[str, Any] = {}
        steps = round(sde.t_end / sde.dt)
        sim_steps = max(1, round(steps * sizes.mc_fraction))
        x0_mc = x0[:sizes.mc_n]
        sims = {dtype: lambda dtype=dtype, sde=sde, x0_mc=x0_mc, k=sim_steps: simulate(
            sde, x0_mc, t_end=k * sde.dt, seed=0, dtype=dtype, device=device
        ) for dtype in ("float64", "float32")}
        sim_times = interleaved(sims, sizes.mc_rounds, 1, device, warm=False)
        for dtype in sims:
            wall, cpu = sim_times[dtype]["wall"], sim_times[dtype]["cpu"]
            scale = steps / sim_steps  # full-horizon cost, extrapolated when simulating a share
            mc[dtype] = {"wall": len(x0_mc) / (wall * scale), "cpu": len(x0_mc) / (cpu * scale),
                         "seconds_full_horizon": wall * scale}
        out[name] = {
            "dim": sde.dim, "steps": steps, "simulated_steps": sim_steps,
            "mc_particles": len(x0_mc),
            "surrogate_samples_per_s": rates,
            "mc_samples_per_s": mc,
            "prnf_w128_vs_nsf": rates["prnf w128"]["wall"] / rates["nsf (default)"]["wall"],
            "prnf_w512_vs_nsf": rates["prnf w512"]["wall"] / rates["nsf (default)"]["wall"],
            "speedup_vs_mc": {
                f"{label} vs {dtype}": rates[label]["wall"] / mc[dtype]["wall"]
                for label in rates for dtype in mc
            },
        }
    return out


# -- reporting ----------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_training(res: dict[str, Any], goal: bool) -> None:
    print(f"\n== training step: d={res['dim']}, batch {res['batch']}, width {res['width']}, "
          f"2 hidden layers, tanh, λ={LAM:g} ==")
    for name, row in res["checks"].items():
        print(f"  check {name:30s} loss {row['loss']:.6f} (rel diff {row['loss_rel_diff']:.1e})"
              f"  grad rel diff {row['grad_rel_diff']:.1e} float32, "
              f"{row['grad_rel_diff_float64']:.1e} float64")
    for name, t in res["seconds_per_step"].items():
        print(f"  {name:32s} {t['wall'] * 1e3:9.1f} ms/step wall {t['cpu'] * 1e3:9.1f} ms cpu   "
              f"speed-up vs reference {res['speedup_vs_reference'][name]:.2f}x "
              f"(cpu {res['speedup_vs_reference_cpu'][name]:.2f}x)")
    if goal:
        s = res["speedup_vs_reference"]["prnf"]
        print(f"  goal prnf >= {GOAL_TRAIN_VS_REFERENCE}x reference: {s:.2f}x -> "
              f"{verdict(s >= GOAL_TRAIN_VS_REFERENCE)}")


def print_sampling(res: dict[str, Any], sizes: Sizes) -> None:
    for name, row in res.items():
        print(f"\n== sampling {name} (d={row['dim']}), batch {sizes.sample_n}, torch.no_grad ==")
        for label, r in row["surrogate_samples_per_s"].items():
            print(f"  {label:16s} {r['wall']:12.3e} samples/s wall ({r['cpu']:.3e} cpu)")
        note = "" if row["simulated_steps"] == row["steps"] else (
            f" (extrapolated from {row['simulated_steps']} of {row['steps']} steps)")
        for dtype, r in row["mc_samples_per_s"].items():
            print(f"  MC simulate {dtype:7s} {r['wall']:12.3e} samples/s wall "
                  f"({r['seconds_full_horizon']:.1f} s for {row['mc_particles']} particles, "
                  f"{row['steps']} steps){note}")
        print(f"  prnf w128 / nsf: {row['prnf_w128_vs_nsf']:.1f}x   "
              f"prnf w512 / nsf: {row['prnf_w512_vs_nsf']:.1f}x")
        for key, s in row["speedup_vs_mc"].items():
            print(f"  per-sample speed-up {key}: {s:.3g}x")
        if row["dim"] == 3:
            s = row["prnf_w128_vs_nsf"]
            print(f"  goal prnf (w128) >= {GOAL_SAMPLE_VS_NSF:g}x nsf: {s:.1f}x -> "
                  f"{verdict(s >= GOAL_SAMPLE_VS_NSF)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short version (smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "sample"],
                        help="sections to skip")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f"bench_model {datetime.date.today()} {platform.processor() or platform.machine()} "
          f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} torch={torch.__version__} "
          f"threads={torch.get_num_threads()} device={device}{' QUICK' if args.quick else ''}")
    report: dict[str, Any] = {"date": str(datetime.date.today()), "device": str(device),
                              "threads": torch.get_num_threads(), "quick": args.quick,
                              "load_start": os.getloadavg()[0]}
    if "train" not in args.skip:
        paper = bench_training_step(512, 5000, sizes, sizes.train_steps, device)
        print_training(paper, goal=True)
        small = bench_training_step(128, 512, sizes, 20 * sizes.train_steps, device)
        print_training(small, goal=False)
        report["train_paper"], report["train_cpu_default"] = paper, small
    if "sample" not in args.skip:
        sampling = bench_sampling(sizes, device)
        print_sampling(sampling, sizes)
        report["sampling"] = sampling
    report["load_end"] = os.getloadavg()[0]
    print(f"\nload average at the end: {report['load_end']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
