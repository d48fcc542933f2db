"""Where a conditioned runaway2d surrogate's rate error comes from: the runaway probability
P[p_t > p* | x0] of the surrogate against Monte Carlo, by initial momentum p0, and each p0 bin's
share of the rate under a Maxwellian (issue 14's weak-field point, E0 ×0.5, T̂0 = 4, t = 20).

Trains one conditioned NSF over t ∈ [2, 20] and E0 ∈ [×0.25, ×4] as
``study_conditioned_runaway.py`` does, simulates ``--mc`` particles from the training's uniform
x0 law at the asked field, draws one surrogate X_t for each of the same x0 (a paired
comparison: the x0 noise cancels), and weights both by the Maxwellian's density over the
uniform one (ξ is uniform in both), so the bins' contributions add up to the rate under the
Maxwellian.

    python benchmarks/study_runaway_by_p0.py --model '{"bins": 16}'      # ~10 CPU min
    python benchmarks/study_runaway_by_p0.py --particles 4000 --epochs 1 --mc 4000   # smoke
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from study_conditioned_runaway import E0_DEFAULT, train_surrogate

from prnf_core.dataset import DatasetConfig, open_dataset
from prnf_core.initial import Maxwellian
from prnf_core.problems import get_problem
from prnf_core.problems.runaway2d import RUNAWAY_P_STAR
from prnf_core.runner import run_dataset

EDGES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", type=int, default=400_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--model", default=None, help="JSON of further ModelConfig fields")
    parser.add_argument("--mc", type=int, default=1_000_000, help="MC particles, uniform x0")
    parser.add_argument("--factor", type=float, default=0.5, help="E0 as a factor of the default")
    parser.add_argument("--temperature", type=float, default=4.0, help="the Maxwellian's T̂0")
    parser.add_argument("--time", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    e0 = args.factor * E0_DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, _, _, train_seconds = train_surrogate(
            folder, particles=args.particles, e0_box=(0.25, 4.0), e0_scale="log",
            seed=args.seed, threads=args.threads,
            model={"architecture": "nsf", "hidden_width": 128, "hidden_layers": 3,
                   **(json.loads(args.model) if args.model else {})},
            training={"epochs": args.epochs, "batch_size": 1024, "lr": 2e-3})
        print(f"trained: {train_seconds:.0f} CPU s", flush=True)
        t_end = args.time == get_problem("runaway2d").t_end
        run_dataset(DatasetConfig(problem="runaway2d", problem_params={"E0": e0},
                                  n_particles=args.mc, chunk_size=min(20_000, args.mc),
                                  save_times=None if t_end else [args.time], dtype="float32",
                                  seed=31), folder / "mc.zarr")
        mc = open_dataset(folder / "mc.zarr")
        x0, xt = mc.load("x0"), mc.load("xT") if t_end else mc.load("snapshots")[0]
    model.eval()
    gen = torch.Generator().manual_seed(5)
    y = model.sample(x0, generator=gen, t=args.time, params={"E0": e0}).numpy()
    law = Maxwellian(temperature=args.temperature)
    # the Maxwellian's density over the uniform law's, which is constant on its support
    weight = np.exp(law.logpdf(x0))
    weight /= weight.sum()
    hit_mc, hit_sur = xt[:, 0] > RUNAWAY_P_STAR, y[:, 0] > RUNAWAY_P_STAR
    rate_mc, rate_sur = float(weight @ hit_mc), float(weight @ hit_sur)
    print(f"E0 ×{args.factor:g}, T̂0 = {args.temperature:g}, t = {args.time:g}: rate MC "
          f"{rate_mc:.5f}, surrogate {rate_sur:.5f} ({(rate_sur - rate_mc) / rate_mc:+.1%})")
    print("| p0 | particles | P MC | P surrogate | share MC | share surrogate | difference |")
    print("|---|---|---|---|---|---|---|")
    index = np.digitize(x0[:, 0], EDGES) - 1
    for b in range(len(EDGES) - 1):
        sel = index == b
        if not sel.any():
            continue
        share_mc, share_sur = weight[sel] @ hit_mc[sel], weight[sel] @ hit_sur[sel]
        print(f"| [{EDGES[b]:g}, {EDGES[b + 1]:g}) | {sel.sum()} | {hit_mc[sel].mean():.5f} | "
              f"{hit_sur[sel].mean():.5f} | {share_mc:.6f} | {share_sur:.6f} | "
              f"{share_sur - share_mc:+.6f} |")
    if rate_mc == 0:
        print("(no MC particle ran away: the shares are not informative at this size)")


if __name__ == "__main__":
    main()
