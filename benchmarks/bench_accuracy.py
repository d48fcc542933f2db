"""Accuracy per CPU-second: learning curves of surrogate variants on a paper experiment.

Run ``python benchmarks/bench_accuracy.py [--problem abc3d] [--epochs 40] [--variants ...]
[--json out.json] [--plot curves.png]``.

Every variant trains with ``prnf_core.train.fit`` (one torch thread) on the *same* training set
(``--n-train`` pairs, x0 uniform on the problem's box, seed 0, float64) and is scored at epoch
ends against the *same* MC reference, fixed by seed: two independent sets of ``--n-mc``
particles of the problem's first default test law (abc3d: the paper's truncated Gaussian;
``--laws all``: each default test law), seed 1,000,003 as in the pipeline's validation. Per
checkpoint:

* validation NLL in physical units on the held-out 20 % (fit's own ``val_nll``);
* the sliced-Wasserstein ratio to the MC noise floor of ``--n-mc`` surrogate samples, exactly
  as the validation reports it (``prnf_core.validation.validate_samples``, z-scored with the
  first MC set), so the numbers compare with ``docs/results`` (the largest over the laws);
* where the problem has a quantity of interest (runaway2d: the runaway rate), its surrogate and
  MC values and their difference in combined binomial standard errors.

The clock is the process CPU time of training (``time.process_time``), with the time spent
scoring the SW ratio excluded; the validation NLL is computed inside ``fit`` and stays
included. Variants are named ``ARCH[-periodic][-residual][-wWIDTH][-lLAYERS][:field=value,...]``
(any :class:`ModelConfig` or :class:`TrainConfig` field after the colon): ``periodic``
sets ``ModelConfig.x0_period="problem"`` (the problem's declared symmetry: the model learns
X_T - x0 and sees periodic coordinates as sin/cos features); ``residual`` sets
``ModelConfig.residual`` (PRNF maps y + r(x0, y) and z + s(x0, z)).
"""

from __future__ import annotations

import argparse
import json
import math
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
from prnf_core.problems import default_test_laws, get_problem, problem_qoi
from prnf_core.runner import run_dataset
from prnf_core.train import TrainConfig, fit
from prnf_core.validation import noise_floor_ratio

OUT = Path(__file__).resolve().parent / "out"
VARIANT = re.compile(r"^(prnf|nsf)(-periodic)?(-residual)?(?:-w(\d+))?(?:-l(\d+))?$")


def parse_variant(name: str) -> tuple[ModelConfig, dict[str, Any]]:
    """``(model config, training overrides)`` of a variant name ``BASE[:field=value,...]``.

    The fields after the colon are :class:`ModelConfig` or :class:`TrainConfig` fields
    (``prnf-periodic:hidden_width=512,activation=silu,lam=10,ema_decay=0.999``); values are
    parsed as JSON where they can be (numbers, null), else kept as strings."""
    base, _, options = name.partition(":")
    match = VARIANT.match(base)
    if match is None:
        raise SystemExit(f"--variants: {name!r} is not "
                         "ARCH[-periodic][-residual][-wWIDTH][-lLAYERS][:field=value,...]")
    arch, periodic, residual, width, layers = match.groups()
    model: dict[str, Any] = {
        "architecture": arch, "x0_period": "problem" if periodic else None,
        "residual": bool(residual), "hidden_width": int(width or (256 if arch == "prnf" else 128)),
        "hidden_layers": int(layers or 2)}
    training: dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key in ModelConfig.model_fields:
            model[key] = value
        elif key in TrainConfig.model_fields:
            training[key] = value
        else:
            raise SystemExit(f"--variants: {key!r} in {name!r} is neither a ModelConfig nor a "
                             "TrainConfig field")
    return ModelConfig(**model), training


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


References = dict[str, tuple[Any, tuple[np.ndarray, np.ndarray]]]


def reference_sets(problem: str, n_mc: int, every_law: bool = False) -> References:
    """Per default test law of ``problem`` (only the first unless ``every_law``): the law and
    two independent MC sets of ``n_mc`` particles, fixed by seed (1,000,003)."""
    laws = list(default_test_laws(problem).items())
    references: References = {}
    for name, spec in laws if every_law else laws[:1]:
        law = parse_initial(spec)
        mc_all = open_dataset(store(DatasetConfig(
            problem=problem, initial=law, n_particles=2 * n_mc, chunk_size=10_000,
            seed=1_000_003))).load("xT")
        references[name] = (law, (mc_all[:n_mc], mc_all[n_mc:]))
    return references


