"""Prefect tasks for validation against fresh Monte Carlo simulations.

A test set per law is a dataset store of ``2 n`` particles simulated with the validation seed:
rows ``[0, n)`` and ``[n, 2n)`` are two independent MC sets (the second gives the noise floor).
Stores are reused by dataset id, so every model validated with the same settings is compared on
the same data, which is what the promotion gate needs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from prnf_core.cluster import ExecutionConfig, dask_client
from prnf_core.dataset import DatasetConfig, open_dataset
from prnf_core.initial import InitialSpec, Maxwellian, parse_initial
from prnf_core.paths import default_dataset_path
from prnf_core.problems import get_problem
from prnf_core.runner import run_dataset
from prnf_core.validation import (
    ValidationReport,
    cost_summary,
    exact_kl,
    metric_key,
    torch_threads,
    validate_samples,
)
from prnf_core.validation.kl import KL_SAMPLES, condition_of
from prnf_core.verdict import Estimate, Fingerprint, LawScore, Verdict, judge
from tasks.progress import Reporter

TEST_SET_LOCK_TIMEOUT_S = 3600.0


@task(name="simulate-test-sets")
def simulate_test_sets(configs: dict[str, DatasetConfig],
                       execution: ExecutionConfig) -> dict[str, str]:
    """Simulate (or reuse) one MC test store per law on one Dask cluster; law -> store path.
    The stores are marked ``role="test"`` (retention deletes old ones by age)."""
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
                                  lock_timeout=TEST_SET_LOCK_TIMEOUT_S, role="test")
            logger.info("test set %s: %s (%d chunks simulated, %d reused)", law, path,
                        summary.chunks_simulated, summary.chunks_already_done)
            paths[law] = path
    return paths


def _law_param(spec: InitialSpec) -> float | None:
    return spec.temperature if isinstance(spec, Maxwellian) else None


def verdict_of(metrics: dict[str, float], laws: list[str], max_sw_ratio: float,
               max_kl: float) -> Verdict:
    """The gate's verdict (:func:`prnf_core.verdict.judge`) from a report's flat metrics."""
    scores = []
    for law in laws:
        def estimate(key: str, law: str = law) -> Estimate:
            return Estimate(metrics[f"val/{law}/{key}"],
                            metrics.get(f"val/{law}/{key}_stderr", math.nan))

        kl = estimate("kl") if f"val/{law}/kl" in metrics else None
        scores.append(LawScore(law, estimate("sw_ratio"), kl))
    return judge(scores, max_sw_ratio=max_sw_ratio, max_kl=max_kl)


def evaluate_model(model: Any, problem: str, problem_params: dict[str, Any],
                   test_sets: dict[str, str], laws: dict[str, InitialSpec], n_samples: int,
                   seed: int, t_end: float, detailed: bool = True, bootstrap: int = 0,
                   conditions: dict[str, dict[str, Any]] | None = None,
                   kl_samples: int = KL_SAMPLES) -> tuple[ValidationReport, dict, float]:
    """Validate ``model`` on the test sets (simulated to the horizon ``t_end``, at which the
    exact KL is taken too, with ``kl_samples`` exact draws of X_T and of x0). Returns the
    report, surrogate samples per law and the surrogate's sampling rate (samples/s).

    ``conditions`` (a model conditioned on (t, θ)): per case ``{"t": t, "params": θ}``, the
    point its test set was simulated at; the model is sampled there and the exact KL taken
    there, with the problem's parameters updated by θ."""
    report = ValidationReport(problem=problem)
    samples, sample_seconds = {}, 0.0
    with torch_threads(1):  # small batched ops: one thread is fastest on a shared CPU
        for i, (law, path) in enumerate(test_sets.items()):
            point = (conditions or {}).get(law)
            t = t_end if point is None else float(point["t"])
            sde = get_problem(problem, **{**problem_params, **(point or {}).get("params", {})})
            sample_seconds += _evaluate_law(model, problem, sde, t, law, path, laws[law],
                                            n_samples, seed + i, detailed, bootstrap, report,
                                            samples, conditioned=point is not None,
                                            kl_samples=kl_samples)
    rate = len(test_sets) * n_samples / max(sample_seconds, 1e-9)
    return report, samples, rate


