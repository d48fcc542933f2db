"""Prefect tasks for validation against fresh Monte Carlo simulations.

A test set per law is a dataset store of ``2 n`` particles simulated with the validation seed:
rows ``[0, n)`` and ``[n, 2n)`` are two independent MC sets (the second gives the noise floor).
Stores are reused by dataset id, so every model validated with the same settings is compared on
the same data, which is what the promotion gate needs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.logging import get_run_logger

from prnf_core.cluster import ExecutionConfig, dask_client
from prnf_core.dataset import DatasetConfig, open_dataset
from prnf_core.initial import InitialSpec, Maxwellian, parse_initial
from prnf_core.metrics import exact_kl
from prnf_core.paths import default_dataset_path
from prnf_core.problems import get_problem
from prnf_core.runner import run_dataset
from prnf_core.validation import (
    ValidationReport,
    cost_summary,
    metric_key,
    torch_threads,
    validate_samples,
)
from tasks.progress import Reporter

TEST_SET_LOCK_TIMEOUT_S = 3600.0


@task(name="simulate-test-sets")
def simulate_test_sets(configs: dict[str, DatasetConfig],
                       execution: ExecutionConfig) -> dict[str, str]:
    """Simulate (or reuse) one MC test store per law on one Dask cluster; law -> store path."""
    logger = get_run_logger()
    paths = {}
    with dask_client(execution) as client:
        for law, config in configs.items():
            config = config.on_device(execution.device)  # the generator is part of the id
            path = str(default_dataset_path(config.problem, config.dataset_id()))
            # Test sets are shared on purpose (every model is scored on the same data): when a
            # concurrent validation is writing this one, wait for it and reuse its chunks.
            summary = run_dataset(config, path, client=client, device=execution.device,
                                  torch_threads=execution.threads_per_worker,
                                  progress=Reporter(f"test set {law} (chunks)"),
                                  lock_timeout=TEST_SET_LOCK_TIMEOUT_S)
            logger.info("test set %s: %s (%d chunks simulated, %d reused)", law, path,
                        summary.chunks_simulated, summary.chunks_already_done)
            paths[law] = path
    return paths


def _law_param(spec: InitialSpec) -> float | None:
    return spec.temperature if isinstance(spec, Maxwellian) else None


def score_of(metrics: dict[str, float], laws: list[str], exact: bool) -> float:
    """The promotion score (lower is better): mean exact KL, else the mean sliced-Wasserstein
    ratio to the MC noise floor (less noisy than the energy ratio at equal sample size)."""
    key = "kl" if exact else "sw_ratio"
    values = [metrics[f"val/{law}/{key}"] for law in laws]
    return float(np.mean(values))


def evaluate_model(model: Any, problem: str, problem_params: dict[str, Any],
                   test_sets: dict[str, str], laws: dict[str, InitialSpec], n_samples: int,
                   seed: int, detailed: bool = True) -> tuple[ValidationReport, dict, float]:
    """Validate ``model`` on the test sets. Returns the report, surrogate samples per law and
    the surrogate's sampling rate (samples/s)."""
    sde = get_problem(problem, **problem_params)
    report = ValidationReport(problem=problem)
    samples, sample_seconds = {}, 0.0
    with torch_threads(1):  # small batched ops: one thread is fastest on a shared CPU
        for i, (law, path) in enumerate(test_sets.items()):
            sample_seconds += _evaluate_law(model, problem, sde, law, path, laws[law],
                                            n_samples, seed + i, detailed, report, samples)
    rate = len(test_sets) * n_samples / max(sample_seconds, 1e-9)
    return report, samples, rate


def _evaluate_law(model: Any, problem: str, sde: Any, law: str, path: str, spec: InitialSpec,
                  n_samples: int, seed: int, detailed: bool, report: ValidationReport,
                  samples: dict) -> float:
    """Add one law's results to ``report``; return the surrogate's sampling seconds."""
    import torch

    mc = open_dataset(path).load("xT")
    mc_a, mc_b = mc[:n_samples], mc[n_samples:2 * n_samples]
    started = time.perf_counter()
    with torch.no_grad():
        _, sur = model.sample_initial(spec, n_samples, seed=seed)
    seconds = time.perf_counter() - started
    samples[law] = (sur, mc_a)
    report.add(validate_samples(problem, sur, mc_a, mc_b, law=law, seed=seed,
                                param=_law_param(spec), c2st=detailed))
    if sde.has_exact_transition:
        est = exact_kl(sde, model, spec, n_y=2000, n_x0=2000, seed=seed)
        report.meta.setdefault("kl", {})[law] = {"kl": est.kl, "stderr": est.stderr}
    return seconds


