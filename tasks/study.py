"""Prefect tasks of the paper's experiments: exact-KL studies, QoI parameter studies, MC
references and their figures. They take paths and law specs and return small dicts of numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import task
from prefect.logging import get_run_logger

from prnf_core import plots
from prnf_core.dataset import open_dataset
from prnf_core.initial import parse_initial
from prnf_core.models import load_model
from prnf_core.problems import get_problem, problem_qoi
from prnf_core.sde import QoIFunction
from prnf_core.studies import surrogate_qoi
from prnf_core.validation import exact_kl, exact_sample_check, sample_exact, torch_threads


def _qoi(problem: str) -> QoIFunction:
    """The QoI the problem declares (``SDE.primary_qoi``); a problem without one has no study."""
    qoi = problem_qoi(problem)
    if qoi is None:
        raise ValueError(f"problem {problem!r} declares no quantity of interest (SDE.qois)")
    return qoi


@task(name="exact-study")
def exact_study(model_dir: str, problem: str, problem_params: dict[str, Any],
                laws: dict[str, Any], t_end: float | None, n_y: int, n_x0: int,
                check_samples: int, seed: int) -> dict[str, Any]:
    """Exact KL of the density of f, a sample check of g, and the reversibility error.

    Returns ``{"laws": {law: {kl, kl_stderr, sw_ratio, ks_statistic, ks_pvalue}},
    "reversibility": mean ||g(f(y)) - y||² (normalized units) on fresh exact pairs}``.
    """
    sde = get_problem(problem, **problem_params)
    t = sde.t_end if t_end is None else t_end
    model = load_model(model_dir)
    model.eval()
    out: dict[str, Any] = {"laws": {}}
    with torch_threads(1):
        for i, (law, spec) in enumerate(laws.items()):
            est = exact_kl(sde, model, spec, t=t, n_y=n_y, n_x0=n_x0, seed=seed + i)
            check = exact_sample_check(sde, model, spec, n=check_samples, seed=seed + 100 + i,
                                       t=t)
            out["laws"][law] = {"kl": est.kl, "kl_stderr": est.stderr,
                                "sw_ratio": check.sw_ratio, "ks_statistic": check.ks_statistic,
                                "ks_pvalue": check.ks_pvalue}
        rng = np.random.default_rng(seed)
        low, high = (np.asarray(v, dtype=float) for v in sde.domain)
        x0 = rng.uniform(low, high, size=(check_samples, sde.dim))
        y = sample_exact(sde, x0, t, rng)
        with torch.no_grad():
            out["reversibility"] = float(model.reversibility_error(y, x0).mean())
    get_run_logger().info("exact study of %s: %s", model_dir, out)
    return out


@task(name="surrogate-qoi-study")
def surrogate_qoi_study(model_dir: str, problem: str, laws: dict[str, Any], n_samples: int,
                        seed: int) -> dict[str, dict[str, float]]:
    """The problem's declared QoI (``SDE.qois``) for every law from ``n_samples`` samples each."""
    model = load_model(model_dir)
    model.eval()
    with torch_threads(1):
        result = surrogate_qoi(model, {k: parse_initial(v) for k, v in laws.items()},
                               _qoi(problem), n_samples, seed)
    return {k: {"value": r.value, "stderr": r.stderr, "n": r.n, "seconds": r.seconds}
            for k, r in result.items()}


@task(name="mc-qoi")
def mc_qoi(problem: str, stores: dict[str, str]) -> dict[str, dict[str, float]]:
    """The problem's QoI of every MC store, with its binomial SE and the simulation
    core-seconds spent on it (summed over chunks)."""
    out = {}
    for law, path in stores.items():
        dataset = open_dataset(path)
        q = _qoi(problem)(dataset.load("xT"))
        out[law] = {"value": q["value"], "stderr": q["stderr"], "n": dataset.n_particles,
                    "seconds": dataset.simulation_seconds()}
    return out


@task(name="plot-marginals")
def plot_law_marginals(model_dir: str, problem: str, stores: dict[str, str],
                       laws: dict[str, Any], out_dir: str, seed: int,
                       tail_min: float | None = None) -> dict[str, list[str]]:
    """2-D (or 1-D) marginals of surrogate vs MC for each law; law -> PNG paths.

    With ``tail_min``, a second figure per law shows only the samples whose first coordinate
    exceeds it (e.g. the runaway electrons, invisible next to the bulk), each set normalized on
    its own: it compares shapes; the masses are the QoI table's business.
    """
    sde = get_problem(problem)
    model = load_model(model_dir)
    model.eval()
    files = {}
    with torch_threads(1):
        for i, (law, path) in enumerate(stores.items()):
            mc = open_dataset(path).load("xT")
            with torch.no_grad():
                _, sur = model.sample_initial(parse_initial(laws[law]), len(mc), seed=seed + i)
            plot = plots.plot_marginals_2d if sde.dim > 1 else plots.plot_marginals_1d
            names = list(sde.coord_names)
            files[law] = [str(plot(sur, mc, Path(out_dir) / f"marginals_{law}.png",
                                   coord_names=names, title=law))]
            if tail_min is not None:
                s_tail, m_tail = sur[sur[:, 0] > tail_min], mc[mc[:, 0] > tail_min]
                if len(s_tail) > 1 and len(m_tail) > 1:
                    files[law].append(str(plot(
                        s_tail, m_tail, Path(out_dir) / f"marginals_{law}_tail.png",
                        coord_names=names, title=f"{law}: {names[0]} > {tail_min:g}")))
    return files
