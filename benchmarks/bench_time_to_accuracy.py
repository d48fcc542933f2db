"""Time to accuracy: training wall time until the exact KL(p_T || q_T) <= 0.01 on the 2-D OU.

Run ``python benchmarks/bench_time_to_accuracy.py [--quick] [--device cpu|cuda] [--threads 1]
[--methods prnf nsf sbi] [--json out.json]``.

Same data for every method: 20,000 pairs of ``get_problem("ou", dim=2)``, x0 uniform on its
training box [-2, 2]^2 (seed 0), one Euler–Maruyama trajectory each with
``prnf_core.simulate.simulate`` (seed 1, float64, dt = 0.01, T = 1). Accuracy: the exact
``prnf_core.validation.exact_kl(sde, model, N(mean [0.3, 0.3], std [0.4, 0.4]), n_y=2000,
n_x0=2000)`` (the Euler bias of the data, dt = 0.01, is ~1e-5 in KL: negligible).

Methods, trained with the same number of torch threads (``--threads``, default 1):

* ``prnf``: ``prnf_core.train.fit`` of the PRNF (width ``--prnf-width`` = 64, 2 hidden layers,
  tanh, λ = 100), batch 256, constant lr 3e-3 (the fastest of widths 64/128, batches 256/512,
  lr 1e-3/3e-3 here), 10% validation pairs, gradient clipping 10 (fit's default); ``--lam``
  changes λ (the validation reversibility error is printed at each checkpoint);
* ``nsf``: the zuko NSF baseline (``architecture="nsf"``, default config) in the same fit loop,
  batch 512, constant lr 1e-3 (its fastest of batches 256/512, lr 1e-3/3e-3 here);
* ``sbi``: ``sbi.inference.NLE`` (MAF density estimator, all sbi defaults: batch 200, lr 5e-4,
  10% validation, early stopping after 20 epochs without improvement) trained on
  (theta = x0, x = X_T): its likelihood estimate ``log q(x | theta)`` is a conditional density of
  X_T given x0, wrapped in a :class:`~prnf_core.models.ConditionalSampler` so the same
  ``exact_kl`` applies. sbi trains to its own convergence; its total time and final KL are
  reported as well.

The KL is evaluated at epoch ends: at each of the first 20, then whenever the training time has
grown by ``--spacing`` (default 20%) since the last evaluation, so the time to accuracy is
known to within one epoch (later: that spacing plus one epoch); the previous checkpoint is
printed as the lower bracket. Training time is the wall clock; the process CPU time is printed
next to it (with one training thread it is insensitive to other processes on the machine).
Evaluation time (run with ``--eval-threads``) is excluded from both clocks (for sbi through a
per-epoch wrapper of its ``_summarize_epoch``: sbi has no public per-epoch callback). PRNF and
NSF stop at the first checkpoint with KL <= target; every method stops at ``--cap`` seconds of
training.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prnf_core.models import ConditionalSampler, ModelConfig, build_model
from prnf_core.problems import get_problem
from prnf_core.sde import SDE
from prnf_core.simulate import simulate
from prnf_core.train import TrainConfig, fit
from prnf_core.validation import exact_kl

TARGET_KL = 0.01
INITIAL = {"kind": "gaussian", "mean": [0.3, 0.3], "std": [0.4, 0.4]}


class StopTraining(Exception):
    """Raised from a per-epoch hook to end training (target reached or time cap)."""


@dataclass
class KLClock:
    """Training clock that excludes the time spent evaluating the KL at checkpoints."""

    evaluate: Callable[[], tuple[float, float]]  # () -> (kl, stderr)
    cap: float
    spacing: float
    stop_at_target: bool = True
    eval_threads: int = 1
    every_first: int = 20  # evaluate at every epoch end until this many checkpoints
    started: float = 0.0
    excluded: float = 0.0
    cpu_started: float = 0.0
    cpu_excluded: float = 0.0
    last_eval: float = -math.inf
    checkpoints: list[dict[str, float]] = field(default_factory=list)
    reached: dict[str, float] | None = None

    def start(self) -> None:
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def train_seconds(self) -> float:
        """Wall-clock training time so far, evaluations excluded."""
        return time.perf_counter() - self.started - self.excluded

    def train_cpu_seconds(self) -> float:
        """Process CPU time of training so far, evaluations excluded (robust to other load)."""
        return time.process_time() - self.cpu_started - self.cpu_excluded

    def epoch_end(self, epoch: int, extra: dict[str, float] | None = None) -> None:
        """Evaluate the KL if a checkpoint is due; stop at the target or the cap.

        ``extra`` (e.g. the validation reversibility error) is stored with the checkpoint.
        """
        t, cpu = self.train_seconds(), self.train_cpu_seconds()
        due = self.reached is None and (
            len(self.checkpoints) < self.every_first
            or t - self.last_eval >= self.spacing * max(self.last_eval, 0))
        if due:
            t0, c0 = time.perf_counter(), time.process_time()
            threads = torch.get_num_threads()
            torch.set_num_threads(self.eval_threads)
            try:
                kl, se = self.evaluate()
            finally:
                torch.set_num_threads(threads)
            self.checkpoints.append({"epoch": epoch, "train_seconds": t, "train_cpu_seconds": cpu,
                                     "kl": kl, "stderr": se, **(extra or {})})
            self.last_eval = t
            self.excluded += time.perf_counter() - t0
            self.cpu_excluded += time.process_time() - c0
            if kl <= TARGET_KL and self.reached is None:
                self.reached = self.checkpoints[-1]
                if self.stop_at_target:
                    raise StopTraining("target reached")
        if t >= self.cap:
            raise StopTraining("time cap")


def ou_data(n: int, seed: int = 0) -> tuple[SDE, np.ndarray, np.ndarray]:
    """The 2-D OU problem and ``n`` (x0, X_T) pairs, x0 uniform on its training box."""
    sde = get_problem("ou", dim=2)
    low, high = (np.asarray(v) for v in sde.domain)
    x0 = np.random.default_rng(seed).uniform(low, high, size=(n, sde.dim))
    xt = simulate(sde, x0, seed=seed + 1, dtype="float64", device="cpu").xT
    return sde, x0, xt


def warm_up(x0: np.ndarray, xt: np.ndarray, device: torch.device, with_sbi: bool) -> None:
    """Pay one-time process costs before any clock runs.

    The first ``torch.optim.Adam`` of a process imports ``torch._dynamo`` (about 3.5 s here),
    which would otherwise be charged to whichever method trains first.
    """
    for arch in ("prnf", "nsf"):
        model = build_model(ModelConfig(dim=2, architecture=arch, hidden_width=16)).to(device)
        fit(model, (x0[:256], xt[:256]), TrainConfig(epochs=1, batch_size=128, progress=False))
    if with_sbi:
        import sbi.inference  # noqa: F401 - import cost only


def kl_of(sde: SDE, model: ConditionalSampler, n_eval: int) -> tuple[float, float]:
    est = exact_kl(sde, model, INITIAL, n_y=n_eval, n_x0=n_eval)
    return est.kl, est.stderr


# -- prnf and nsf through prnf_core.train.fit ------------------------------------------------------
def run_fit(method: str, sde: SDE, x0: np.ndarray, xt: np.ndarray, args: argparse.Namespace,
            device: torch.device) -> dict[str, Any]:
    """Train ``prnf`` or ``nsf`` with ``fit`` until the KL target or the cap."""
    batch, lr = args.batch, args.lr
    if method == "prnf":
        mconf = ModelConfig(dim=2, hidden_width=args.prnf_width, hidden_layers=2,
                            activation="tanh")
    else:
        mconf = ModelConfig(dim=2, architecture="nsf")
        batch, lr = args.nsf_batch, args.nsf_lr
    model = build_model(mconf, seed=0).to(device)
    tconf = TrainConfig(epochs=1_000_000, batch_size=batch, lr=lr, lam=args.lam,
                        lr_schedule="constant", val_fraction=0.1, seed=0, progress=False)
    clock = KLClock(lambda: kl_of(sde, model, args.n_eval), args.cap, args.spacing,
                    eval_threads=args.eval_threads)

    def callback(kind: str, index: int, metrics: dict[str, float]) -> None:
        if kind == "epoch":
            was_training = model.training
            clock.epoch_end(index, {"val_nll": metrics["val_nll"], "val_rev": metrics["val_rev"]})
            model.train(was_training)

    clock.start()
    stop = "converged"
    try:
        fit(model, (x0, xt), tconf, callbacks=[callback])
    except StopTraining as exc:
        stop = str(exc)
    total = clock.train_seconds()
    return {"method": method, "model": mconf.model_dump(), "batch": batch, "lr": lr,
            "lam": args.lam,
            "parameters": sum(p.numel() for p in model.parameters()),
            "stop": stop, "train_seconds_total": total, "checkpoints": clock.checkpoints,
            "reached": clock.reached}


# -- sbi NLE --------------------------------------------------------------------------------------
class SbiLikelihood(ConditionalSampler):
    """An sbi likelihood estimator ``q(x | theta)`` as a surrogate of p(X_T | X_0 = theta).

    sbi z-scores inside its estimator, so the normalization here is the identity.
    """

    def __init__(self, estimator: torch.nn.Module, dim: int) -> None:
        super().__init__(ModelConfig(dim=dim))
        self.estimator = estimator
        self.fitted.fill_(True)

    def _log_prob_normalized(self, yn: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self.estimator.log_prob(yn.unsqueeze(0), condition=ctx).squeeze(0)


class NullTracker:
    """An sbi tracker that records nothing (no TensorBoard files)."""

    log_dir = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        pass

    def flush(self) -> None:
        pass


def run_sbi(sde: SDE, x0: np.ndarray, xt: np.ndarray, args: argparse.Namespace,
            device: torch.device) -> dict[str, Any]:
    """Train sbi's NLE (MAF, defaults) to its own convergence, with KL checkpoints."""
    import sbi
    from sbi.inference import NLE
    from sbi.utils import BoxUniform

    torch.manual_seed(0)
    low, high = (torch.tensor(v, dtype=torch.float32) for v in sde.domain)
    inference = NLE(prior=BoxUniform(low, high, device=str(device)), density_estimator="maf",
                    device=str(device), show_progress_bars=False, tracker=NullTracker())
    theta = torch.from_numpy(x0).float()
    x = torch.from_numpy(xt).float()
    inference.append_simulations(theta, x)

    def evaluate() -> tuple[float, float]:
        return kl_of(sde, SbiLikelihood(inference._neural_net, sde.dim).to(device),
                     args.n_eval)

    clock = KLClock(evaluate, args.cap, args.spacing, stop_at_target=False,
                    eval_threads=args.eval_threads)
    original = inference._summarize_epoch

    def summarize_epoch(*a: Any, **kw: Any) -> None:
        original(*a, **kw)
        clock.epoch_end(inference.epoch)  # the epoch just finished (incremented after this)

    inference._summarize_epoch = summarize_epoch
    clock.start()
    stop = "converged (sbi early stopping)"
    try:
        estimator = inference.train()
    except StopTraining as exc:
        stop = str(exc)
        estimator = inference._neural_net
    total = clock.train_seconds()
    final = kl_of(sde, SbiLikelihood(estimator, sde.dim).to(device), args.n_eval)
    return {"method": "sbi", "sbi_version": sbi.__version__, "density_estimator": "maf",
            "parameters": sum(p.numel() for p in estimator.parameters()),
            "epochs": int(inference.epoch), "stop": stop, "train_seconds_total": total,
            "final_kl": final[0], "final_stderr": final[1],
            "checkpoints": clock.checkpoints, "reached": clock.reached}


