"""Accuracy per CPU-second: learning curves of surrogate variants on a paper experiment.

Run ``python benchmarks/bench_accuracy.py [--problem abc3d] [--epochs 40] [--variants ...]
[--json out.json] [--plot curves.png]``.

Every variant trains with ``prnf_core.train.fit`` (one torch thread) on the *same* training set
(``--n-train`` pairs, x0 uniform on the problem's box, seed 0, float64) and is scored at epoch
ends against the *same* MC reference, fixed by seed: two independent sets of ``--n-mc``
particles of the problem's first default test law (abc3d: the paper's truncated Gaussian),
seed 1,000,003 as in the pipeline's validation. Two numbers per checkpoint:

* validation NLL in physical units on the held-out 20 % (fit's own ``val_nll``);
* the sliced-Wasserstein ratio to the MC noise floor of ``--n-mc`` surrogate samples, exactly
  as the validation reports it (``prnf_core.validation.validate_samples``, z-scored with the
  first MC set), so the numbers compare with ``docs/results``.

The clock is the process CPU time of training (``time.process_time``), with the time spent
scoring the SW ratio excluded; the validation NLL is computed inside ``fit`` and stays
included. Variants are named ``ARCH[-periodic][-residual][-wWIDTH][-lLAYERS]``: ``periodic``
sets ``ModelConfig.x0_period="problem"`` (the problem's declared symmetry: the model learns
X_T - x0 and sees periodic coordinates as sin/cos features); ``residual`` sets
``ModelConfig.residual`` (PRNF maps y + r(x0, y) and z + s(x0, z)).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prnf_core.dataset import DatasetConfig, open_dataset
from prnf_core.initial import parse_initial
from prnf_core.models import ModelConfig, build_model
from prnf_core.problems import default_test_laws, get_problem
from prnf_core.runner import run_dataset
from prnf_core.train import TrainConfig, fit
from prnf_core.validation import noise_floor_ratio

OUT = Path(__file__).resolve().parent / "out"
VARIANT = re.compile(r"^(prnf|nsf)(-periodic)?(-residual)?(?:-w(\d+))?(?:-l(\d+))?$")


def parse_variant(name: str) -> ModelConfig:
    match = VARIANT.match(name)
    if match is None:
        raise SystemExit(f"--variants: {name!r} is not "
                         "ARCH[-periodic][-residual][-wWIDTH][-lLAYERS]")
    arch, periodic, residual, width, layers = match.groups()
    return ModelConfig(architecture=arch, x0_period="problem" if periodic else None,
                       residual=bool(residual),
                       hidden_width=int(width or (256 if arch == "prnf" else 128)),
                       hidden_layers=int(layers or 2))


def store(config: DatasetConfig) -> str:
    path = str(OUT / "data" / f"{config.problem}-{config.dataset_id()}.zarr")
    run_dataset(config, path, lock_timeout=600)  # a parallel bench process may hold it
    return path


def sw_ratio(sur: np.ndarray, mc: tuple[np.ndarray, np.ndarray], seed: int = 0) -> float:
    """The SW ratio exactly as ``validate_samples(..., seed=seed)`` reports it (z-scored with
    the first MC set, the same derived seed), without its O(n²) energy distance."""
    loc, scale = mc[0].mean(axis=0), mc[0].std(axis=0)
    zs, za, zb = ((x - loc) / scale for x in (sur, *mc))
    s_sw = int(np.random.SeedSequence(seed).spawn(3)[1].generate_state(1)[0])
    return noise_floor_ratio(zs, za, zb, "sliced_wasserstein", seed=s_sw).ratio


def run_variant(name: str, problem: str, train_path: str, mc: tuple[np.ndarray, np.ndarray],
                law: Any, args: argparse.Namespace) -> dict[str, Any]:
    dataset = open_dataset(train_path)
    config = parse_variant(name).for_problem(get_problem(problem))
    model = build_model(config, seed=0)
    training = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           progress=False)
    curve: list[dict[str, float]] = []
    excluded = 0.0
    started = time.process_time()

    def score(kind: str, epoch: int, metrics: dict[str, float]) -> None:
        nonlocal excluded
        if kind != "epoch" or ((epoch + 1) % args.every and epoch + 1 != args.epochs):
            return
        t0 = time.process_time()
        cpu = t0 - started - excluded  # training CPU so far, earlier scorings left out
        was_training = model.training
        model.eval()
        with torch.no_grad():
            _, sur = model.sample_initial(law, len(mc[0]), seed=epoch)
        model.train(was_training)
        sw = sw_ratio(sur, mc)
        excluded += time.process_time() - t0
        curve.append({"epoch": epoch + 1, "cpu_s": cpu,
                      "val_nll": metrics["val_nll"], "val_rev": metrics["val_rev"],
                      "sw_ratio": sw})
        print(f"  {name} epoch {epoch + 1}: cpu {curve[-1]['cpu_s']:.0f} s, val_nll "
              f"{metrics['val_nll']:.4f}, SW ratio {sw:.2f}", flush=True)

    result = fit(model, dataset, training, callbacks=[score])
    return {"variant": name, "model": config.model_dump(mode="json"),
            "training": training.model_dump(mode="json"), "best_val_nll": result.best_val_nll,
            "curve": curve}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        cpu = [c["cpu_s"] for c in r["curve"]]
        axes[0].plot(cpu, [c["val_nll"] for c in r["curve"]], marker=".", label=r["variant"])
        axes[1].plot(cpu, [c["sw_ratio"] for c in r["curve"]], marker=".", label=r["variant"])
    axes[0].set(xlabel="training CPU seconds", ylabel="validation NLL (nats, physical units)")
    axes[1].set(xlabel="training CPU seconds", ylabel="SW ratio to the MC noise floor",
                yscale="log")
    axes[1].axhline(2.0, color="grey", lw=0.8, ls="--")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", default="abc3d")
    parser.add_argument("--n-train", type=int, default=40_000)
    parser.add_argument("--n-mc", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--every", type=int, default=5, help="epochs between SW scorings")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--variants", nargs="+", default=["prnf", "prnf-periodic"])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--replot", type=Path, nargs="+", default=None,
                        help="only merge the results of earlier --json files into the table "
                             "and --plot (e.g. of runs made side by side, one per core)")
    args = parser.parse_args()
    if args.replot:
        results = [r for path in args.replot for r in json.loads(path.read_text())["results"]]
        report(results, args.plot)
        return
    torch.set_num_threads(1)
    os.environ.setdefault("PRNF_DATA_ROOT", str(OUT / "data-root"))
    train_path = store(DatasetConfig(problem=args.problem, n_particles=args.n_train,
                                     chunk_size=10_000, seed=0))
    name, spec = next(iter(default_test_laws(args.problem).items()))
    law = parse_initial(spec)
    mc_all = open_dataset(store(DatasetConfig(
        problem=args.problem, initial=law, n_particles=2 * args.n_mc, chunk_size=10_000,
        seed=1_000_003))).load("xT")
    mc = (mc_all[:args.n_mc], mc_all[args.n_mc:])
    print(f"{args.problem}: {args.n_train} training pairs; MC reference: law {name}, "
          f"2 x {args.n_mc}", flush=True)
    results = [run_variant(v, args.problem, train_path, mc, law, args) for v in args.variants]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=1))
    report(results, args.plot)


def report(results: list[dict[str, Any]], plot_path: Path | None) -> None:
    """A markdown table of the final checkpoints (and the curves, with ``plot_path``)."""
    print("\n| variant | epochs | training CPU s | best val NLL | final SW ratio |\n"
          "|---|---|---|---|---|")
    for r in results:
        last = r["curve"][-1]
        print(f"| {r['variant']} | {last['epoch']} | {last['cpu_s']:.0f} | "
              f"{r['best_val_nll']:.4f} | {last['sw_ratio']:.2f} |")
    if plot_path:
        plot(results, plot_path)


if __name__ == "__main__":
    main()