def flat_metrics(report: ValidationReport) -> dict[str, float]:
    metrics = report.as_flat_metrics()
    for law, est in report.meta.get("kl", {}).items():
        metrics[f"val/{metric_key(law)}/kl"] = est["kl"]
        metrics[f"val/{metric_key(law)}/kl_stderr"] = est["stderr"]
    return metrics


@task(name="validate-surrogate")
def validate_surrogate(model_ref: str, problem: str, problem_params: dict[str, Any],
                       test_sets: dict[str, str], laws: dict[str, Any], n_samples: int,
                       seed: int, max_kl: float, max_sw_ratio: float,
                       train_seconds: float, report_dir: str,
                       champion_ref: str | None = None,
                       history: list[dict[str, float]] | None = None) -> dict[str, Any]:
    """Validate a surrogate (and the current champion, on the same data); write the report and
    plots. Returns metrics, score, pass/fail, the champion's score and the written files."""
    from prnf_core import plots
    from tasks.pyfunc import load_surrogate

    logger = get_run_logger()
    laws = {k: parse_initial(v) for k, v in laws.items()}
    sde = get_problem(problem, **problem_params)
    exact = sde.has_exact_transition
    model = load_surrogate(model_ref).model
    report, samples, sur_rate = evaluate_model(model, problem, problem_params, test_sets, laws,
                                               n_samples, seed)
    mc_seconds = sum(open_dataset(p).simulation_seconds() for p in test_sets.values())
    mc_particles = sum(open_dataset(p).n_particles for p in test_sets.values())
    report.cost = cost_summary(train_seconds, sur_rate, mc_particles / max(mc_seconds, 1e-9),
                               n_samples)
    metrics = flat_metrics(report)
    law_keys = [metric_key(r.law) for r in report.results]
    score = score_of(metrics, law_keys, exact)
    if exact:
        passed = all(metrics[f"val/{k}/kl"] <= max_kl for k in law_keys)
        rule = f"exact KL <= {max_kl} for every law"
    else:
        passed = all(metrics[f"val/{k}/sw_ratio"] <= max_sw_ratio for k in law_keys)
        rule = f"sliced-Wasserstein ratio to the MC floor <= {max_sw_ratio} for every law"

    champion_score = None
    if champion_ref is not None:
        try:
            champion = load_surrogate(champion_ref).model
            ch_report, _, _ = evaluate_model(champion, problem, problem_params, test_sets,
                                             laws, n_samples, seed, detailed=False)
            champion_score = score_of(flat_metrics(ch_report), law_keys, exact)
        except Exception as exc:  # an unloadable champion must not block a new model
            logger.warning("could not score champion %s: %s", champion_ref, exc)

    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    coord_names = list(sde.coord_names)
    for law, (sur, mc) in samples.items():
        safe = metric_key(law)
        files.append(plots.plot_marginals_1d(sur, mc, out / f"marginals_{safe}.png",
                                             coord_names=coord_names, title=law))
        if sde.dim > 1:
            files.append(plots.plot_marginals_2d(sur, mc, out / f"contours_{safe}.png",
                                                 coord_names=coord_names, title=law))
    if history:
        files.append(plots.plot_training_curves(history, out / "training_curves.png"))
    qoi_rows = [r for r in report.results if r.qoi is not None and r.param is not None]
    if len(qoi_rows) > 1:
        files.append(plots.plot_qoi_vs_param(
            [r.param for r in qoi_rows], [r.qoi.sur for r in qoi_rows],
            [r.qoi.mc for r in qoi_rows], out / "qoi_vs_param.png",
            sur_err=[r.qoi.sur_stderr for r in qoi_rows],
            mc_err=[r.qoi.mc_stderr for r in qoi_rows],
            xlabel="initial temperature", ylabel=qoi_rows[0].qoi.name))
    markdown = report.to_markdown()
    if exact:
        markdown += "\n## Exact KL(p_T || q_T)\n\n| law | KL | SE |\n|---|---|---|\n"
        for law, est in report.meta["kl"].items():
            markdown += f"| {metric_key(law)} | {est['kl']:.4g} | {est['stderr']:.2g} |\n"
    markdown += (f"\n**Validation {'passed' if passed else 'failed'}** ({rule}); score "
                 f"{score:.4g} ({'mean KL' if exact else 'mean SW ratio'}, lower is better)")
    if champion_ref is not None:
        markdown += f"; current champion on the same test sets: {champion_score}"
    markdown += "\n"
    (out / "report.md").write_text(markdown)
    (out / "report.json").write_text(json.dumps(report.to_dict(), default=str))
    files += [out / "report.md", out / "report.json"]
    logger.info("validation %s: score %.4g (champion %s)", "passed" if passed else "failed",
                score, champion_score)
    return {"metrics": metrics, "score": score, "passed": passed, "rule": rule,
            "champion_score": champion_score, "files": [str(f) for f in files],
            "report_markdown": markdown, "score_name": "mean_kl" if exact else "mean_sw_ratio"}