# -- reporting ------------------------------------------------------------------------------------
def describe(res: dict[str, Any]) -> str:
    if res["method"] == "prnf":
        m = res["model"]
        return (f"prnf w{m['hidden_width']} x{m['hidden_layers']} {m['activation']}, batch "
                f"{res['batch']}, lr {res['lr']:g}, λ {res['lam']:g}")
    if res["method"] == "nsf":
        return f"nsf (zuko, default), batch {res['batch']}, lr {res['lr']:g}"
    return f"sbi {res['sbi_version']} NLE MAF (defaults)"


def print_result(res: dict[str, Any]) -> None:
    print(f"\n== {describe(res)}: {res['parameters']} parameters ==")
    for c in res["checkpoints"]:
        rev = f"  val_rev {c['val_rev']:.1e}" if "val_rev" in c else ""
        print(f"  epoch {c['epoch']:5d}  train {c['train_seconds']:8.2f} s wall "
              f"{c['train_cpu_seconds']:8.2f} s cpu  KL {c['kl']:.4f} ± {c['stderr']:.4f}{rev}")
    reached = res["reached"]
    if reached is None:
        print(f"  KL <= {TARGET_KL} NOT reached in {res['train_seconds_total']:.1f} s "
              f"({res['stop']})")
    else:
        before = [c for c in res["checkpoints"] if c["train_seconds"] < reached["train_seconds"]]
        low = before[-1]["train_seconds"] if before else 0.0
        print(f"  KL <= {TARGET_KL} reached at {reached['train_seconds']:.2f} s of training "
              f"({reached['train_cpu_seconds']:.2f} s cpu; epoch {reached['epoch']}; previous "
              f"checkpoint {low:.2f} s)")
    if res["method"] == "sbi":
        print(f"  sbi total: {res['epochs']} epochs, {res['train_seconds_total']:.1f} s "
              f"({res['stop']}), final KL {res['final_kl']:.4f} ± {res['final_stderr']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short version (60 s cap)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--eval-threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads for the (excluded) KL evaluations")
    parser.add_argument("--methods", nargs="+", default=["prnf", "nsf", "sbi"],
                        choices=["prnf", "nsf", "sbi"])
    parser.add_argument("--cap", type=float, default=None, help="seconds of training per method")
    parser.add_argument("--spacing", type=float, default=0.2,
                        help="relative growth of training time between KL checkpoints")
    parser.add_argument("--prnf-width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256, help="batch of prnf")
    parser.add_argument("--lr", type=float, default=3e-3, help="lr of prnf")
    parser.add_argument("--lam", type=float, default=100.0,
                        help="reversibility weight λ of prnf (the paper's 100)")
    parser.add_argument("--nsf-batch", type=int, default=512, help="batch of nsf")
    parser.add_argument("--nsf-lr", type=float, default=1e-3, help="lr of nsf")
    parser.add_argument("--n-pairs", type=int, default=20_000)
    parser.add_argument("--n-eval", type=int, default=None,
                        help="n_y = n_x0 of the KL (default 2000; 1000 with --quick)")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    args.cap = args.cap or (60.0 if args.quick else 300.0)
    args.n_eval = args.n_eval or (1000 if args.quick else 2000)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    sde, x0, xt = ou_data(args.n_pairs)
    warm_up(x0, xt, device, "sbi" in args.methods)
    print(f"bench_time_to_accuracy {datetime.date.today()} cpus={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.2f} torch={torch.__version__} threads={args.threads} "
          f"(KL eval {args.eval_threads}) device={device}; OU d=2, {len(x0)} pairs; "
          f"target KL <= {TARGET_KL} for {INITIAL}, n_y = n_x0 = {args.n_eval}; "
          f"cap {args.cap:g} s{' QUICK' if args.quick else ''}")
    results = []
    for method in args.methods:
        res = run_sbi(sde, x0, xt, args, device) if method == "sbi" else run_fit(
            method, sde, x0, xt, args, device)
        results.append(res)
        print_result(res)
    print(f"\n== summary: training seconds to KL <= {TARGET_KL} (threads={args.threads}, "
          f"load {os.getloadavg()[0]:.2f}); [previous checkpoint, reaching checkpoint] ==")
    brackets: dict[str, tuple[float, float]] = {}
    for res in results:
        reached = res["reached"]
        if reached is None:
            brackets[res["method"]] = (math.inf, math.inf)
            print(f"  {describe(res):45s} not reached in {res['train_seconds_total']:.0f} s")
            continue
        before = [c["train_seconds"] for c in res["checkpoints"]
                  if c["train_seconds"] < reached["train_seconds"]]
        brackets[res["method"]] = (before[-1] if before else 0.0, reached["train_seconds"])
        print(f"  {describe(res):45s} {reached['train_seconds']:7.2f} s wall "
              f"[{brackets[res['method']][0]:.2f}, {reached['train_seconds']:.2f}]  "
              f"{reached['train_cpu_seconds']:7.2f} s cpu")
    if "prnf" in brackets and len(brackets) > 1:
        rivals = [v for m, v in brackets.items() if m != "prnf"]
        first = brackets["prnf"][1] < min(v[1] for v in rivals)
        robust = brackets["prnf"][1] <= min(v[0] for v in rivals)
        print(f"  goal: prnf reaches KL <= {TARGET_KL} first -> {'PASS' if first else 'MISS'}"
              + (" (also before every rival's previous checkpoint)" if robust else ""))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": str(datetime.date.today()), "threads": args.threads,
                       "device": str(device), "args": vars(args), "results": results},
                      fh, indent=2, default=str)


if __name__ == "__main__":
    main()
