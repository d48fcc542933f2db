"""`prnf reproduce`: the paper's experiments on the pipeline, end to end on tiny sizes.

Accuracy goals are not asserted here (the quick and paper profiles are benchmarks whose numbers
are in docs/results); these tests check that every experiment runs through the pipeline, writes
its page with tables and figures, logs to MLflow, and refuses bad settings naming the field. The
goal logic itself (PASS/MISS from measured numbers) is checked on synthetic numbers.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.cli import app
from flows.reproduce import ReproduceParams, reproduce_flow
from flows.reproduce.report import goals_table
from flows.reproduce.runaway2d import compare_temperatures, energy_ratios, runaway_goals
from flows.reproduce.settings import PROFILES, RunawaySettings, resolve_settings
from prnf_core.problems.runaway2d import RUNAWAY_P_STAR, runaway_rate
from prnf_core.studies import (
    QoIAgreement,
    abc3d_grid_laws,
    lattice_subset,
    maxwellian_laws,
    surrogate_qoi,
)
from tasks import tracking

TINY = {
    "bm1d": {"n_train": 1000, "chunk_size": 500, "training.epochs": 2, "lambdas": [0, 100],
             "kl_n_y": 200, "kl_n_x0": 200, "check_samples": 500, "validation_samples": 500,
             "validation_kl_samples": 200, "model.hidden_width": 16},
    "runaway2d": {"n_train": 1000, "chunk_size": 500, "t_end": 0.5, "training.epochs": 2,
                  "temperatures": [2, 6], "marginal_temperatures": [6], "n_mc": 1000,
                  "n_surrogate": 2000, "validation_samples": 500, "model.hidden_width": 16},
    "abc3d": {"n_train": 1000, "chunk_size": 500, "t_end": 0.1, "training.epochs": 2,
              "grid": 3, "grid_samples": 500, "reference_per_axis": 2,
              "reference_samples": 500, "validation_samples": 500, "model.hidden_width": 16,
              "baseline_model.hidden_width": 8, "baseline_training.epochs": 1},
}


@pytest.mark.parametrize("experiment", sorted(PROFILES))
@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_profiles_are_valid(experiment, profile):
    settings = resolve_settings(experiment, profile, {})
    assert settings.n_train > 0
    if profile == "paper":
        assert settings.model.hidden_width == 512 and settings.training.iterations == 30_000


def test_overrides_are_dotted_and_validated():
    s = resolve_settings("bm1d", "paper", {"training.iterations": 10, "model.hidden_width": 8})
    assert s.training.iterations == 10 and s.model.hidden_width == 8  # beat the preset
    with pytest.raises(ValidationError, match="n_trian"):
        ReproduceParams(experiment="bm1d", overrides={"n_trian": 5})
    with pytest.raises(ValidationError, match=r"training\.epochs"):
        ReproduceParams(experiment="bm1d", overrides={"training.epochs": -1})
    with pytest.raises(ValidationError, match="default_lambda"):
        ReproduceParams(experiment="bm1d", overrides={"lambdas": [0, 1]})
    with pytest.raises(ValidationError, match="marginal_temperatures"):
        ReproduceParams(experiment="runaway2d", overrides={"marginal_temperatures": [11]})
    with pytest.raises(ValidationError, match="'n_train' is not a section"):
        ReproduceParams(experiment="abc3d", overrides={"n_train.x": 1})
    with pytest.raises(ValidationError, match="experiment"):
        ReproduceParams(experiment="lorenz")


def test_cli_refuses_bad_setting_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["reproduce", "abc3d", "--set", "grid=1",
                                      "--output", str(tmp_path)])
    assert result.exit_code == 2
    assert "grid" in result.output and "greater than or equal to 2" in result.output
    assert not any(tmp_path.iterdir())


def test_grid_and_reference_subset():
    laws = abc3d_grid_laws(22)
    assert len(laws) == 484
    assert laws[(21, 0)].mu == pytest.approx([2 * 3.141592653589793, 3.141592653589793, 0.0])
    subset = lattice_subset(22, 5)
    assert len(subset) == 25 and (0, 0) in subset and (21, 21) in subset


def test_command_line_reruns_the_same_parameters():
    params = ReproduceParams(experiment="bm1d", overrides={"lambdas": [0, 100]},
                             output_dir="out dir", execution={"workers": 0})
    line = params.command_line()
    assert line == ("prnf reproduce bm1d --profile quick --set 'lambdas=[0,100]' "
                    "--output 'out dir' --workers 0")


@pytest.mark.parametrize("experiment", sorted(TINY))
def test_experiment_end_to_end(experiment, prefect_harness, tmp_path):
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    result = reproduce_flow(ReproduceParams(experiment=experiment, overrides=TINY[experiment],
                                            output_dir=str(tmp_path), execution={"workers": 0}))
    page = Path(result["page"])
    text = page.read_text()
    assert page == tmp_path / f"{experiment}.md"
    assert f"prnf reproduce {experiment} --profile quick" in text
    assert "Machine:" in text and "wall time" in text
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert figures and all((tmp_path / f).is_file() for f in figures)
    assert "| " in text  # at least one table
    assert result["headline"] and isinstance(result["goal_met"], bool)

    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["wall_seconds"] > 0
    assert run.data.params["profile"] == "quick"
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert f"{experiment}.md" in artifacts and experiment in artifacts
    assert run.data.tags.get("pipeline_run") or run.data.tags.get("pipeline_run.100")
    if experiment == "runaway2d":  # every goal of issue 11 judged on the page
        assert "bias (combined SEs)" in text and "### Goals (issue 11)" in text
        for goal in ("rate error", "bias", "energy ratio"):
            assert re.search(rf"\| {goal} \|.*\| \*\*(PASS|MISS)\*\* \|", text), goal
        assert "energy goal (≤ 2)" in text
        check_rate_table(text, result["metrics"], TINY["runaway2d"])
    if experiment == "abc3d":  # the quick profile's NSF baseline went through the pipeline too
        assert run.data.tags["pipeline_run.baseline"] != run.data.tags["pipeline_run"]
        assert "Surrogates side by side" in text and "baseline.grid.max_abs_error" in result[
            "metrics"]
        check_grid_summary(text, result["metrics"], TINY["abc3d"])


def check_rate_table(text: str, metrics: dict[str, float], tiny: dict) -> None:
    """The runaway rate table against the rates it reports: binomial SEs, errors, bias in SEs."""
    for t in tiny["temperatures"]:
        mc, sur = metrics[f"T{t:g}.mc_rate"], metrics[f"T{t:g}.sur_rate"]
        assert metrics[f"T{t:g}.abs_error"] == pytest.approx(abs(sur - mc), rel=1e-12)
        se_mc = math.sqrt(mc * (1 - mc) / tiny["n_mc"])
        se_sur = math.sqrt(sur * (1 - sur) / tiny["n_surrogate"])
        row = re.search(rf"^\| {t:g} \| (.+?) \| (.+?) \| (.+?) \| (.+?) \| .+? \| .+? \| "
                        r"\**([+-][\d.]+|[+-]inf)", text, re.M)
        assert row, t
        mc_cell, sur_cell, abs_cell = row.group(1), row.group(2), row.group(3)
        assert sur_cell == f"{sur:.3g} ± {se_sur:.1g}"  # SE from the surrogate's n, not MC's
        assert abs_cell == f"{abs(sur - mc):.2g}"
        if mc > 0:
            assert mc_cell == f"{mc:.3g} ± {se_mc:.1g}"
            assert metrics[f"T{t:g}.rel_error"] == pytest.approx(abs(sur - mc) / mc, rel=1e-12)
        else:  # zero hits: the 95 % upper bound 3/n instead of a zero SE
            assert mc_cell == f"0 (< {3 / tiny['n_mc']:.1g}, 95 %)"
        if se_mc or se_sur:
            bias = (sur - mc) / math.hypot(se_mc, se_sur)
            assert row.group(5) == f"{bias:+.1f}"
            assert metrics[f"T{t:g}.bias_se"] == pytest.approx(bias, rel=1e-9)


def check_grid_summary(text: str, metrics: dict[str, float], tiny: dict) -> None:
    """The abc3d grid summary against its table of MC references (values printed to 4 dp).

    Error = surrogate − MC at each reference law, max and mean of |error|, and the noise level
    E|N(0, se²)| = se·sqrt(2/π), se = sqrt(SE_sur² + SE_mc²); SEs binomial at the reference n.
    Rounding to 4 dp moves a printed value by ≤ 5e-5, so a difference of printed values by
    ≤ 1e-4 (+ 5e-5 for the printed error itself).
    """
    first = text.split("## Parameter study: ")[1].split("\n## ")[0]
    rows = re.findall(r"^\| (i\d+_j\d+) \| \(([\d.]+), ([\d.]+)\) \| ([\d.]+) ± ([\d.]+) \| "
                      r"([\d.]+) ± ([\d.]+) \| ([+-][\d.]+) \| ([+-][\d.]+) \|$", first, re.M)
    n, per_axis = tiny["grid"], tiny["reference_per_axis"]
    assert len(rows) == per_axis**2
    step = 2 * math.pi / (n - 1)
    errors, noise = [], []
    for key, cx, cz, mc, se_mc, sur, se_sur, err, _ in rows:
        i, j = (int(v) for v in re.findall(r"\d+", key))
        assert (float(cx), float(cz)) == pytest.approx((i * step, j * step), abs=0.005)
        mc, se_mc, sur, se_sur, err = map(float, (mc, se_mc, sur, se_sur, err))
        assert err == pytest.approx(sur - mc, abs=1.5e-4)
        for p, se in ((mc, se_mc), (sur, se_sur)):
            assert se == pytest.approx(math.sqrt(p * (1 - p) / tiny["reference_samples"]),
                                       abs=1e-4)
        errors.append(abs(err))
        noise.append(math.hypot(se_mc, se_sur))
    assert metrics["grid.max_abs_error"] == pytest.approx(max(errors), abs=5e-5)
    assert metrics["grid.mean_abs_error"] == pytest.approx(np.mean(errors), abs=5e-5)
    assert metrics["grid.noise_mean_abs_error"] == pytest.approx(
        np.mean(noise) * math.sqrt(2 / math.pi), abs=1e-4)
    assert f"max |error| {metrics['grid.max_abs_error']:.4f}" in first


@pytest.mark.parametrize("experiment", sorted(PROFILES))
def test_committed_results_page_names_its_command_machine_and_figures(experiment):
    page = Path(__file__).resolve().parents[1] / "docs" / "results" / f"{experiment}.md"
    text = page.read_text()
    assert f"prnf reproduce {experiment} --profile quick --output docs/results" in text
    assert re.search(r"wall time \d+(\.\d+)? min", text) and "- Machine: " in text
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert figures and all((page.parent / f).is_file() for f in figures)


def _runaway_settings(temperatures: list[float]) -> RunawaySettings:
    return resolve_settings("runaway2d", "quick", {"temperatures": temperatures,
                                                   "marginal_temperatures": []})


def _goals(rates: dict[float, tuple[float, float, float, float]],
           energy: dict[str, float]) -> dict[str, object]:
    """Issue 11's goals on synthetic numbers: ``{T̂0: (mc, mc SE, surrogate, surrogate SE)}``."""
    settings = _runaway_settings(sorted(rates))
    mc = {f"T{t:g}": {"value": m, "stderr": ms, "n": 100_000} for t, (m, ms, _, _) in rates.items()}
    sur = {f"T{t:g}": {"value": v, "stderr": vs, "n": 1_000_000, "seconds": 1.0}
           for t, (_, _, v, vs) in rates.items()}
    return {g.name: g for g in runaway_goals(compare_temperatures(settings, sur, mc), energy,
                                             settings)}


