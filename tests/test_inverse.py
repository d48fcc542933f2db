"""The inverse question (prnf_core.inverse, flows/inverse.py, `prnf inverse`).

The numerical checks use a sampler that draws from the *exact* Gaussian transition of bm1d, so
the expected answers are closed forms: h(x0) = P(X_T >= a | x0) = 1 - Φ((a - x0 - μT)/(σ√T)),
and for x0 ~ N(m0, s0²) the pair (x0, X_T) is jointly Gaussian, so P(R) and E[x0 | X_T >= a]
are known (the inverse Mills ratio). Tolerances: 4 standard errors of each estimate.
"""

from __future__ import annotations

import json
import math

import numpy as np
import prefect.main  # noqa: F401  (the flows' Prefect imports, before the CLI)
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from flows.cli import app
from prnf_core.errors import ConfigError
from prnf_core.inverse import Region, grid_points, hit_map, hit_probability, posterior
from prnf_core.problems import get_problem
from tests.tiny_models import save_tiny_bm1d_model

BM = get_problem("bm1d")
A = 0.6  # the region X_T >= A
K_SE = 4.0


class ExactBm1d:
    """Duck-typed surrogate: samples the exact bm1d transition, shifted by ``bias``."""

    dim, conditioning, device = 1, None, "cpu"

    def __init__(self, bias: float = 0.0):
        self.bias = bias

    def sample(self, x0, generator=None):
        x0 = torch.as_tensor(np.asarray(x0, dtype=np.float64))
        mu, sigma, t = BM.params["mu"], BM.params["sigma"], BM.t_end
        z = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        return x0 + mu * t + self.bias + sigma * math.sqrt(t) * z


def exact_h(x0: np.ndarray) -> np.ndarray:
    mu, sigma, t = BM.params["mu"], BM.params["sigma"], BM.t_end
    return stats.norm.sf((A - x0 - mu * t) / (sigma * math.sqrt(t)))


def test_region_of_a_name_and_of_a_box():
    runaway = Region.of("runaway", get_problem("runaway2d"))
    assert runaway.bounds == {"p": (1.75, None)} and runaway.name == "runaway"
    box = Region.of({"x": [0, math.pi], "z": [2 * math.pi, None]}, get_problem("abc3d"))
    y = np.array([[1.0, 9.0, 7.0], [4.0, 0.0, 7.0], [1.0, 0.0, 1.0]])
    assert box.contains(y, ("x", "y", "z")).tolist() == [True, False, False]
    assert "x" in box.describe() and "z ≥" in box.describe()


@pytest.mark.parametrize(("spec", "words"), [
    ("nowhere", ["'nowhere'", "declared: ['runaway']"]),
    ({"q": [0, 1]}, ["region.q", "['p', 'xi']"]),
    ({"p": [2.0, 1.0]}, ["region.p", "low 2.0 > high 1.0"]),
    ({"p": [1.0]}, ["region.p", "[low, high]"]),
    ({}, ["non-empty mapping"]),
])
def test_bad_regions_are_named(spec, words):
    with pytest.raises(ConfigError) as err:
        Region.of(spec, get_problem("runaway2d"))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_hit_probability_matches_the_exact_transition():
    x0 = np.linspace(BM.domain[0][0], BM.domain[1][0], 21)[:, None]
    draws = 4000
    region = Region.of({"x": [A, None]}, BM)
    prob, se = hit_probability(ExactBm1d(), x0, region, BM.coord_names, draws, seed=1)
    truth = exact_h(x0[:, 0])
    bound = K_SE * np.sqrt(truth * (1 - truth) / draws) + 1e-12
    assert np.all(np.abs(prob - truth) <= bound), np.c_[prob, truth, bound]
    assert np.allclose(se, np.sqrt(prob * (1 - prob) / draws))
    # the check can fail: a sampler biased by 0.2 (a fifth of σ√T) is far outside the bound
    biased, _ = hit_probability(ExactBm1d(bias=0.2), x0, region, BM.coord_names, draws, seed=1)
    assert np.any(np.abs(biased - truth) > bound)


def test_hit_map_grid_and_slices():
    abc = get_problem("abc3d")
    axes, grid, fixed, x0 = grid_points(abc, ("x", "z"), {"y": 1.0}, resolution=4)
    assert axes == ("x", "z") and fixed == {"y": 1.0} and x0.shape == (16, 3)
    assert np.all(x0[:, 1] == 1.0) and np.allclose(x0[:4, 2], grid[1])  # C order: z fastest
    hits = hit_map(ExactBm1d(), BM, {"x": [A, None]}, resolution=5, draws=50)
    assert hits.probability.shape == hits.stderr.shape == (5,) and hits.axes == ("x",)
    for bad, field in ((("x", "q"), "axes"), (("x", "y", "z"), "axes")):
        with pytest.raises(ConfigError, match=field):
            grid_points(abc, bad)
    with pytest.raises(ConfigError, match="fixed"):
        grid_points(abc, ("x", "z"), {"x": 1.0})


