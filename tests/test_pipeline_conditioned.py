"""The pipeline over (t, θ): a surrogate conditioned on time and an SDE parameter (``ou1d_rate``,
exact Gaussian transition) trained from ``save_times`` + ``param_box``, validated at a grid of
(t, μ) points (MC test set and exact KL per law and point), its domain recorded in MLflow; bad
grids and boxes refused before any work; the Prefect forms of the new fields.

Tiny sizes: the point is the wiring, not the accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.config import PipelineParams
from prnf_core.errors import ConfigError

TIMES = [0.25, 0.5, 0.75, 1.0]
MU_BOX = [0.5, 2.0]
#: the default grid: t at the box's midpoint (on the dt grid) and its end, μ at 25 % and 75 %
GRID = [(0.625, 0.875), (0.625, 1.625), (1.0, 0.875), (1.0, 1.625)]
#: the grid of the pipeline runs (two points keep them fast; the default is checked above)
RUN_GRID = [(0.5, 1.25), (1.0, 1.25)]
GAUSSIAN = {"kind": "gaussian", "mean": [0.3], "std": [0.4]}


def raw(**extra) -> dict:
    return {"problem": "ou1d_rate", "n_train": 1000, "chunk_size": 1000,
            "save_times": TIMES, "param_box": {"mu": MU_BOX},
            "training": {"epochs": 2, "batch_size": 512, "lr": 3e-3},
            "model": {"hidden_width": 16},
            "validation": {"n_samples": 200, "chunk_size": 400, "bootstrap": 0,
                           "laws": {"gaussian": GAUSSIAN}},
            "execution": {"workers": 0}, **extra}


def case(t: float, mu: float) -> str:
    """The metric key of law ``gaussian`` at (t, μ): ``metric_key("gaussian@t=...,mu=...")``."""
    return f"gaussian_t_{t:g}_mu_{mu:g}"


@pytest.fixture(scope="module")
def runs(prefect_harness, private_data_root):
    from flows.pipeline import pipeline_flow

    settings = raw()
    settings["validation"] = {**settings["validation"], "max_kl": 1e3, "max_sw_ratio": 1e3,
                              "kl_samples": 500,  # a 16th of the default's cost
                              "conditions": {"times": [0.5, 1.0], "params": {"mu": [1.25]}}}
    first = pipeline_flow(PipelineParams.model_validate(settings))  # passes: the champion
    # the same data and settings again: not trained again, validated on the same grid with the
    # first version as champion (same conditioning box, so it is scored there too)
    again = pipeline_flow(PipelineParams.model_validate(settings))
    return first, again


def test_grid_metrics_for_every_law_and_point(runs):
    first, _ = runs
    metrics = first["metrics"]
    for t, mu in RUN_GRID:
        for name in ("sw_ratio", "energy_ratio", "c2st_acc", "kl"):
            assert f"val/{case(t, mu)}/{name}" in metrics, (t, mu, name)
    assert not any(k.startswith("val/gaussian/") for k in metrics)  # no unconditioned case
    kls = [metrics[f"val/{case(t, mu)}/kl"] for t, mu in RUN_GRID]
    assert all(kl == kl for kl in kls)  # finite exact KL per point
    assert first["version"] == "1" and first["promoted"]
    report = (Path(first["report_dir"]) / "report.md").read_text()
    assert "gaussian@t=0.5,mu=1.25" in report and "Exact KL(p_t || q_t)" in report


def test_champion_scored_on_the_same_grid(runs):
    first, again = runs
    assert again["duplicate_of"] == "1"
    assert again["champion_score"] == pytest.approx(first["score"])  # same box and grid
    assert set(again["metrics"]) == set(first["metrics"])


def test_conditioning_domain_and_grid_recorded_in_mlflow(runs):
    from mlflow import MlflowClient

    first, _ = runs
    client = MlflowClient(first["tracking_uri"], first["tracking_uri"])
    version = client.get_model_version(first["registered_model"], first["version"])
    tags = version.tags
    assert tags["conditioning.time"] == "[0.25, 1.0]"
    assert tags["conditioning.params.mu"] == "[0.5, 2.0]"
    assert tags["validation.grid.t"] == "[0.5, 1.0]"
    assert tags["validation.grid.mu"] == "[1.25]"
    assert tags["validation.grid"] == "t=0.5,mu=1.25; t=1,mu=1.25"
    assert f"val/{case(1.0, 1.25)}/kl" in tags and f"test_set.{case(1.0, 1.25)}" in tags
    children = client.search_runs(
        [first["experiment_id"]], f"tags.mlflow.parentRunId = '{first['run_id']}'")
    by_step = {r.data.tags["prnf.step"]: r for r in children}
    train = by_step["train"].data
    assert train.tags["conditioning.time"] == "[0.25, 1.0]"
    assert train.params["model.conditioning.params.mu"] == "[0.5, 2.0]"
    assert by_step["validate"].data.tags["validation.grid.t"] == "[0.5, 1.0]"
    parent = client.get_run(first["run_id"]).data
    assert parent.params["param_box.mu"] == "[0.5, 2.0]"
    assert parent.params["save_times"] == "[0.25, 0.5, 0.75, 1.0]"


def test_grid_outside_the_trained_model_box_is_refused(runs):
    """At run time (the model's own box, from its metadata): before any simulation."""
    from flows.pipeline import model_box
    from prnf_core.models import load_metadata

    first, _ = runs
    box = model_box(load_metadata(first["model_dir"]))  # mu in [0.5, 2.0]
    wider = raw(param_box={"mu": [0.5, 3.5]})
    wider["validation"] = {**wider["validation"], "conditions": {"params": {"mu": [3.0]}}}
    params = PipelineParams.model_validate(wider)  # fits its own box
    with pytest.raises(ConfigError, match=r"mu: 3.0 is outside .*mu in \[0.5, 2.0\]"):
        params.condition_points(box)


@pytest.mark.parametrize(("conditions", "message"), [
    ({"times": [1.5]}, r"validation.conditions: t: 1.5 is outside the trained time range "
                       r"\[0.25, 1.0\] \(the model's conditioning box: t in \[0.25, 1.0\], "
                       r"mu in \[0.5, 2.0\]\)"),
    ({"params": {"mu": [0.1]}}, r"mu: 0.1 is outside .*box: t in \[0.25, 1.0\], mu in"),
    ({"params": {"sigma": [1.0]}}, r"validation.conditions.params: \['sigma'\] not conditioned"),
    ({"times": [0.3333]}, r"validation.conditions.times: 0.3333 is not on the dt=0.005 grid"),
])
def test_bad_grid_is_refused_before_work(conditions, message):
    bad = raw()
    bad["validation"] = {**bad["validation"], "conditions": conditions}
    with pytest.raises(ValidationError, match=message):
        PipelineParams.model_validate(bad)


def test_grid_without_conditioning_is_refused():
    bad = raw(save_times=None, param_box=None)
    bad["validation"] = {**bad["validation"], "conditions": {"times": [1.0]}}
    with pytest.raises(ValidationError, match=r"validation\.conditions: the model has no "
                                              r"conditioning"):
        PipelineParams.model_validate(bad)


def test_unknown_parameter_in_param_box_names_the_allowed_ones():
    with pytest.raises(ValidationError, match=r"param_box: .*\['nu'\].*allowed: \['mu'\]"):
        PipelineParams.model_validate(raw(param_box={"nu": [0.0, 1.0]}))
    with pytest.raises(ValidationError, match=r"param_box.mu"):
        PipelineParams.model_validate(raw(param_box={"mu": [0.5]}))
    with pytest.raises(ValidationError, match=r"save_times: 0.3333 must lie in"):
        PipelineParams.model_validate(raw(save_times=[0.3333, 1.0]))


def test_default_grid_and_family_cover_the_box():
    params = PipelineParams.model_validate(raw())
    points = params.condition_points()
    assert [(p["t"], p["params"]["mu"]) for p in points] == GRID
    cases, configs, conditions = params.validation_sets(
        params.validation.resolved_laws("ou1d_rate", {}), params.surrogate_model().conditioning)
    name = "gaussian@t=0.625,mu=0.875"
    assert next(iter(cases)) == name and conditions[name] == {"t": 0.625, "params": {"mu": 0.875}}
    assert configs[name].horizon == 0.625 and configs[name].sde().params["mu"] == 0.875
    assert configs[name].step == params.training_dataset().step
    plain = PipelineParams.model_validate(raw(param_box=None))
    assert plain.training_dataset().family_id() != params.training_dataset().family_id()
    sobol = params.training_dataset()
    uniform = PipelineParams.model_validate(raw(param_design="uniform")).training_dataset()
    assert sobol.param_design == "sobol" and uniform.dataset_id() != sobol.dataset_id()
    unconditioned = PipelineParams.model_validate(raw(save_times=None, param_box=None))
    assert unconditioned.condition_points() is None
    laws = {"gaussian": params.validation.laws["gaussian"]}
    assert unconditioned.validation_sets(laws, None)[2] is None


def test_a_log_scale_parameter_reaches_the_design_the_model_and_the_grid():
    params = PipelineParams.model_validate(raw(param_scale={"mu": "log"}))
    data = params.training_dataset()
    assert data.log_params == ["mu"]
    assert data.dataset_id() != PipelineParams.model_validate(raw()).training_dataset().dataset_id()
    # 'linear' is the default: saying it changes nothing
    assert PipelineParams.model_validate(raw(param_scale={"mu": "linear"})).training_dataset(
        ).dataset_id() == PipelineParams.model_validate(raw()).training_dataset().dataset_id()
    box = params.surrogate_model().conditioning
    assert box.param_scale == {"mu": "log"}
    # the default grid sits at 25 % and 75 % of log mu: geometric, not arithmetic
    low, high = MU_BOX
    expected = sorted({low * (high / low) ** f for f in (0.25, 0.75)})
    assert sorted({p["params"]["mu"] for p in params.condition_points()}) == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"param_scale: 'sigma' is not in the parameter box; "
                                         r"allowed: \['mu'\]"):
        PipelineParams.model_validate(raw(param_scale={"sigma": "log"}))