def test_runaway_goal_defaults_are_issue_11s():
    s = _runaway_settings([1.0])
    assert (s.rel_tol, s.abs_tol, s.bias_goal_se, s.energy_goal) == (0.03, 0.0005, 3.0, 2.0)
    assert s.relative_from == 4.0
    assert "energy-distance ratio" in RunawaySettings.model_fields["energy_goal"].description


def test_runaway_goals_pass():
    # T̂0 = 2: abs error 5e-5 ≤ 5e-4, bias 0.5 SE; T̂0 = 5: rel 0.02 ≤ 0.03, bias 1.0 SE.
    goals = _goals({2.0: (0.001, 0.0001, 0.00105, 0.0), 5.0: (0.05, 0.0006, 0.051, 0.0008)},
                   {"T2": 1.2, "T5": 1.9})
    assert [g.verdict for g in goals.values()] == ["PASS", "PASS", "PASS"]
    assert goals["rate error"].measured == "max rel 0.02 (T̂0 = 5); max abs 5e-05 (T̂0 = 2)"
    assert goals["rate error"].evidence == "all 2 temperatures within"
    assert goals["bias"].measured == "max 1.0 SE (T̂0 = 5)"
    assert goals["energy ratio"].measured == "max 1.9 (T5)"
    text = goals_table(list(goals.values()))
    assert "| energy ratio | ≤ 2 on every validated law | max 1.9 (T5) | **PASS** |" in text
    assert {line.count("|") for line in text.splitlines()} == {6}  # no stray pipe in a cell