def test_posterior_matches_the_closed_form():
    """x0 ~ N(m0, s0²): X_T ~ N(m0 + μT, s0² + σ²T); with α = (A - E X_T)/sd(X_T),
    P(R) = 1 - Φ(α) and E[x0 | R] = m0 + s0²/sd(X_T) · φ(α)/(1 - Φ(α))."""
    m0, s0 = 0.2, 0.5
    mu, sigma, t = BM.params["mu"], BM.params["sigma"], BM.t_end
    sd = math.sqrt(s0**2 + sigma**2 * t)
    alpha = (A - m0 - mu * t) / sd
    p_true = stats.norm.sf(alpha)
    mean_true = m0 + s0**2 / sd * stats.norm.pdf(alpha) / p_true
    law = {"kind": "gaussian", "mean": [m0], "std": [s0]}
    post = posterior(ExactBm1d(), BM, {"x": [A, None]}, law, n=40_000, draws=4, seed=3)
    assert abs(post.probability - p_true) <= K_SE * post.stderr, (post.probability, p_true)
    w, x = post.weights, post.x0[:, 0]
    mean_w = float(np.sum(w * x) / np.sum(w))
    # delta-method SE of the self-normalized mean: sqrt(Σ w²(x - mean)²) / Σ w
    se_w = math.sqrt(float(np.sum(w**2 * (x - mean_w) ** 2))) / float(np.sum(w))
    assert abs(mean_w - mean_true) <= K_SE * se_w, (mean_w, mean_true, se_w)
    resampled_se = math.hypot(se_w, float(x.std()) / math.sqrt(len(post.samples)))
    assert abs(post.samples[:, 0].mean() - mean_true) <= K_SE * resampled_se
    assert 0 < post.ess <= len(x)


def test_posterior_refuses_an_unreachable_region():
    with pytest.raises(ConfigError, match="none of 100 x 2 surrogate samples reached"):
        posterior(ExactBm1d(), BM, {"x": [1e6, None]}, {"kind": "gaussian", "mean": [0.0],
                                                         "std": [0.1]}, n=100, draws=2)


runner = CliRunner()


def test_cli_writes_the_map_and_posterior(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path))
    model = save_tiny_bm1d_model(tmp_path / "model")
    args = ["inverse", "--model", model, "--region", "{x: [0.5, null]}", "--initial",
            '{"kind": "gaussian", "mean": [0.0], "std": [0.5]}', "--resolution", "7",
            "--draws", "100", "--out", str(tmp_path / "inv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "inv"
    arrays = np.load(out / "inverse.npz")
    assert arrays["probability"].shape == (7,) and arrays["grid_x"].shape == (7,)
    assert np.all((arrays["probability"] >= 0) & (arrays["probability"] <= 1))
    assert arrays["posterior_x0"].shape == (20_000, 1)
    meta = json.loads((out / "inverse.json").read_text())
    assert meta["region"]["bounds"] == {"x": [0.5, None]}
    assert {p.name for p in out.iterdir()} >= {"hit_map.png", "posterior.png", "report.md"}
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "exists" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    foreign = runner.invoke(app, [*args[:-1], str(tmp_path / "other"), "--overwrite"])
    assert foreign.exit_code == 2 and "not a prnf inverse output" in foreign.output
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(("option", "words"), [
    (["--region", "runaway"], ["'runaway'", "not a region of problem 'bm1d'"]),
    (["--region", "{y: [0, 1]}"], ["region.y", "['x']"]),
    (["--region", "{x: [0, 1]}", "--axes", "q"], ["axes"]),
])
def test_cli_bad_input_exits_2_naming_the_field(prefect_harness, tmp_path, monkeypatch, option,
                                               words):
    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path))
    model = save_tiny_bm1d_model(tmp_path / "model")
    result = runner.invoke(app, ["inverse", "--model", model, *option, "--resolution", "3",
                                 "--draws", "5"])
    assert result.exit_code == 2, result.output
    assert all(w in result.output for w in words), result.output
    assert not (tmp_path / "inverse").exists()  # the default out, under the data root


def test_registered_model_logs_to_mlflow(prefect_harness, private_data_root, tmp_path):
    from tasks import registry, tracking
    from tasks.pyfunc import log_surrogate

    model_dir = save_tiny_bm1d_model(tmp_path / "model")
    client = tracking.configure()
    experiment = tracking.experiment_id(client, "bm1d")
    with tracking.child_run(client, experiment, "train", None) as run_id:
        uri = log_surrogate(model_dir, run_id, np.zeros((2, 1)))
    version = registry.register(client, uri, "prnf-bm1d-inverse", run_id, {})
    client.set_registered_model_alias("prnf-bm1d-inverse", registry.CHAMPION, version)
    result = runner.invoke(app, ["inverse", "--model", "models:/prnf-bm1d-inverse@champion",
                                 "--region", "{x: [0.5, null]}", "--resolution", "4",
                                 "--draws", "20", "--out", str(tmp_path / "inv")])
    assert result.exit_code == 0, result.output
    runs = client.search_runs([experiment], "tags.`prnf.step` = 'inverse'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["prnf.model"] == "prnf-bm1d-inverse"
    assert run.data.tags["prnf.model_version"] == str(version)
    assert 0 <= run.data.metrics["inverse.max_probability"] <= 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"inverse.npz", "hit_map.png", "report.md"} <= artifacts