def _fields(schema: dict, *path: str) -> dict:
    """The properties of the (nested) model at ``path`` in a Prefect parameter schema."""
    defs = schema.get("definitions") or schema.get("$defs") or {}
    node = schema
    for name in path:
        node = node["properties"][name]
        ref = node.get("$ref") or next((a["$ref"] for a in node.get("allOf", [])
                                        + node.get("anyOf", []) if "$ref" in a), None)
        node = defs[ref.rsplit("/", 1)[-1]] if ref else node
    return node["properties"]


def test_prefect_forms_describe_the_condition_fields():
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import pipeline_flow
    from flows.sample import sample_flow

    sample = _fields(parameter_schema(sample_flow).model_dump(), "params")
    for name in ("time", "sde_params", "allow_outside"):
        assert sample[name].get("description"), name
    pipeline = _fields(parameter_schema(pipeline_flow).model_dump(), "params")
    for name in ("save_times", "param_box", "param_design", "param_scale"):
        assert pipeline[name].get("description"), name
    conditions = _fields(parameter_schema(pipeline_flow).model_dump(), "params", "validation")
    assert "grid" in conditions["conditions"]["description"]
    grid = _fields(parameter_schema(pipeline_flow).model_dump(), "params", "validation",
                   "conditions")
    assert grid["times"]["description"] and grid["params"]["description"]