def test_runaway_rate_goal_misses_4_percent_at_t5_and_abs_above_5e_4():
    # 4 % off at T̂0 = 5 but only 2 SE: the rate goal misses, the bias goal does not.
    goals = _goals({5.0: (0.05, 0.0006, 0.052, 0.0008)}, {"T5": 1.0})
    assert goals["rate error"].verdict == "MISS" and goals["bias"].verdict == "PASS"
    assert goals["rate error"].evidence == "fails at 1 of 1: T̂0 = 5 (rel 0.04)"
    # Below relative_from the absolute tolerance 0.0005 applies: 0.0006 off misses.
    goals = _goals({3.0: (0.01, 0.001, 0.0106, 0.0), 6.0: (0.07, 0.001, 0.07, 0.0)},
                   {"T3": 1.0})
    assert goals["rate error"].verdict == "MISS" and goals["bias"].verdict == "PASS"
    assert goals["rate error"].evidence == "fails at 1 of 2: T̂0 = 3 (abs 0.0006)"


def test_runaway_bias_goal_misses_at_6_combined_ses():
    # 1.2 % off (within the 3 % rate goal) but 6 combined SEs (sqrt(0.6² + 0.8²) = 1 × 1e-4).
    goals = _goals({5.0: (0.05, 0.00006, 0.0506, 0.00008)}, {"T5": 1.0})
    assert goals["rate error"].verdict == "PASS"
    assert goals["bias"].verdict == "MISS"
    assert goals["bias"].measured == "max 6.0 SE (T̂0 = 5)"
    assert goals["bias"].evidence == "fails at 1 of 1: T̂0 = 5 (+6.0 SE)"
    # Zero MC hits: the MC SE is 0 (as in the noise column), so the surrogate's SE alone counts.
    goals = _goals({1.0: (0.0, 0.0, 2.5e-5, 5e-6)}, {"T1": 1.0})
    assert goals["rate error"].verdict == "PASS" and goals["bias"].verdict == "MISS"
    assert goals["bias"].evidence == ("fails at 1 of 1: T̂0 = 1 (+5.0 SE); MC has zero hits at "
                                      "T̂0 = 1 (MC SE taken as 0)")


