"""Experiment 2: runaway electrons, production rate against the initial temperature.

Trained once on x0 uniform over p ∈ [0.5, 5], ξ ∈ [-1, 1] at T = 20 (dt = 0.005, 4000 steps).
Test laws: Maxwellians at temperatures T̂0 (isotropic momentum vector with i.i.d.
N(0, T̂0/(2T̃)) components, p = |v|, ξ = v_z/|v|, redrawn until p ≥ p_min = 0.5). QoI: the
runaway production rate, the fraction of particles with p > p* = 1.75 at T.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flows.pipeline import pipeline_flow
from flows.reproduce.common import mc_reference_sets, pipeline_params, setup_section
from flows.reproduce.report import Goal, ResultPage, fmt, goals_table, table, verdict
from flows.reproduce.settings import RunawaySettings
from prnf_core import plots
from prnf_core.cluster import ExecutionConfig
from prnf_core.problems.runaway2d import RUNAWAY_P_STAR
from prnf_core.studies import QoIAgreement, SurrogateQoI, compare_rates, maxwellian_laws
from tasks.study import mc_qoi, plot_law_marginals, surrogate_qoi_study

PROBLEM = "runaway2d"


def _key(t: float) -> str:
    return f"T{t:g}"


def run(settings: RunawaySettings, page: ResultPage, execution: ExecutionConfig,
        use_registry: bool) -> dict[str, Any]:
    """Pipeline, then the rate study: surrogate vs fresh MC at every temperature."""
    laws = {_key(t): law.model_dump(mode="json")
            for t, law in maxwellian_laws(settings.temperatures).items()}
    validation_laws = {_key(t): laws[_key(t)] for t in settings.marginal_temperatures}
    result = pipeline_flow(pipeline_params(settings, PROBLEM, execution, use_registry,
                                           validation_laws or None))
    model_dir = result["model_dir"]

    stores = mc_reference_sets(settings, PROBLEM, laws, settings.n_mc, settings.mc_seed,
                               execution)
    mc = mc_qoi(PROBLEM, stores)
    sur = surrogate_qoi_study(model_dir, PROBLEM, laws, settings.n_surrogate, seed=11)

    comparisons = compare_temperatures(settings, sur, mc)
    goals = runaway_goals(comparisons, energy_ratios(result["metrics"]), settings)
    rows = []
    for t, cmp in comparisons:
        tol = (f"rel ≤ {settings.rel_tol:g}" if cmp.tolerance_rule == "relative"
               else f"abs ≤ {settings.abs_tol:g}")
        # Zero hits: the binomial SE is 0 and says nothing; give the 95 % upper bound 3/n.
        mc_cell = (f"0 (< {3 / mc[_key(t)]['n']:.1g}, 95 %)" if cmp.mc == 0
                   else f"{cmp.mc:.3g} ± {cmp.mc_stderr:.1g}")
        bias = f"{cmp.bias_se:+.1f}" + (" †" if cmp.mc == 0 else "")
        rows.append([f"{t:g}", mc_cell,
                     f"{cmp.sur:.3g} ± {cmp.sur_stderr:.1g}", fmt(cmp.abs_error, 2),
                     fmt(cmp.rel_error, 2), tol, _bold_miss(cmp.within),
                     bias if _unbiased(cmp, settings) else f"**{bias}**",
                     "yes" if cmp.resolvable else "no"])
    met = all(g.passed for g in goals)
    resolvable = all(c.resolvable for _, c in comparisons)

    validated = ", ".join(f"{t:g}" for t in settings.marginal_temperatures)
    page.add(setup_section(
        __doc__,
        f"One pipeline run (simulate {settings.n_train} training pairs in "
        f"{settings.dtype} → train → validate on T̂0 ∈ {{{validated}}} → register). Then for every "
        f"temperature {settings.n_mc:,} fresh MC particles (seed {settings.mc_seed}+k) and "
        f"{settings.n_surrogate:,} surrogate samples; rates by counting, binomial standard "
        "errors."))
    page.add("## Runaway production rate, surrogate vs Monte Carlo\n\n"
             + table(["T̂0", "MC rate ± SE", "surrogate rate ± SE", "abs error", "rel error",
                      "goal", "within goal", "bias (combined SEs)",
                      "noise small enough to tell (2 SE < tol)"], rows)
             + "\nBias: (surrogate − MC) / sqrt(SE_sur² + SE_mc²) with the binomial SEs."
             + (" † MC has zero hits there: its SE is taken as 0, as in the noise column, so only "
                "the surrogate's SE counts (the MC cell gives the 95 % upper bound 3/n instead)."
                if any(c.mc == 0 for _, c in comparisons) else "") + "\n\n"
             + f"### Goals (issue 11): **{verdict(met)}** overall, "
               f"{sum(g.passed for g in goals)} of {len(goals)} met\n\n"
             + goals_table(goals)
             + f"\nSampling noise {'is' if resolvable else 'is not'} small enough to tell "
               "everywhere.")
    rate_fig = plots.plot_qoi_vs_param(
        settings.temperatures, [c.sur for _, c in comparisons], [c.mc for _, c in comparisons],
        page.figure_path("rate_vs_temperature.png"),
        sur_err=[c.sur_stderr for _, c in comparisons],
        mc_err=[c.mc_stderr for _, c in comparisons], xlabel="initial temperature T̂0",
        ylabel=f"runaway rate P[p > {RUNAWAY_P_STAR:g}]", logy=True,
        title="runaway2d: production rate vs T̂0")
    figures = plot_law_marginals(model_dir, PROBLEM,
                                 {_key(t): stores[_key(t)] for t in settings.marginal_temperatures},
                                 laws, str(page.figure_dir), seed=23, tail_min=RUNAWAY_P_STAR)
    text = page.figure(rate_fig, "Runaway rate vs T̂0 (log scale), ±2 SE")
    captions = ["(p, ξ) at T, all particles (the bulk sits at the floor p = 0.5)",
                f"(p, ξ) at T of the runaway particles only (p > {RUNAWAY_P_STAR:g}), each "
                "set normalized to its own count"]
    for t in settings.marginal_temperatures:
        for path, caption in zip(figures[_key(t)], captions, strict=False):
            text += "\n" + page.figure(path, f"{caption}: surrogate (lines) vs MC (filled), "
                                              f"T̂0 = {t:g}")
    page.add("## Figures\n\n" + text)
    page.add(_validation_text(result, goals[-1], settings))
    page.add(_cost_text(mc, sur, result))
    metrics = {f"{_key(t)}.{name}": value for t, c in comparisons
               for name, value in (("mc_rate", c.mc), ("sur_rate", c.sur),
                                   ("abs_error", c.abs_error), ("rel_error", c.rel_error),
                                   ("bias_se", c.bias_se))
               if math.isfinite(value)}
    return {"metrics": metrics, "goal_met": met, "pipeline_runs": {"": result["run_id"]},
            "headline": ", ".join(f"{g.name} {g.verdict}" for g in goals)
                        + f" ({sum(c.within for _, c in comparisons)} of {len(comparisons)} "
                          "temperatures within the rate goal)"}


def compare_temperatures(settings: RunawaySettings, sur: Mapping[str, Mapping[str, float]],
                         mc: Mapping[str, Mapping[str, float]]
                         ) -> list[tuple[float, QoIAgreement]]:
    """Surrogate vs MC rate at every temperature, relative tolerance from ``relative_from`` up.

    ``sur`` and ``mc`` are keyed ``T<t>``: ``{"value", "stderr", "n"}`` (``sur`` also
    ``"seconds"``).
    """
    out = []
    for t in settings.temperatures:
        s = sur[_key(t)]
        out.append((t, compare_rates(
            _key(t), SurrogateQoI(s["value"], s["stderr"], int(s["n"]), s.get("seconds", 0.0)),
            mc[_key(t)], rel_tol=settings.rel_tol, abs_tol=settings.abs_tol,
            use_relative=t >= settings.relative_from)))
    return out


def energy_ratios(metrics: Mapping[str, float]) -> dict[str, float]:
    """Energy-distance ratio of every law the pipeline validated (nan where not measured)."""
    return {law: metrics.get(f"val/{law}/energy_ratio", math.nan)
            for law in _validated_laws(metrics)}


def _validated_laws(metrics: Mapping[str, float]) -> list[str]:
    return sorted({k.split("/")[1] for k in metrics
                   if k.startswith("val/") and k.endswith(("/sw_ratio", "/energy_ratio"))})


def runaway_goals(comparisons: list[tuple[float, QoIAgreement]], energy: Mapping[str, float],
                  settings: RunawaySettings) -> list[Goal]:
    """Issue 11's goals, each measured: rate error, bias in combined SEs, energy ratio."""
    n = len(comparisons)
    measured = []
    for rule, short in (("relative", "rel"), ("absolute", "abs")):
        group = [(t, c) for t, c in comparisons if c.tolerance_rule == rule]
        if group:
            t, c = max(group, key=lambda tc: tc[1].error)
            measured.append(f"max {short} {fmt(c.error, 2)} (T̂0 = {t:g})")
    rate_fail = [f"T̂0 = {t:g} ({'rel' if c.tolerance_rule == 'relative' else 'abs'} "
                 f"{fmt(c.error, 2)})" for t, c in comparisons if not c.within]
    rate = Goal("rate error", f"rel ≤ {settings.rel_tol:g} for T̂0 ≥ {settings.relative_from:g},"
                              f" abs ≤ {settings.abs_tol:g} below", "; ".join(measured) or "-",
                not rate_fail and n > 0, _evidence(rate_fail, n, "temperatures"))

    worst_t, worst = max(comparisons, key=lambda tc: abs(tc[1].bias_se), default=(math.nan, None))
    bias_fail = [f"T̂0 = {t:g} ({c.bias_se:+.1f} SE)" for t, c in comparisons
                 if not _unbiased(c, settings)]
    zero = [f"{t:g}" for t, c in comparisons if c.mc == 0]
    bias = Goal("bias", f"≤ {settings.bias_goal_se:g} combined SEs (either sign) at every T̂0",
                "-" if worst is None else f"max {abs(worst.bias_se):.1f} SE (T̂0 = {worst_t:g})",
                not bias_fail and n > 0,
                _evidence(bias_fail, n, "temperatures")
                + (f"; MC has zero hits at T̂0 = {', '.join(zero)} (MC SE taken as 0)"
                   if zero else ""))

    energy_fail = [f"{law} ({fmt(v)})" for law, v in energy.items()
                   if not v <= settings.energy_goal]
    finite = {law: v for law, v in energy.items() if math.isfinite(v)}
    worst_law = max(finite, key=finite.__getitem__, default=None)
    ratio = Goal("energy ratio", f"≤ {settings.energy_goal:g} on every validated law",
                 "-" if worst_law is None else f"max {fmt(finite[worst_law])} ({worst_law})",
                 not energy_fail and bool(energy), _evidence(energy_fail, len(energy), "laws"))
    return [rate, bias, ratio]


