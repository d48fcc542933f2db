"""What the ``prnf`` commands print: a flow's result as a few lines or a table on stdout."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from flows.cli_support import out
from prnf_core.errors import PrnfError


def problems() -> None:
    """The built-in problems and their parameters."""
    from prnf_core.problems import get_problem, list_problems, problem_parameters

    table = Table("name", "dim", "noise", "T", "dt", "exact p(X_T|x0)", "description")
    for name in sorted(list_problems()):
        try:
            sde = get_problem(name)
        except PrnfError:  # a registered problem without defaults for all its parameters
            table.add_row(name, "-", "-", "-", "-", "-", "needs parameters (see below)")
            continue
        table.add_row(name, str(sde.dim), sde.noise, f"{sde.t_end:g}", f"{sde.dt:g}",
                      "yes" if sde.has_exact_transition else "no", sde.description)
    out.print(table)
    out.print("parameters (override with --param KEY=VALUE):")
    for name in sorted(list_problems()):
        params = ", ".join(f"{k}={v}" for k, v in problem_parameters(name).items())
        out.print(f"  {name}: {params}", highlight=False)


def simulated(result: dict[str, Any]) -> None:
    out.print(f"dataset id: {result['dataset_id']}")
    out.print(f"store: {result['path']}")
    out.print(
        f"chunks simulated: {result['chunks_simulated']} "
        f"(already complete: {result['chunks_already_done']}) of {result['n_chunks']}; "
        f"complete: {result['complete']}; {result['seconds']:.1f} s"
    )


def trained(summary: dict[str, Any]) -> None:
    resumed = summary.get("resumed_epochs", 0)
    out.print(f"model: {summary['model_dir']}")
    out.print(f"summary: {summary['model_dir']}/summary.json")
    out.print(f"best val_nll {summary['best_val_nll']:.4f} (epoch {summary['best_epoch']}), "
              f"val reversibility {summary['final'].get('val_rev', 0.0):.2e}, "
              f"{summary['epochs_run']} epochs"
              f"{f' ({resumed} resumed from the checkpoint)' if resumed else ''} "
              f"in {summary['seconds']:.1f} s")
    streamed = summary.get("streamed")
    if streamed:
        out.print(f"streamed from the store under a memory cap of {streamed['memory_cap_mb']:g} "
                  f"MB: {streamed['data_mb']:.3g} MB of rows, at most "
                  f"{streamed['peak_mb']:.3g} MB held", highlight=False)


def sampled(result: dict[str, Any]) -> None:
    out.print(f"wrote {result['n']} samples of X_T (d={result['dim']}) to {result['out']} "
              f"in {result['seconds']:.2f} s", highlight=False)
    trust = result.get("trust")
    if trust:
        out.print(("WARNING: " if trust["flagged"] else "coverage: ") + trust["message"],
                  highlight=False, soft_wrap=True)
    if result.get("run_id"):
        out.print(f"logged to MLflow run {result['run_id']}", highlight=False)


def inverted(result: dict[str, Any]) -> None:
    metrics = result["metrics"]
    line = (f"P(X_T in R | x0): max {metrics['inverse.max_probability']:.3g}, grid mean "
            f"{metrics['inverse.mean_probability']:.3g}")
    if "inverse.law_probability" in metrics:
        line += (f"; under the initial law {metrics['inverse.law_probability']:.4g} ± "
                 f"{metrics['inverse.law_probability_stderr']:.2g} (posterior ESS "
                 f"{metrics['inverse.ess']:.0f})")
    out.print(line, highlight=False)
    out.print(f"wrote the map, arrays and plots to {result['out']}"
              + (f"; MLflow run {result['mlflow_run_id']}" if result["mlflow_run_id"] else ""),
              highlight=False)


def checked(result: dict[str, Any]) -> None:
    """What `prnf check` prints: coverage, the metrics with their errors, the verdict."""
    m, trust = result["metrics"], result["trust"]
    out.print(("WARNING: " if trust["flagged"] else "coverage: ") + trust["message"],
              highlight=False, soft_wrap=True)
    table = Table("metric", "value", "error", title=f"check of {result['model']} on "
                                                    f"{result['law']}")
    table.add_row("SW ratio (to the MC noise floor)", f"{m['sw_ratio']:.3g}",
                  f"± {m['sw_ratio_stderr']:.2g}" if "sw_ratio_stderr" in m else "")
    if "c2st_acc" in m:
        table.add_row("C2ST accuracy (0.5: indistinguishable)", f"{m['c2st_acc']:.3f}",
                      f"± {m['c2st_stderr']:.3f} (null up to {m['c2st_null_high']:.3f})")
    if "kl" in m:
        table.add_row("exact KL", f"{m['kl']:.4g}", f"± {m['kl_stderr']:.2g}")
    for key in sorted(k for k in m if f"{k}_stderr" in m and k.endswith("_sur")
                      and f"{k[:-4]}_mc_stderr" in m):
        q = key[:-4]
        table.add_row(f"{q}: surrogate / MC", f"{m[key]:.4g} / {m[q + '_mc']:.4g}",
                      f"± {m[q + '_sur_stderr']:.2g} / ± {m[q + '_mc_stderr']:.2g} "
                      f"(z {m[q + '_z']:.2f})")
    out.print(table)
    where = (f" and version {result['version']['name']}/{result['version']['version']}"
             if result.get("version") else "")
    out.print(f"{'trusted' if result['passed'] else 'NOT trusted'}"
              + "".join(f"\n  {failure}" for failure in result["failures"])
              + f"\nlogged to MLflow run {result['run_id']}{where}; report {result['report']}",
              highlight=False, soft_wrap=True)


def validated(result: dict[str, Any], model: str) -> None:
    table = Table("metric", "value", title=f"validation of {model}")
    for key, value in sorted(result["metrics"].items()):
        if key.endswith(("kl", "energy_ratio", "sw_ratio", "c2st_acc", "_z")):
            table.add_row(key, f"{value:.4g}")
    out.print(table)
    out.print(f"{'passed' if result['passed'] else 'FAILED'}: score ({result['score_name']}) "
              f"{result['score']:.4g} ± {result['score_stderr']:.2g}; report and plots: "
              f"{result['report_dir']}"
              + "".join(f"\n  {failure}" for failure in result["failures"]), highlight=False)


def health(result: dict[str, Any]) -> None:
    """What `prnf health` prints for a healthy champion."""
    table = Table("metric", "baseline", "now", "limit", "status",
                  title=f"champion health: {result['model']} v{result['version']}")
    for row in result["checks"]:
        table.add_row(row["metric"], f"{row['baseline']:.4g}", f"{row['now']:.4g}",
                      f"{row['limit']:.4g}", "DEGRADED" if row["degraded"] else "ok")
    out.print(table)
    out.print(f"healthy: score ({result['score_name']}) {result['score']:.4g} ± "
              f"{result['score_stderr']:.2g} on fresh MC (seed {result['seed']}); point "
              f"{result['point']} of MLflow run {result['run_id']} ({result['tracking_uri']})",
              highlight=False)


def dataset_info(store: str) -> None:
    from prnf_core.dataset import open_dataset

    dataset = open_dataset(store)  # missing or bad store: exit 2 by Guarded
    meta = dataset.meta
    missing = dataset.missing_chunks()
    out.print(f"dataset id: {meta['dataset_id']}  (schema {meta['schema_version']}, "
              f"prnf {meta['package_version']})")
    out.print(f"particles: {dataset.n_particles}, dim: {dataset.dim}, "
              f"chunks missing: {len(missing)} of {dataset.config.n_chunks}, "
              f"complete: {dataset.is_complete}")
    out.print(json.dumps(meta["resolved_config"], indent=2))


def pipeline_result(result: dict[str, Any]) -> None:
    """What `prnf pipeline`, `prnf register` and `prnf run` print."""
    table = Table("metric", "value", title=f"prnf pipeline: {result['problem']}")
    for key, value in sorted(result["metrics"].items()):
        table.add_row(key, f"{value:.4g}")
    table.add_row(f"score ({result['score_name']})",
                  f"{result['score']:.4g} ± {result['score_stderr']:.2g}")
    out.print(table)
    out.print(f"validation: {'passed' if result['passed'] else 'FAILED'}"
              + "".join(f"\n  {failure}" for failure in result["failures"]), highlight=False)
    registered = (f"registered {result['registered_model']} v{result['version']}"
                  if result["version"] else result["registered_model"])
    out.print(f"{registered}: {result['decision']}", highlight=False)
    out.print(f"champion: {result['champion_uri'] or 'none'}", highlight=False)
    if result.get("fresh_seed") is not None:
        out.print(f"fresh test sets: seed {result['fresh_seed']}; on the fixed regression sets "
                  f"the challenger scores {result['regression_score']:.4g}", highlight=False)
    if result.get("health", {}).get("point") is not None:
        health = result["health"]
        out.print(f"champion health point {health['point']}: "
                  f"{'; '.join(health['degraded']) or 'healthy'}", highlight=False)
    if result.get("retention"):
        kept = result["retention"]
        out.print(f"retention: deleted versions {kept['versions_deleted'] or 'none'}, "
                  f"{len(kept['test_sets_deleted'])} test set(s)", highlight=False)
    out.print(f"plots and report: {result['report_dir']}", highlight=False)
    out.print(f"MLflow run {result['run_id']} ({result['tracking_uri']}); "
              f"dataset {result['dataset_path']}; model {result['model_dir']}", highlight=False)


def reproduced(result: dict[str, Any]) -> None:
    out.print(f"{result['experiment']} ({result['profile']}): {result['headline']}; goal "
              f"{'met' if result['goal_met'] else 'NOT met'}", highlight=False)
    out.print(f"page: {result['page']}; MLflow run {result['run_id']}; "
              f"{result['seconds'] / 60:.1f} min", highlight=False)