def test_runaway_energy_goal_misses_above_2():
    goals = _goals({5.0: (0.05, 0.0006, 0.05, 0.0008)}, {"T2": 1.5, "T5": 2.5})
    assert goals["energy ratio"].verdict == "MISS"
    assert goals["energy ratio"].measured == "max 2.5 (T5)"
    assert goals["energy ratio"].evidence == "fails at 1 of 2: T5 (2.5)"
    # A validated law whose energy ratio is missing fails too; no validated law is no PASS.
    metrics = {"val/T2/sw_ratio": 1.0, "val/T2/energy_ratio": 1.5, "val/T5/sw_ratio": 1.0,
               "train/loss": 3.0}
    ratios = energy_ratios(metrics)
    assert list(ratios) == ["T2", "T5"] and ratios["T2"] == 1.5 and math.isnan(ratios["T5"])
    assert _goals({5.0: (0.05, 0.0006, 0.05, 0.0008)}, ratios)["energy ratio"].evidence == (
        "fails at 1 of 2: T5 (nan)")
    assert _goals({5.0: (0.05, 0.0006, 0.05, 0.0008)}, {})["energy ratio"].verdict == "MISS"


def test_bias_in_combined_standard_errors():
    agree = QoIAgreement("T1", 0.0, 0.0, 0.0, 0.0, 0.0005, "absolute")
    assert agree.bias_se == 0.0
    assert QoIAgreement("T1", 1e-5, 0.0, 0.0, 0.0, 0.0005, "absolute").bias_se == math.inf
    assert QoIAgreement("T5", 0.047, 0.0003, 0.05, 0.0004, 0.03, "relative").bias_se == (
        pytest.approx(-6.0))