def _evaluate_law(model: Any, problem: str, sde: Any, t_end: float, law: str, path: str,
                  spec: InitialSpec, n_samples: int, seed: int, detailed: bool, bootstrap: int,
                  report: ValidationReport, samples: dict, conditioned: bool = False,
                  kl_samples: int = KL_SAMPLES) -> float:
    """Add one law's results to ``report``; return the surrogate's sampling seconds. A
    ``conditioned`` case samples the model at (``t_end``, ``sde``'s parameters)."""
    import torch

    mc = open_dataset(path).load("xT")
    mc_a, mc_b = mc[:n_samples], mc[n_samples:2 * n_samples]
    condition = condition_of(model, sde, t_end) if conditioned else {}
    started = time.perf_counter()
    with torch.no_grad():
        _, sur = model.sample_initial(spec, n_samples, seed=seed, **condition)
    seconds = time.perf_counter() - started
    samples[law] = (sur, mc_a)
    report.add(validate_samples(problem, sur, mc_a, mc_b, law=law, seed=seed,
                                param=_law_param(spec), c2st=detailed, bootstrap=bootstrap))
    if sde.has_exact_transition:
        est = exact_kl(sde, model, spec, t=t_end, n_y=kl_samples, n_x0=kl_samples, seed=seed)
        report.meta.setdefault("kl", {})[law] = {"kl": est.kl, "stderr": est.stderr}
    return seconds


def flat_metrics(report: ValidationReport) -> dict[str, float]:
    metrics = report.as_flat_metrics()
    for law, est in report.meta.get("kl", {}).items():
        metrics[f"val/{metric_key(law)}/kl"] = est["kl"]
        metrics[f"val/{metric_key(law)}/kl_stderr"] = est["stderr"]
    return metrics