def scores(model: Any, references: References, qoi: Any, seed: int) -> dict[str, dict]:
    """Per law: the SW ratio of ``n_mc`` surrogate samples and, where the problem has a
    quantity of interest, its surrogate and MC values (both MC halves pooled) and the
    difference in combined standard errors."""
    out: dict[str, dict] = {}
    for name, (law, mc) in references.items():
        _, sur = model.sample_initial(law, len(mc[0]), seed=seed)
        entry: dict[str, float] = {"sw_ratio": sw_ratio(sur, mc)}
        if qoi is not None:
            s, m = qoi(sur), qoi(np.concatenate(mc))
            se = math.hypot(s["stderr"], m["stderr"])
            entry.update(qoi=s["value"], qoi_mc=m["value"],
                         qoi_z=(s["value"] - m["value"]) / se if se > 0 else 0.0)
        out[name] = entry
    return out


def run_variant(name: str, problem: str, train_path: str, references: References,
                args: argparse.Namespace) -> dict[str, Any]:
    dataset = open_dataset(train_path)
    model_config, overrides = parse_variant(name)
    config = model_config.for_problem(get_problem(problem))
    model = build_model(config, seed=0)
    training = TrainConfig(**{"epochs": args.epochs, "batch_size": args.batch_size,
                              "lr": args.lr, "progress": False, **overrides})
    curve: list[dict[str, Any]] = []
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
            laws = scores(model, references, problem_qoi(problem), seed=epoch)
        model.train(was_training)
        excluded += time.process_time() - t0
        curve.append({"epoch": epoch + 1, "cpu_s": cpu,
                      "val_nll": metrics["val_nll"], "val_rev": metrics["val_rev"],
                      "sw_ratio": max(v["sw_ratio"] for v in laws.values()), "laws": laws})
        qois = "".join(f", {law} {v['qoi']:.4f} vs {v['qoi_mc']:.4f} ({v['qoi_z']:+.1f} SE)"
                       for law, v in laws.items() if "qoi" in v)
        print(f"  {name} epoch {epoch + 1}: cpu {curve[-1]['cpu_s']:.0f} s, val_nll "
              f"{metrics['val_nll']:.4f}, SW ratio {curve[-1]['sw_ratio']:.2f}{qois}", flush=True)

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
    parser.add_argument("--laws", choices=["first", "all"], default="first",
                        help="score the problem's first default test law, or all of them "
                             "(the SW ratio of a checkpoint is then the largest over the laws)")
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
    references = reference_sets(args.problem, args.n_mc, every_law=args.laws == "all")
    print(f"{args.problem}: {args.n_train} training pairs; MC references: laws "
          f"{', '.join(references)}, 2 x {args.n_mc} each", flush=True)
    results = [run_variant(v, args.problem, train_path, references, args)
               for v in args.variants]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=1))
    report(results, args.plot)


def report(results: list[dict[str, Any]], plot_path: Path | None) -> None:
    """A markdown table of the final checkpoints (and the curves, with ``plot_path``)."""
    with_qoi = any("qoi" in v for r in results for v in r["curve"][-1].get("laws", {}).values())
    extra = " | worst QoI rel. error | worst QoI bias (SE)" if with_qoi else ""
    print(f"\n| variant | epochs | training CPU s | best val NLL | final SW ratio{extra} |\n"
          f"|---|---|---|---|---|{'---|---|' if with_qoi else ''}")
    for r in results:
        last = r["curve"][-1]
        cells = ""
        if with_qoi and "laws" not in last:  # a result file written before QoIs were scored
            cells = " | – | –"
        elif with_qoi:
            laws = last["laws"].values()
            rel = max(abs(v["qoi"] - v["qoi_mc"]) / v["qoi_mc"] for v in laws)
            bias = max((v["qoi_z"] for v in laws), key=abs)
            cells = f" | {rel:.3f} | {bias:+.1f}"
        print(f"| {r['variant']} | {last['epoch']} | {last['cpu_s']:.0f} | "
              f"{r['best_val_nll']:.4f} | {last['sw_ratio']:.2f}{cells} |")
    if plot_path:
        plot(results, plot_path)


if __name__ == "__main__":
    main()