# -- the study maths against hand-computed values -----------------------------------------------
def test_qoi_agreement_by_hand_relative_and_absolute():
    # Relative (T̂0 = 5): |0.052 − 0.05| = 0.002 = 4 % of 0.05 > 3 %; combined SE
    # sqrt(0.0008² + 0.0006²) = 0.001 = 2 % of the MC rate; bias 0.002 / 0.001 = +2 SE.
    rel = QoIAgreement("T5", 0.052, 0.0008, 0.05, 0.0006, 0.03, "relative")
    assert rel.abs_error == pytest.approx(0.002, rel=1e-9)
    assert rel.rel_error == rel.error == pytest.approx(0.04, rel=1e-9)
    assert not rel.within
    assert rel.combined_stderr == pytest.approx(0.02, rel=1e-9)
    assert not rel.resolvable  # 2 × 0.02 = 0.04 is not below 0.03
    assert rel.bias_se == pytest.approx(2.0, rel=1e-9)
    # Absolute (T̂0 = 2): error 0.0002 ≤ 0.0005; combined SE sqrt(0.00003² + 0.00004²) = 5e-5,
    # so 2 SE = 1e-4 < 5e-4 resolves it, and the bias is 0.0002 / 5e-5 = +4 SE (negative when
    # the surrogate is low).
    ab = QoIAgreement("T2", 0.0012, 0.00003, 0.0010, 0.00004, 0.0005, "absolute")
    assert ab.error == ab.abs_error == pytest.approx(0.0002, rel=1e-9)
    assert ab.rel_error == pytest.approx(0.2, rel=1e-9)
    assert ab.within and ab.resolvable
    assert ab.combined_stderr == pytest.approx(5e-5, rel=1e-9)
    assert ab.bias_se == pytest.approx(4.0, rel=1e-9)
    low = QoIAgreement("T2", 0.0008, 0.00003, 0.0010, 0.00004, 0.0005, "absolute")
    assert low.bias_se == pytest.approx(-4.0, rel=1e-9)
    d = ab.as_dict()
    assert (d["key"], d["tolerance_rule"], d["within"], d["resolvable"]) == (
        "T2", "absolute", True, True)
    assert [d[k] for k in ("sur", "sur_stderr", "mc", "mc_stderr", "abs_error", "rel_error",
                           "bias_se")] == pytest.approx([0.0012, 3e-5, 0.0010, 4e-5, 2e-4, 0.2,
                                                         4.0], rel=1e-9)
    # No MC hits: no relative error to speak of; the SE stays in absolute units.
    zero = QoIAgreement("T1", 1e-5, 3e-6, 0.0, 4e-6, 0.03, "relative")
    assert zero.rel_error == math.inf and not zero.within
    assert zero.combined_stderr == pytest.approx(5e-6, rel=1e-9)


def test_compare_temperatures_keeps_sides_and_switches_to_relative_at_relative_from():
    settings = _runaway_settings([2.0, 4.0, 5.0])  # relative_from = 4
    sur = {f"T{t:g}": {"value": v, "stderr": s, "n": 10**6, "seconds": 2.0}
           for t, v, s in ((2, 0.0011, 3e-5), (4, 0.021, 1.4e-4), (5, 0.052, 2.2e-4))}
    mc = {f"T{t:g}": {"value": v, "stderr": s, "n": 10**5}
          for t, v, s in ((2, 0.0010, 1e-4), (4, 0.020, 4.4e-4), (5, 0.050, 6.9e-4))}
    got = compare_temperatures(settings, sur, mc)
    assert [t for t, _ in got] == [2.0, 4.0, 5.0]
    assert [(c.tolerance_rule, c.tolerance) for _, c in got] == [
        ("absolute", 0.0005), ("relative", 0.03), ("relative", 0.03)]
    for (t, c), (s, m) in zip(got, [(0.0011, 0.0010), (0.021, 0.020), (0.052, 0.050)],
                              strict=True):
        assert (c.key, c.sur, c.mc) == (f"T{t:g}", s, m)  # surrogate and MC not swapped
    assert (got[1][1].sur_stderr, got[1][1].mc_stderr) == (1.4e-4, 4.4e-4)
    # T̂0 = 2: 1e-4 off ≤ 5e-4 passes; T̂0 = 4 (relative from here): 0.001 off is 5 % of 0.020,
    # misses 3 %; T̂0 = 5: 0.002 off is 4 %, misses.
    assert [c.within for _, c in got] == [True, False, False]
    assert got[1][1].error == pytest.approx(0.05, rel=1e-9)


