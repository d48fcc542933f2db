"""What the condition costs: sampling and log-density throughput of a surrogate conditioned on
(t, θ) against an unconditioned one of the same width, side by side in one process.

    python benchmarks/bench_conditioned.py            # [--n 100000] [--rounds 5] [--width 64]

Both are PRNFs of dimension 1 (the ``ou1d_rate`` setting) and, for the NSF baseline, the same
pair; the conditioned ones take ``t`` and ``mu`` (two more context features, built from the
box by :meth:`~prnf_core.models.conditioning.Conditioning.features` and checked against it on
every call). One torch thread, best of ``rounds``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from prnf_core.models import Conditioning, ModelConfig, build_model

BOX = Conditioning(time=(0.04, 1.0), params={"mu": (0.5, 2.0)})


def best_of(rounds: int, call) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-2, 2, (args.n, 1))
    y = rng.normal(size=(args.n, 1))
    print(f"{'architecture':12s} {'call':9s} {'plain /s':>12s} {'conditioned /s':>15s} "
          f"{'ratio':>6s}")
    for arch in ("prnf", "nsf"):
        models = {}
        for label, box in (("plain", None), ("conditioned", BOX)):
            model = build_model(ModelConfig(dim=1, architecture=arch, hidden_width=args.width,
                                            conditioning=box, x0_period=None), seed=0)
            cond = None if box is None else box.features(64, t=0.5, params={"mu": 1.0})
            model.fit_normalization(x0[:64], y[:64], cond)
            model.eval()
            models[label] = model
        condition = {"t": 0.5, "params": {"mu": 1.2}}
        with torch.no_grad():
            for call in ("sample", "log_prob"):
                rates = []
                for label, model in models.items():
                    kwargs = condition if label == "conditioned" else {}
                    if call == "sample":
                        def run(model=model, kwargs=kwargs):
                            model.sample(x0, generator=torch.Generator().manual_seed(0),
                                         **kwargs)
                    else:
                        def run(model=model, kwargs=kwargs):
                            model.log_prob(y, x0, **kwargs)
                    run()  # warm-up
                    rates.append(args.n / best_of(args.rounds, run))
                print(f"{arch:12s} {call:9s} {rates[0]:12.0f} {rates[1]:15.0f} "
                      f"{rates[1] / rates[0]:6.2f}")


if __name__ == "__main__":
    main()