def _unbiased(c: QoIAgreement, settings: RunawaySettings) -> bool:
    return abs(c.bias_se) <= settings.bias_goal_se


def _evidence(failures: list[str], total: int, what: str) -> str:
    if not total:
        return f"no {what} measured"
    if failures:
        return f"fails at {len(failures)} of {total}: " + ", ".join(failures)
    return f"all {total} {what} within"


def _bold_miss(passed: bool) -> str:
    return verdict(passed) if passed else f"**{verdict(passed)}**"


def _validation_text(result: dict[str, Any], energy_goal: Goal,
                     settings: RunawaySettings) -> str:
    m = result["metrics"]
    rows = []
    for law in _validated_laws(m):
        energy = m.get(f"val/{law}/energy_ratio", math.nan)
        rows.append([law, fmt(m.get(f"val/{law}/sw_ratio")), fmt(energy),
                     _bold_miss(energy <= settings.energy_goal),
                     fmt(m.get(f"val/{law}/c2st_acc"))])
    return ("## Pipeline validation (distribution distances)\n\n"
            + table(["law", "SW ratio", "energy ratio",
                     f"energy goal (≤ {settings.energy_goal:g})", "C2ST accuracy"], rows)
            + f"\nEnergy goal ({energy_goal.threshold}): **{energy_goal.verdict}**, "
              f"{energy_goal.measured}; {energy_goal.evidence}. "
              "Ratios are to the MC-vs-MC noise floor (≈ 1 for a perfect surrogate); C2ST 0.5 "
              f"= indistinguishable. Registered `{result['registered_model']}` "
              f"v{result['version']} ({result['decision']}).")


def _cost_text(mc: dict[str, dict[str, float]], sur: dict[str, dict[str, float]],
               result: dict[str, Any]) -> str:
    from prnf_core.models import load_metadata

    mc_rate = sum(v["n"] for v in mc.values()) / sum(v["seconds"] for v in mc.values())
    sur_rate = sum(v["n"] for v in sur.values()) / sum(v["seconds"] for v in sur.values())
    train = load_metadata(result["model_dir"]).get("train_seconds", math.nan)
    return ("## Cost\n\n"
            + table(["", "value"], [
                ["MC particles per core-second (T = 20)", fmt(mc_rate)],
                ["surrogate samples per second (one thread)", fmt(sur_rate)],
                ["speed-up per sample", fmt(sur_rate / mc_rate)],
                ["training cost (simulation core-s + training s)", fmt(train)]]))