class _FixedHits:
    """A stand-in sampler: each batch has ``min(size, 300)`` hits (y = 1), the rest y = 0."""

    def __init__(self):
        self.calls = []

    def sample_initial(self, spec, size, seed):
        self.calls.append((size, seed))
        y = np.zeros((size, 1))
        y[:min(size, 300)] = 1.0
        return y, y


class _NoDynamics:
    """A stand-in sampler with X_T = x0: the study's QoI of the initial law itself."""

    def sample_initial(self, spec, size, seed):
        x0 = spec.sample(size, np.random.default_rng(seed))
        return x0, x0


def _hit_fraction(y):
    return {"value": float((np.asarray(y)[:, 0] > 0.5).mean())}


def test_surrogate_qoi_weights_batches_by_their_size():
    # 2500 samples in batches 1000, 1000, 500 with 300 hits each: 900 / 2500 = 0.36 (the
    # unweighted mean of the batch fractions would be (0.3 + 0.3 + 0.6) / 3 = 0.4); binomial SE
    # sqrt(0.36 × 0.64 / 2500) = 0.0096.
    model = _FixedHits()
    law = {"kind": "uniform", "low": [0.0], "high": [1.0]}
    (got,) = surrogate_qoi(model, {"a": law}, _hit_fraction, 2500, seed=4, batch=1000).values()
    assert [size for size, _ in model.calls] == [1000, 1000, 500]
    assert got.value == pytest.approx(0.36, rel=1e-12) and got.n == 2500
    assert got.stderr == pytest.approx(0.0096, rel=1e-12)


def test_surrogate_qoi_of_a_law_does_not_depend_on_the_other_laws():
    # Law number k uses seed + k: the second law of a study at seed 5 is the first at seed 6.
    a = {"kind": "uniform", "low": [0.0], "high": [1.0]}
    b = {"kind": "uniform", "low": [0.2], "high": [1.0]}
    both = surrogate_qoi(_NoDynamics(), {"a": a, "b": b}, _hit_fraction, 3000, seed=5, batch=700)
    alone = surrogate_qoi(_NoDynamics(), {"b": b}, _hit_fraction, 3000, seed=6, batch=700)
    assert both["b"].value == alone["b"].value
    # P[U(0.2, 1) > 0.5] = 0.625 within 4 binomial SEs sqrt(p (1 − p) / 3000) ≈ 0.0088.
    assert abs(both["b"].value - 0.625) < 4 * math.sqrt(0.625 * 0.375 / 3000)
    assert abs(both["a"].value - 0.5) < 4 * math.sqrt(0.25 / 3000)


def _chi3_sf(x: float) -> float:
    """P[χ₃ > x] = erfc(x/√2) + sqrt(2/π) x exp(−x²/2) (integrate the χ₃ density by parts)."""
    return math.erfc(x / math.sqrt(2)) + math.sqrt(2 / math.pi) * x * math.exp(-x * x / 2)


@pytest.mark.parametrize("temperature", [2.0, 6.0])
def test_maxwellian_runaway_rate_matches_the_chi3_tail(temperature):
    """The rate study on a law without dynamics: P[p > p*] of the Maxwellian itself.

    v has i.i.d. N(0, σ²) components, σ² = T̂0 / (2 T̃) with the problem's T̃ = 3, p = |v| is
    σ χ₃, redrawn below p_min = 0.5: P[p > 1.75] = S(1.75/σ) / S(0.5/σ), S the χ₃ tail
    (≈ 0.0314 at T̂0 = 2, ≈ 0.395 at T̂0 = 6). Tolerance 4 binomial SEs at n = 60,000.
    """
    assert RUNAWAY_P_STAR == 1.75  # the paper's p*
    (law,) = maxwellian_laws([temperature]).values()
    sigma = math.sqrt(temperature / (2 * 3.0))
    expect = _chi3_sf(RUNAWAY_P_STAR / sigma) / _chi3_sf(0.5 / sigma)
    n = 60_000
    (got,) = surrogate_qoi(_NoDynamics(), {"T": law}, runaway_rate, n, seed=8,
                           batch=25_000).values()
    assert abs(got.value - expect) < 4 * math.sqrt(expect * (1 - expect) / n), (got, expect)
    assert got.stderr == pytest.approx(math.sqrt(got.value * (1 - got.value) / n), rel=1e-12)
