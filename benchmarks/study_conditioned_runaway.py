"""Issue 14's runaway2d study: ONE conditioned surrogate of p(X_t | x0; E0) for the runaway
electrons over t ∈ [2, 20] and the electric field E0 ∈ [×0.4, ×2.5] of the default, scored
against fresh Monte Carlo on

* the production rate P[p_t > p*] at t = 20 on a 3 × 4 grid of (E0, T̂0): E0 ∈ {×0.5, ×1, ×2},
  Maxwellians at T̂0 ∈ {2, 4, 7, 10};
* its time evolution at the default E0, t = 2, 3, …, 20 (odd times are not training snapshots),
  for the same four temperatures;

goal: within 10 % of MC for T̂0 ≥ 4, within 0.002 absolute below. The page also reports the cost
of the surrogate (data + training + sampling) against the cost of the MC it replaces, and the
break-even number of questions. Writes ``<out>/conditioned_runaway2d.md`` and two figures.

    python benchmarks/study_conditioned_runaway.py --out docs/results        # the committed page
    python benchmarks/study_conditioned_runaway.py --particles 2000 --epochs 1 --mc 2000 \\
        --samples 2000                                                       # a smoke run

Clock: CPU seconds of this process (torch on ``--threads`` threads; simulation chunks in-process).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prnf_core.dataset import DatasetConfig, open_dataset
from prnf_core.initial import Maxwellian
from prnf_core.models import ModelConfig, build_model
from prnf_core.models.conditioning import Conditioning
from prnf_core.problems import get_problem
from prnf_core.problems.runaway2d import RUNAWAY_P_STAR
from prnf_core.runner import run_dataset
from prnf_core.train import TrainConfig, fit

E0_DEFAULT = get_problem("runaway2d").params["E0"]
E0_BOX_FACTORS = (0.4, 2.5)  # the training box of E0, × the default
E0_FACTORS = (0.5, 1.0, 2.0)
TEMPERATURES = (2.0, 4.0, 7.0, 10.0)
TRAIN_TIMES = [float(t) for t in range(2, 21, 2)]
EVAL_TIMES = [float(t) for t in range(2, 21)]
T_END = 20.0
REL_GOAL, ABS_GOAL, REL_FROM_T0 = 0.10, 0.002, 4.0


def rate(samples: np.ndarray) -> tuple[float, float]:
    """Runaway rate P[p > p*] and its binomial standard error."""
    value = float(np.mean(samples[:, 0] > RUNAWAY_P_STAR))
    return value, math.sqrt(value * (1 - value) / len(samples))


def judge(t0: float, sur: float, mc: float) -> tuple[str, float, bool]:
    """(goal text, measured error in the goal's unit, within goal)."""
    if t0 >= REL_FROM_T0:
        rel = abs(sur - mc) / mc if mc > 0 else math.inf
        return f"rel ≤ {REL_GOAL:g}", rel, rel <= REL_GOAL
    err = abs(sur - mc)
    return f"abs ≤ {ABS_GOAL:g}", err, err <= ABS_GOAL


def powered_size(t0: float, value: float) -> int:
    """Samples for which the binomial SE of a rate ``value`` is a quarter of its goal's tolerance
    (10 % of the rate, or 0.002 absolute): with that SE on both sides, a surrogate exactly equal
    to the law misses its goal with probability P[|Z| > 2√2] ≈ 0.5 %, so a verdict judges the
    surrogate and not the test's own noise."""
    tolerance = REL_GOAL * value if t0 >= REL_FROM_T0 else ABS_GOAL
    if value <= 0 or tolerance <= 0:
        return 0
    return math.ceil(value * (1 - value) / (tolerance / 4) ** 2)


def _round_up(n: int, chunk: int) -> int:
    return -(-n // chunk) * chunk


def simulate_references(folder: Path, n_mc: int, chunk: int,
                        n_max: int) -> tuple[list[dict], float, int]:
    """Fresh MC per (E0, T̂0); the default-E0 sets keep snapshots at every evaluation time.
    A set whose ``n_mc`` particles leave a rate's SE above a quarter of its tolerance
    (:func:`powered_size`) is simulated again, with as many particles as that rate needs (at most
    ``n_max``). Returns the rows (rates at t = 20 and, for the default E0, at every time) and
    the total simulation CPU seconds and particles."""
    rows, seconds, particles = [], 0.0, 0
    for i, factor in enumerate(E0_FACTORS):
        for j, t0 in enumerate(TEMPERATURES):
            default = factor == 1.0
            n = n_mc
            while True:
                config = DatasetConfig(
                    problem="runaway2d", problem_params={"E0": factor * E0_DEFAULT},
                    initial=Maxwellian(temperature=t0), n_particles=n, chunk_size=chunk,
                    save_times=EVAL_TIMES if default else None, dtype="float32",
                    seed=2_100_000 + 10 * i + j)
                store = folder / f"mc_{i}_{j}_{n}.zarr"
                run_dataset(config, store)
                data = open_dataset(store)
                seconds += data.simulation_seconds()
                particles += n
                finals = data.load("snapshots") if default else data.load("xT")[None]
                times = EVAL_TIMES if default else [T_END]
                rates = [rate(snap) for snap in finals]
                needed = max(powered_size(t0, value) for value, _ in rates)
                if needed <= n or n >= n_max:
                    break
                n = min(_round_up(needed, chunk), n_max)
            rows += [{"factor": factor, "t0": t0, "t": t, "mc": r, "mc_particles": n}
                     for t, r in zip(times, rates, strict=True)]
    return rows, seconds, particles


def train_surrogate(folder: Path, *, particles: int, e0_box: tuple[float, float],
                    e0_scale: str, seed: int, threads: int, model: dict[str, Any],
                    training: dict[str, Any]) -> tuple[Any, Any, float, float]:
    """Simulate the training set into ``folder`` (``particles`` runaway2d particles, snapshots
    at TRAIN_TIMES, E0 drawn over ``e0_box`` × the default on ``e0_scale``) and fit ONE
    surrogate conditioned on (t, E0) to it. ``model`` and ``training``: further ModelConfig and
    TrainConfig fields. Returns the model, the fit's result, and the CPU seconds of the data
    (the chunks' simulation time) and of the training."""
    scale = {"E0": e0_scale}
    box = (e0_box[0] * E0_DEFAULT, e0_box[1] * E0_DEFAULT)
    run_dataset(DatasetConfig(problem="runaway2d", n_particles=particles,
                              chunk_size=min(10_000, particles), save_times=TRAIN_TIMES,
                              param_box={"E0": box}, param_scale=scale, dtype="float32",
                              seed=seed), folder / "train.zarr")
    dataset = open_dataset(folder / "train.zarr")
    conditioning = Conditioning(time=(min(TRAIN_TIMES), max(TRAIN_TIMES)), params={"E0": box},
                                param_scale=scale)
    surrogate = build_model(ModelConfig(dim=2, conditioning=conditioning, **model), seed=seed)
    started = time.process_time()
    result = fit(surrogate, dataset, TrainConfig(progress=False, threads=threads, seed=seed,
                                                 **training))
    return surrogate, result, dataset.simulation_seconds(), time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--architecture", choices=["prnf", "nsf"], default="prnf")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--lam", type=float, default=10.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--mc", type=int, default=100_000, help="MC particles per (E0, T̂0)")
    parser.add_argument("--samples", type=int, default=200_000,
                        help="surrogate samples per question, at least (more where the rate "
                             "needs them for a powered verdict)")
    parser.add_argument("--mc-max", type=int, default=2_000_000,
                        help="most MC particles or surrogate samples of one question, where a "
                             "small rate needs more than --mc / --samples")
    parser.add_argument("--e0-scale", choices=["log", "linear"], default="log",
                        help="scale of the E0 design and condition feature (param_scale)")
    parser.add_argument("--e0-box", type=float, nargs=2, default=E0_BOX_FACTORS,
                        metavar=("LOW", "HIGH"),
                        help="training box of E0 as factors of the default (the grid asks ×0.5, "
                             "×1 and ×2)")
    parser.add_argument("--ema", type=float, default=None,
                        help="EMA decay of the weights (TrainConfig.ema_decay); default: none")
    parser.add_argument("--train", default=None,
                        help="JSON of further TrainConfig fields, e.g. "
                             "'{\"lr_schedule\": \"cosine\"}'")
    parser.add_argument("--model", default=None,
                        help="JSON of further ModelConfig fields, e.g. '{\"bins\": 16}'")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the training data and of the model's initialization (the "
                             "MC references keep theirs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, result, data_seconds, train_seconds = train_surrogate(
            folder, particles=args.particles, e0_box=args.e0_box, e0_scale=args.e0_scale,
            seed=args.seed, threads=args.threads,
            model={"architecture": args.architecture, "hidden_width": args.width,
                   "hidden_layers": args.layers, **(json.loads(args.model) if args.model else {})},
            training={"epochs": args.epochs, "batch_size": args.batch, "lr": args.lr,
                      "lam": args.lam, "ema_decay": args.ema,
                      **(json.loads(args.train) if args.train else {})})
        print(f"trained: {train_seconds:.0f} CPU s, data {data_seconds:.0f} s", flush=True)
        rows, mc_seconds, mc_particles = simulate_references(folder, args.mc, min(20_000, args.mc),
                                               args.mc_max)
    model.eval()
    sample_seconds = 0.0
    for q, row in enumerate(rows):
        started = time.process_time()
        with torch.no_grad():
            row["samples"] = max(args.samples,
                                 min(powered_size(row["t0"], row["mc"][0]), args.mc_max))
            _, y = model.sample_initial(Maxwellian(temperature=row["t0"]), row["samples"],
                                        seed=7_000 + q, t=row["t"],
                                        params={"E0": row["factor"] * E0_DEFAULT})
        sample_seconds += time.process_time() - started
        row["sur"] = rate(y)
        row["goal"], row["error"], row["ok"] = judge(row["t0"], row["sur"][0], row["mc"][0])
        se = math.hypot(row["sur"][1], row["mc"][1])
        row["bias_se"] = (row["sur"][0] - row["mc"][0]) / se if se > 0 else 0.0
    questions = len({(r["factor"], r["t0"]) for r in rows})  # one MC run answers all its times
    summary = {
        "particles": args.particles, "snapshot_times": len(TRAIN_TIMES),
        "rows": result.n_train + result.n_val, "epochs": result.epochs_run,
        "architecture": args.architecture, "width": args.width, "layers": args.layers,
        "e0_scale": args.e0_scale, "e0_box": list(args.e0_box), "ema": args.ema,
        "seed": args.seed, "train": args.train, "model": args.model,
        "lam": args.lam, "lr": args.lr,
        "batch": args.batch, "threads": args.threads, "mc_particles": args.mc,
        "sur_samples": args.samples, "data_cpu_s": data_seconds, "train_cpu_s": train_seconds,
        "mc_cpu_s": mc_seconds, "mc_runs": questions, "sample_cpu_s": sample_seconds,
        "mc_particles_total": mc_particles,
        "sur_samples_total": sum(r["samples"] for r in rows),
        "mc_max": args.mc_max,
        "sample_calls": len(rows),
        "grid_ok": all(r["ok"] for r in rows if r["t"] == T_END),
        "time_ok": all(r["ok"] for r in rows if r["factor"] == 1.0),
    }
    print(json.dumps(summary, indent=1))
    if args.out is not None:
        write_page(args.out, rows, summary)


def _figures(out: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for factor, color in zip(E0_FACTORS, ("C0", "C1", "C2"), strict=True):
        sel = [r for r in rows if r["factor"] == factor and r["t"] == T_END]
        t0 = [r["t0"] for r in sel]
        ax.errorbar(t0, [r["mc"][0] for r in sel], yerr=[2 * r["mc"][1] for r in sel],
                    fmt="o", color=color, capsize=2, label=f"MC, E0 ×{factor:g}")
        ax.plot(t0, [r["sur"][0] for r in sel], "-", color=color,
                label=f"surrogate, E0 ×{factor:g}")
    ax.set(xlabel="T̂0", ylabel=f"runaway rate P[p > {RUNAWAY_P_STAR}] at t = 20",
           yscale="log", title="one model over (t, E0): rate vs (E0, T̂0)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rate_vs_E0_T0.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for t0, color in zip(TEMPERATURES, ("C0", "C1", "C2", "C3"), strict=True):
        sel = [r for r in rows if r["factor"] == 1.0 and r["t0"] == t0]
        ts = [r["t"] for r in sel]
        ax.errorbar(ts, [r["mc"][0] for r in sel], yerr=[2 * r["mc"][1] for r in sel],
                    fmt="o", ms=3, color=color, capsize=2, label=f"MC, T̂0 = {t0:g}")
        ax.plot(ts, [r["sur"][0] for r in sel], "-", color=color, label="surrogate")
    ax.set(xlabel="t", ylabel=f"runaway rate P[p_t > {RUNAWAY_P_STAR}]", yscale="log",
           title="time evolution at the default E0")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "rate_vs_time.png", dpi=110)
    plt.close(fig)


def _cell(r: dict) -> str:
    return (f"{r['mc'][0]:.4g} ± {r['mc'][1]:.1g} | {r['sur'][0]:.4g} ± {r['sur'][1]:.1g} | "
            f"{r['error']:.3g} ({r['goal']}) | {'PASS' if r['ok'] else '**MISS**'} | "
            f"{r['bias_se']:+.1f}")


def write_page(out: Path, rows: list[dict], s: dict) -> None:
    folder = out / "conditioned_runaway2d"
    folder.mkdir(parents=True, exist_ok=True)
    _figures(folder, rows)
    grid = [r for r in rows if r["t"] == T_END]
    evolution = [r for r in rows if r["factor"] == 1.0]
    misses = [r for r in rows if not r["ok"]]
    surrogate_fixed = s["data_cpu_s"] + s["train_cpu_s"]
    # per question at the base sizes (--mc particles, --samples samples): the few questions
    # simulated or sampled larger for a powered verdict are counted at their cost per particle
    per_mc = s["mc_cpu_s"] / s["mc_particles_total"] * s["mc_particles"]
    per_sur = s["sample_cpu_s"] / s["sur_samples_total"] * s["sur_samples"]
    larger = sorted({(r["factor"], r["t0"], r["mc_particles"]) for r in rows
                     if r["mc_particles"] > s["mc_particles"]})
    break_even = surrogate_fixed / (per_mc - per_sur) if per_mc > per_sur else math.inf
    header = ("| E0 | T̂0 | t | MC rate ± SE | surrogate rate ± SE | error (goal) | within goal "
              "| bias (combined SEs) |\n|---|---|---|---|---|---|---|---|")
    lines = [
        "# One surrogate over time and the electric field: runaway electrons (issue 14)", "",
        f"Made by `python benchmarks/study_conditioned_runaway.py {shlex.join(sys.argv[1:])}` "
        f"(the 2-core CPU machine; torch on {s['threads']} thread(s)).", "",
        f"ONE conditioned {s.get('architecture', 'prnf').upper()} of p(X_t | x0; E0), condition "
        "(t, E0), box t ∈ "
        f"[{min(TRAIN_TIMES):g}, {max(TRAIN_TIMES):g}], E0 ∈ "
        f"[{s['e0_box'][0] * E0_DEFAULT:.3g}, {s['e0_box'][1] * E0_DEFAULT:.3g}] "
        f"(×{s['e0_box'][0]:g} to ×{s['e0_box'][1]:g} the default {E0_DEFAULT:.3g}). "
        f"Training data: {s['particles']} particles, "
        "x0 uniform on p ∈ [0.5, 5], ξ ∈ [-1, 1], E0 per particle from a scrambled Sobol design "
        + ("uniform in log E0 and conditioned on log E0 (param_scale), "
           if s.get("e0_scale") == "log" else "uniform in E0, ") +
        f"snapshots at t = {TRAIN_TIMES[0]:g}, {TRAIN_TIMES[1]:g}, …, {TRAIN_TIMES[-1]:g} "
        f"({s['rows']} (x0, t, E0, X_t) rows), float32, dt = 0.005. Model: width {s['width']}, "
        f"{s['layers']} layers, λ = {s['lam']:g} (PRNF), {s['epochs']} epochs, batch "
        f"{s['batch']}, lr {s['lr']:g}"
        + (f", EMA of the weights {s['ema']:g}" if s.get("ema") else "")
        + (f", model options {s['model']}" if s.get("model") else "")
        + (f", training options {s['train']}" if s.get("train") else "")
        + f", seed {s.get('seed', 0)}; time scaling of the increment and the atom at p_min "
        "(the defaults: prnf_core/models/time_scaling.py, atoms.py).", "",
        f"References: fresh MC, {s['mc_particles']} particles per (E0, T̂0) (Maxwellian initial "
        f"laws); {s['sur_samples']} surrogate samples per question, more where a rate needs "
        "them: both sides get at least the samples for which a rate's binomial SE is a quarter "
        "of its tolerance (at most "
        f"{s['mc_max']}), so that a surrogate equal to the law misses a goal with probability "
        "≈ 0.5 % and a verdict is not the test's own noise"
        + ("" if not larger else " (MC enlarged: " + ", ".join(
            f"E0 ×{f:g}, T̂0 = {t0:g}: {n}" for f, t0, n in larger) + ")")
        + ". Rate: fraction with "
        f"p > {RUNAWAY_P_STAR}; binomial SEs. Goal: within {REL_GOAL:.0%} of MC for "
        f"T̂0 ≥ {REL_FROM_T0:g}, within {ABS_GOAL:g} absolute below.", "",
        f"- rate vs (E0, T̂0) at t = 20: **{'MET' if s['grid_ok'] else 'MISSED'}**",
        f"- time evolution at the default E0: **{'MET' if s['time_ok'] else 'MISSED'}**",
        "- " + ("every point within its goal" if not misses else
                f"{len(misses)} of {len(rows)} points outside their goal: " + "; ".join(
                    f"E0 ×{r['factor']:g}, T̂0 = {r['t0']:g}, t = {r['t']:g} "
                    f"({r['error']:.3g}, {r['goal']})" for r in misses)), "",
        "![rate vs (E0, T̂0)](conditioned_runaway2d/rate_vs_E0_T0.png)",
        "![rate vs time](conditioned_runaway2d/rate_vs_time.png)", "",
        "## Rate vs (E0, T̂0) at t = 20", "", header]
    lines += [f"| ×{r['factor']:g} | {r['t0']:g} | {r['t']:g} | {_cell(r)} |" for r in grid]
    lines += ["", "## Time evolution at the default E0 (odd t: not a training snapshot)", "",
              header]
    lines += [f"| ×1 | {r['t0']:g} | {r['t']:g} | {_cell(r)} |" for r in evolution]
    lines += [
        "", "## Cost: the surrogate against the MC it replaces", "",
        "CPU seconds on this machine. One MC run of one (E0, T̂0) to t = 20 answers every time "
        "of that run (snapshots), so a *question* is one (initial law, E0) pair; the surrogate "
        "answers one (law, t, E0) per sampling call.", "",
        "| item | CPU s |", "|---|---|",
        f"| training data ({s['particles']} particles × 4000 steps) | {s['data_cpu_s']:.0f} |",
        f"| training ({s['epochs']} epochs) | {s['train_cpu_s']:.0f} |",
        f"| surrogate sampling, per call ({s['sur_samples']} samples) | {per_sur:.2f} |",
        f"| MC, per question ({s['mc_particles']} particles × 4000 steps) | {per_mc:.1f} |",
        f"| MC for this page's {s['mc_runs']} questions ({s['mc_particles_total']} particles "
        "in all, the enlarged ones included) | "
        f"{s['mc_cpu_s']:.0f} |",
        f"| surrogate for this page's {s['sample_calls']} calls (data + training + sampling) | "
        f"{surrogate_fixed + s['sample_cpu_s']:.0f} |", "",
        f"**Break-even: {break_even:.0f} questions** (data + training = {surrogate_fixed:.0f} "
        f"CPU s, divided by what each question saves, {per_mc:.1f} − {per_sur:.2f} s). This "
        "page's grid alone "
        + ("pays for the surrogate" if s["mc_runs"] >= break_even else
           "does not pay for the surrogate: the MC is cheaper for these few questions") +
        "; a parameter study over many laws, fields and times does. The comparison is at equal "
        "sample counts; the surrogate's own error (tables above) is not in the MC's.",
    ]
    (out / "conditioned_runaway2d.md").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps(
        {"summary": s, "rows": rows}, indent=1, default=float))


if __name__ == "__main__":
    main()