@task(name="validate-surrogate")
def validate_surrogate(model_ref: str, test_sets: dict[str, str], laws: dict[str, Any],
                       n_samples: int, seed: int, max_kl: float, max_sw_ratio: float,
                       train_seconds: float, report_dir: str, bootstrap: int = 0,
                       champion_ref: str | None = None,
                       history: list[dict[str, float]] | None = None,
                       conditions: dict[str, dict[str, Any]] | None = None,
                       kl_samples: int = KL_SAMPLES) -> dict[str, Any]:
    """Validate a surrogate (and the current champion, on the same data); write the report and
    plots. Returns metrics, the gate's verdict and score with its SE, the champion's, and the
    written files.

    The problem, its parameters and the horizon come from the model's own metadata (its
    configuration fingerprint); the test sets must have been simulated for that configuration.
    The champion is scored only when its fingerprint is the same: a model of another SDE or
    horizon is never scored on these test sets (``champion_note`` says why it was not).

    ``conditions`` (a model conditioned on (t, θ)): the grid point ``{"t": t, "params": θ}`` of
    each case (law at a point) of ``test_sets``, see :func:`evaluate_model`; the gate then takes
    the worst over all cases. A champion is scored on the same grid only when it has the same
    conditioning box (part of the fingerprint). ``kl_samples``: the size of each exact KL.
    """
    from prnf_core import plots
    from tasks.pyfunc import load_surrogate

    logger = get_run_logger()
    laws = {k: parse_initial(v) for k, v in laws.items()}
    surrogate = load_surrogate(model_ref)
    fingerprint = Fingerprint.of_model(surrogate.metadata)
    problem, problem_params = fingerprint.problem, dict(fingerprint.problem_params)
    sde = get_problem(problem, **problem_params)
    exact = sde.has_exact_transition
    model = surrogate.model
    report, samples, sur_rate = evaluate_model(model, problem, problem_params, test_sets, laws,
                                               n_samples, seed, fingerprint.t_end,
                                               bootstrap=bootstrap, conditions=conditions,
                                               kl_samples=kl_samples)
    mc_seconds = sum(open_dataset(p).simulation_seconds() for p in test_sets.values())
    mc_particles = sum(open_dataset(p).n_particles for p in test_sets.values())
    report.cost = cost_summary(train_seconds, sur_rate, mc_particles / max(mc_seconds, 1e-9),
                               n_samples)
    metrics = flat_metrics(report)
    law_keys = [metric_key(r.law) for r in report.results]
    verdict = verdict_of(metrics, law_keys, max_sw_ratio, max_kl)
    champion = _score_champion(champion_ref, fingerprint, test_sets, laws, n_samples, seed,
                               bootstrap, law_keys, max_sw_ratio, max_kl,
                               conditions, kl_samples) if champion_ref else {}
    if champion.get("note"):
        logger.warning("champion %s not scored: %s", champion_ref, champion["note"])

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
    if exact and conditions:
        markdown += ("\n## Exact KL(p_t || q_t) at each law's (t, θ)\n\n"
                     "| law | KL | SE |\n|---|---|---|\n")
    elif exact:
        markdown += (f"\n## Exact KL(p_T || q_T) at T = {fingerprint.t_end:g}\n\n"
                     "| law | KL | SE |\n|---|---|---|\n")
        for law, est in report.meta["kl"].items():
            markdown += f"| {metric_key(law)} | {est['kl']:.4g} | {est['stderr']:.2g} |\n"
    markdown += (f"\n**Validation {'passed' if verdict.passed else 'failed'}** "
                 f"({verdict.rule}); score {verdict.score} ({verdict.score_name}, lower is "
                 "better)\n")
    markdown += "".join(f"\n- {failure}" for failure in verdict.failures)
    if champion_ref is not None:
        markdown += (f"\n\nCurrent champion on the same test sets: "
                     f"{champion.get('note') or champion['score']}"
                     + ("" if champion.get("note") else
                        f" ({'passes' if champion['passed'] else 'fails'} the gate)") + "\n")
    (out / "report.md").write_text(markdown)
    (out / "report.json").write_text(json.dumps(report.to_dict(), default=str))
    files += [out / "report.md", out / "report.json"]
    champion_score = champion.get("score")
    logger.info("validation %s: score %s (champion %s)",
                "passed" if verdict.passed else "failed", verdict.score,
                champion.get("note") or champion.get("score"))
    return {"metrics": metrics, "score": verdict.score.value,
            "score_stderr": verdict.score.stderr, "passed": verdict.passed,
            "rule": verdict.rule, "failures": list(verdict.failures),
            "score_name": verdict.score_name, "fingerprint": fingerprint.as_dict(),
            "champion_score": None if champion_score is None else champion_score.value,
            "champion_score_stderr": None if champion_score is None else champion_score.stderr,
            "champion_passed": champion.get("passed"), "champion_note": champion.get("note"),
            "champion_metrics": champion.get("metrics", {}),
            "files": [str(f) for f in files], "report_markdown": markdown}


def _score_champion(champion_ref: str, fingerprint: Fingerprint, test_sets: dict[str, str],
                    laws: dict[str, InitialSpec], n_samples: int, seed: int, bootstrap: int,
                    law_keys: list[str], max_sw_ratio: float, max_kl: float,
                    conditions: dict[str, dict[str, Any]] | None = None,
                    kl_samples: int = KL_SAMPLES) -> dict[str, Any]:
    """The champion's score and verdict on the same test sets (at the same grid points
    ``conditions``), or a ``note`` saying why it was not scored (another configuration, which
    includes another conditioning box, or it could not be loaded)."""
    from tasks.pyfunc import load_surrogate

    try:
        champion = load_surrogate(champion_ref)
        theirs = Fingerprint.of_model(champion.metadata)
    except Exception as exc:  # an unloadable champion is reported, never silently skipped
        return {"note": f"could not be loaded ({type(exc).__name__}: {str(exc)[:200]})"}
    differences = theirs.differences(fingerprint)
    if differences:
        return {"note": "another configuration, not comparable: " + "; ".join(differences)}
    report, _, _ = evaluate_model(champion.model, fingerprint.problem,
                                  dict(fingerprint.problem_params), test_sets, laws, n_samples,
                                  seed, fingerprint.t_end, detailed=False, bootstrap=bootstrap,
                                  conditions=conditions, kl_samples=kl_samples)
    metrics = flat_metrics(report)
    verdict = verdict_of(metrics, law_keys, max_sw_ratio, max_kl)
    return {"score": verdict.score, "passed": verdict.passed, "metrics": metrics}
