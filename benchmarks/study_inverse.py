"""Issue 15's inverse question, measured: which initial states lead into a region.

For runaway2d (R: p_T > p* = 1.75, "which initial momenta and pitch angles run away") and abc3d
(R: the paper's box x ∈ [0, π], z ∈ [2π, 3π]), one surrogate each is trained here, then

* the map P(X_T ∈ R | x0) on a 41 × 41 grid ((p, ξ); abc3d: the (x, z) slice at y = π), from
  1000 surrogate samples per point;
* a check against fresh MC at 25 points of the same plane (5 × 5; ``--mc`` particles started at
  each point), the surrogate's probability there from ``--check-draws`` samples; goal: within
  0.02 absolute at every point;
* the posterior of x0 given X_T ∈ R for a paper law (runaway2d: Maxwellian T̂0 = 10; abc3d: the
  truncated Gaussian of experiment 3);
* the cost of the map against the MC the same map would need (one MC run of ``draws``
  particles per grid point).

Writes ``<out>/inverse.md`` and figures under ``<out>/inverse/``.

    python benchmarks/study_inverse.py --out docs/results                    # the committed page
    python benchmarks/study_inverse.py --particles 2000 --epochs 1 --mc 200  # a smoke run
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

import numpy as np
import torch

from prnf_core import plots
from prnf_core.dataset import DatasetConfig, open_dataset
from prnf_core.errors import ConfigError
from prnf_core.initial import PointMass
from prnf_core.inverse import Region, hit_map, hit_probability, posterior
from prnf_core.models import ModelConfig, build_model
from prnf_core.problems import default_test_laws, get_problem
from prnf_core.runner import run_dataset
from prnf_core.train import TrainConfig, fit

GOAL_ABS = 0.02
DEFAULT_COMMAND = "python benchmarks/study_inverse.py --out docs/results"
CASES = {
    "runaway2d": {"region": "runaway", "axes": ("p", "xi"), "fixed": {},
                  "points": (np.linspace(1.0, 4.0, 5), np.linspace(-0.8, 0.8, 5)),
                  "law": {"kind": "maxwellian", "temperature": 10.0},
                  "model": {"hidden_width": 256, "hidden_layers": 3},
                  "particles": 100_000, "epochs": 100, "dtype": "float32"},
    "abc3d": {"region": "paper", "axes": ("x", "z"), "fixed": {"y": math.pi},
              "points": (np.linspace(0.4, 2 * math.pi - 0.4, 5),
                         np.linspace(0.4, 2 * math.pi - 0.4, 5)),
              "law": None,  # the problem's paper law
              "model": {"hidden_width": 256, "activation": "silu"},
              "particles": 40_000, "epochs": 150, "dtype": "float64"},
}


def mc_probability(problem: str, x0: np.ndarray, region: Region, n: int, seed: int,
                   folder: Path, dtype: str) -> tuple[float, float, float]:
    """P(X_T ∈ R | x0) from ``n`` fresh MC particles started at ``x0``: (value, SE, CPU s)."""
    config = DatasetConfig(problem=problem, initial=PointMass(point=[float(v) for v in x0]),
                           n_particles=n, chunk_size=n, seed=seed, dtype=dtype)
    store = folder / f"mc-{problem}-{seed}.zarr"
    run_dataset(config, store)
    data = open_dataset(store)
    hits = region.contains(data.load("xT"), get_problem(problem).coord_names)
    value = float(hits.mean())
    return value, math.sqrt(value * (1 - value) / n), data.simulation_seconds()


def study(problem: str, args: argparse.Namespace, folder: Path, out: Path | None) -> dict:
    case = CASES[problem]
    sde = get_problem(problem)
    region = Region.of(case["region"], sde)
    particles = args.particles or case["particles"]
    epochs = args.epochs or case["epochs"]
    config = DatasetConfig(problem=problem, n_particles=particles,
                           chunk_size=min(10_000, particles), seed=0, dtype=case["dtype"])
    run_dataset(config, folder / f"{problem}.zarr")
    dataset = open_dataset(folder / f"{problem}.zarr")
    overrides = json.loads(args.model) if args.model else {}
    case = {**case, "model": {**case["model"], **overrides}}
    model = build_model(ModelConfig(**case["model"]).for_problem(sde), seed=0)
    started = time.process_time()
    training = TrainConfig(**{"epochs": epochs, "batch_size": 512, "lr": 2e-3, "lam": 10.0,
                              "progress": False, "threads": args.threads,
                              **(json.loads(args.train) if args.train else {})})
    fit(model, dataset, training)
    train_s = time.process_time() - started
    model.eval()
    print(f"{problem}: trained in {train_s:.0f} CPU s", flush=True)

    started = time.process_time()
    hits = hit_map(model, sde, region, case["axes"], case["fixed"], resolution=41,
                   draws=args.draws, seed=1)
    map_s = time.process_time() - started
    law = case["law"] or next(iter(default_test_laws(problem).values()))
    try:
        post = posterior(model, sde, region, law, n=20_000, draws=10, seed=2)
    except ConfigError as exc:  # no draw reached R: reported, not hidden
        post, post_note = None, str(exc)
    else:
        post_note = None

    rows, mc_s = [], 0.0
    names = list(sde.coord_names)
    for i, a in enumerate(case["points"][0]):
        for j, b in enumerate(case["points"][1]):
            x0 = np.empty(sde.dim)
            values = {case["axes"][0]: a, case["axes"][1]: b, **case["fixed"]}
            for k, name in enumerate(names):
                x0[k] = values[name]
            mc, mc_se, seconds = mc_probability(problem, x0, region, args.mc,
                                                3_000_000 + 10 * i + j, folder, case["dtype"])
            mc_s += seconds
            sur, sur_se = hit_probability(model, x0[None], region, names, args.check_draws,
                                          seed=4_000 + 10 * i + j)
            rows.append({"a": float(a), "b": float(b), "mc": mc, "mc_se": mc_se,
                         "sur": float(sur[0]), "sur_se": float(sur_se[0]),
                         "error": abs(float(sur[0]) - mc)})
    worst = max(rows, key=lambda r: r["error"])
    per_point_mc = mc_s / len(rows) * args.draws / args.mc  # MC CPU s for `draws` particles
    result = {"problem": problem, "region": region.describe(), "axes": list(case["axes"]),
              "fixed": case["fixed"], "particles": particles, "epochs": epochs,
              "model": case["model"], "ema_decay": training.ema_decay,
              "data_cpu_s": dataset.simulation_seconds(), "train_cpu_s": train_s,
              "map_cpu_s": map_s, "map_points": int(hits.probability.size),
              "draws": args.draws, "mc_per_point_cpu_s": per_point_mc,
              "map_mc_cpu_s": per_point_mc * hits.probability.size,
              "law": law, "law_probability": post and post.probability,
              "law_probability_se": post and post.stderr, "ess": post and post.ess,
              "posterior_note": post_note, "rows": rows,
              "worst": worst, "met": worst["error"] <= GOAL_ABS}
    if out is not None:
        figures = out / "inverse"
        figures.mkdir(parents=True, exist_ok=True)
        marks = [(r["a"], r["b"]) for r in rows]
        plots.plot_heatmap(hits.probability, hits.grid[0], hits.grid[1],
                           figures / f"{problem}_map.png", xlabel=case["axes"][0],
                           ylabel=case["axes"][1], label="P(X_T in R | x0)",
                           title=f"{problem}: P(X_T in R | x0), R = {region.describe()}",
                           marks=marks)
        if post is not None:
            plots.plot_marginals_1d(post.samples, post.x0, figures / f"{problem}_posterior.png",
                                    coord_names=names,
                                    title="x0 given X_T in R (orange) vs the initial law (blue)")
        plots.plot_qoi_vs_param(range(len(rows)), [r["sur"] for r in rows],
                                [r["mc"] for r in rows], figures / f"{problem}_check.png",
                                sur_err=[r["sur_se"] for r in rows],
                                mc_err=[r["mc_se"] for r in rows], xlabel="check point",
                                ylabel="P(X_T in R | x0)",
                                title=f"{problem}: surrogate vs MC at {len(rows)} points")
    return result


def write_page(out: Path, results: list[dict], args: argparse.Namespace) -> None:
    lines = ["# The inverse question: which initial states lead into a region (issue 15)", "",
             "Made by `python benchmarks/study_inverse.py --out docs/results` (the 2-core CPU "
             "machine, torch on one or two threads; CPU seconds of the process); each section "
             "names the run it comes from (`--problems` reruns one and keeps the others).", "",
             "For each problem one surrogate is trained here (x0 uniform on the training box), "
             "then the map P(X_T ∈ R | x0) is computed from the surrogate alone "
             "(`prnf_core.inverse.hit_map`, the CLI `prnf inverse`) and checked against fresh "
             f"Monte Carlo at 25 points of the same plane: {args.mc} particles started at each "
             f"point vs {args.check_draws} surrogate samples there. Goal: every point within "
             f"{GOAL_ABS} absolute.", ""]
    for r in results:
        near = sum(1 for row in r["rows"] if 0.02 < row["mc"] < 0.98)
        lines += [f"## {r['problem']}: R = {r['region']}", "",
                  f"Run: `{r.get('command', DEFAULT_COMMAND)}`.", "",
                  f"- check against MC: worst |surrogate − MC| = **{r['worst']['error']:.3f}** "
                  f"at {r['axes'][0]} = {r['worst']['a']:.3g}, {r['axes'][1]} = "
                  f"{r['worst']['b']:.3g} (MC {r['worst']['mc']:.3f} ± {r['worst']['mc_se']:.3f})"
                  f": goal ≤ {GOAL_ABS} **{'MET' if r['met'] else 'MISSED'}**; {near} of "
                  f"{len(r['rows'])} points have an MC probability strictly between 0.02 and "
                  "0.98 (the others are easy)",
                  (f"- initial law {json.dumps(r['law'])}: P(X_T ∈ R) = "
                   f"{r['law_probability']:.4g} ± {r['law_probability_se']:.2g}, posterior "
                   f"effective sample size {r['ess']:.0f} of 20000"
                   if r["posterior_note"] is None else
                   f"- initial law {json.dumps(r['law'])}: no posterior: {r['posterior_note']}"),
                  f"- training: {r['particles']} particles ({r['data_cpu_s']:.0f} CPU s of "
                  f"simulation), model {json.dumps(r['model'])}, λ = 10 (PRNF), "
                  f"{r['epochs']} epochs, batch 512"
                  + (f", EMA of the weights {r['ema_decay']:g}" if r.get("ema_decay") else "")
                  + f" ({r['train_cpu_s']:.0f} CPU s)", "",
                  f"![map](inverse/{r['problem']}_map.png)", "",
                  *([f"![posterior](inverse/{r['problem']}_posterior.png)", ""]
                    if r["posterior_note"] is None else []),
                  f"![check](inverse/{r['problem']}_check.png)", "",
                  "### Cost of the map", "",
                  "| item | CPU s |", "|---|---|",
                  f"| surrogate map: {r['map_points']} points × {r['draws']} samples | "
                  f"{r['map_cpu_s']:.1f} |",
                  f"| MC for the same map: {r['map_points']} runs × {r['draws']} particles "
                  f"(measured per point, scaled) | {r['map_mc_cpu_s']:.0f} |",
                  f"| surrogate data + training (paid once) | "
                  f"{r['data_cpu_s'] + r['train_cpu_s']:.0f} |", "",
                  f"The map alone is {r['map_mc_cpu_s'] / max(r['map_cpu_s'], 1e-9):.0f}× "
                  "cheaper than its MC; with the training included "
                  f"{r['map_mc_cpu_s'] / (r['map_cpu_s'] + r['data_cpu_s'] + r['train_cpu_s']):.1f}"
                  "× (the MC has no model error; the check above bounds the surrogate's).", "",
                  "| " + r["axes"][0] + " | " + r["axes"][1] + " | MC ± SE | surrogate ± SE | "
                  "error |", "|---|---|---|---|---|"]
        lines += [f"| {row['a']:.3g} | {row['b']:.3g} | {row['mc']:.3f} ± {row['mc_se']:.3f} | "
                  f"{row['sur']:.3f} ± {row['sur_se']:.3f} | {row['error']:.3f} |"
                  for row in r["rows"]]
        lines.append("")
    (out / "inverse.md").write_text("\n".join(lines))
    (out / "inverse" / "summary.json").write_text(json.dumps(results, indent=1, default=float))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--particles", type=int, default=None,
                        help="training particles (default: per problem, CASES)")
    parser.add_argument("--epochs", type=int, default=None, help="default: per problem")
    parser.add_argument("--draws", type=int, default=1000, help="surrogate samples per map point")
    parser.add_argument("--check-draws", type=int, default=20_000)
    parser.add_argument("--mc", type=int, default=2000, help="MC particles per check point")
    parser.add_argument("--model", default=None,
                        help='JSON of ModelConfig fields over the case\'s, e.g. '
                             '\'{"architecture": "nsf", "hidden_width": 128}\'')
    parser.add_argument("--train", default=None,
                        help='JSON of TrainConfig fields over the study\'s, e.g. '
                             '\'{"ema_decay": 0.999}\'')
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for problem in args.problems:
            results.append(study(problem, args, Path(tmp), args.out))
            r = results[-1]
            print(json.dumps({k: v for k, v in r.items() if k != "rows"}, default=float,
                             indent=1), flush=True)
    if args.out is not None:
        command = "python benchmarks/study_inverse.py " + shlex.join(sys.argv[1:])
        for r in results:
            r["command"] = command
        write_page(args.out, kept_results(args.out, results), args)


def kept_results(out: Path, results: list[dict]) -> list[dict]:
    """``results`` with, for the problems not run this time, those of the page's earlier run
    (``<out>/inverse/summary.json``, whose figures are still there), in the order of CASES."""
    summary = out / "inverse" / "summary.json"
    earlier = json.loads(summary.read_text()) if summary.is_file() else []
    by_problem = {r["problem"]: r for r in earlier} | {r["problem"]: r for r in results}
    return [by_problem[name] for name in CASES if name in by_problem]


if __name__ == "__main__":
    main()
