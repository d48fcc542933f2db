"""Is the PRNF's sampler g the limit, or its density f? Newton-polished samples on abc3d.

Run ``python benchmarks/bench_inverse.py --lam 100 [--epochs 100]``.

Trains the abc3d PRNF of ``bench_accuracy.py`` (``prnf-periodic``: width 256, tanh, the
problem's periodic symmetry; the same 40,000 training pairs, batch 512, lr 2e-3, cosine) with
reversibility weight ``--lam``, then draws 20,000 samples of the paper's truncated-Gaussian law
with the sampler g and polishes them with Newton steps on the density's map f:
:math:`y \\leftarrow y - (∇_y f)^{-1}(f(x_0, y) - z)`, the exact Jacobian from
``JacobianMLP.forward_with_jacobian``. If f is injective, the polished samples follow the law of
f's density exactly; the printed SW ratio (to the MC noise floor, as in ``bench_accuracy.py``)
then separates the error of g (polishing helps) from that of f (it does not). ``resid`` is the
mean of ``|f(x0, y) - z|²`` in normalized units. A non-injective f (small λ) makes the Newton
iteration diverge or meet a singular Jacobian: the script reports it and stops.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_accuracy import reference_sets, store, sw_ratio

from prnf_core.dataset import DatasetConfig, open_dataset
from prnf_core.models import ModelConfig, build_model
from prnf_core.problems import get_problem
from prnf_core.train import TrainConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lam", type=float, default=100.0)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--newton-steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train_path = store(DatasetConfig(problem="abc3d", n_particles=40_000, chunk_size=10_000,
                                     seed=0))
    law, mc = next(iter(reference_sets("abc3d", 20_000).values()))
    config = ModelConfig(architecture="prnf", hidden_width=256).for_problem(get_problem("abc3d"))
    model = build_model(config, seed=0)
    started = time.process_time()
    result = fit(model, open_dataset(train_path), TrainConfig(
        epochs=args.epochs, batch_size=512, lr=2e-3, lam=args.lam, progress=False))
    print(f"λ = {args.lam}: trained {time.process_time() - started:.0f} CPU s, best val NLL "
          f"{result.best_val_nll:.4f}, val reversibility {result.history[-1]['val_rev']:.3g}")
    x0 = torch.as_tensor(law.sample(20_000, np.random.default_rng(5)), dtype=model.dtype)
    _, ctx = model.normalize(x0, None, None)
    z = torch.randn(20_000, 3, generator=torch.Generator().manual_seed(7), dtype=model.dtype)
    with torch.no_grad():
        y = model.inverse_map(z, ctx)
        for step in range(args.newton_steps + 1):
            samples = (y * model.y_std + model.y_mean + x0).numpy()
            resid = float(((model.forward_map(y, ctx) - z) ** 2).sum(1).mean())
            print(f"  Newton steps {step}: SW ratio {sw_ratio(samples, mc):.3f}, "
                  f"resid {resid:.3g}", flush=True)
            out, jac = model.forward_net.forward_with_jacobian(torch.cat([ctx, y], 1))
            try:
                y = y - torch.linalg.solve(jac, (out - z).unsqueeze(-1)).squeeze(-1)
            except torch.linalg.LinAlgError as error:
                print(f"  stopped: {error}")
                break


if __name__ == "__main__":
    main()
