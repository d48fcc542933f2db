r"""Validation of a surrogate's samples of :math:`X_T` against Monte Carlo (MC) references: all
the numbers for one test initial distribution (:func:`validate_samples`), the report over several
(:class:`ValidationReport`), its MLflow metrics and its markdown.

For one test initial distribution :math:`p_0` the inputs are the surrogate samples ``sur`` and
*two independent* MC sets ``mc_a`` and ``mc_b`` of the same law (e.g. two halves of the
reference simulation). :func:`validate_samples` computes the energy and sliced-Wasserstein
noise-floor ratios (:mod:`~prnf_core.validation.noise_floor`; Székely & Rizzo 2013, Bonneel et
al. 2015), the classifier two-sample test (:mod:`~prnf_core.validation.c2st`; Lopez-Paz &
Oquab 2017), the moment and quantile errors (:mod:`~prnf_core.validation.moments`) and the
problem's quantity of interest (:mod:`~prnf_core.qoi`). Every number is plain
numpy/torch; the MLflow and Prefect layers only log what
:meth:`ValidationReport.as_flat_metrics` returns.

Example (two samples of one law, a shifted surrogate):

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> mc_a, mc_b = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
>>> good, bad = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2)) + [0.5, 0.0]
>>> r_good = validate_samples(None, good, mc_a, mc_b, law="same", seed=0)
>>> r_bad = validate_samples(None, bad, mc_a, mc_b, law="shifted", seed=0)
>>> bool(r_good.energy.ratio < 2.0), bool(r_bad.energy.ratio > 10.0)
(True, True)
>>> bool(r_bad.c2st.accuracy > r_bad.c2st.null_high)
True
>>> report = ValidationReport(problem="toy", results=[r_good, r_bad])
>>> sorted(k for k in report.as_flat_metrics() if k.endswith("energy_ratio"))
['val/same/energy_ratio', 'val/shifted/energy_ratio']
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from prnf_core.arrays import (
    DEFAULT_MAX_N,
    ArrayLike,
    as_2d,
    check_same_dim,
    resolve_coord_names,
)
from prnf_core.problems import default_problem
from prnf_core.qoi import QoIComparison, compare_qoi
from prnf_core.sde import QoIFunction
from prnf_core.validation.c2st import C2STResult, classifier_two_sample_test
from prnf_core.validation.moments import MomentQuantileErrors, moment_quantile_errors
from prnf_core.validation.noise_floor import NoiseFloor, noise_floor_ratio


@dataclass(frozen=True)
class DistributionValidation:
    """Every validation number for one test initial distribution (``law``)."""

    law: str
    coord_names: tuple[str, ...]
    n_sur: int
    n_mc_a: int
    n_mc_b: int
    energy: NoiseFloor
    sliced_w: NoiseFloor
    c2st: C2STResult | None
    moments: MomentQuantileErrors
    qoi: QoIComparison | None = None
    param: float | None = None
    n_sur_nonfinite: int = 0

    def flat_metrics(self) -> dict[str, float]:
        """This law's metrics, keys relative to ``val/<law>/``."""
        out: dict[str, float] = {
            "n_sur": self.n_sur, "n_mc": self.n_mc_a + self.n_mc_b,
            "nonfinite_frac": self.n_sur_nonfinite / (self.n_sur + self.n_sur_nonfinite),
        }
        for key, nf in (("energy", self.energy), ("sw", self.sliced_w)):
            out[key], out[f"{key}_floor"], out[f"{key}_ratio"] = nf.value, nf.floor, nf.ratio
        if math.isfinite(self.sliced_w.ratio_stderr):
            out["sw_ratio_stderr"] = self.sliced_w.ratio_stderr
        if self.c2st is not None:
            out.update({"c2st_acc": self.c2st.accuracy, "c2st_stderr": self.c2st.stderr,
                        "c2st_null_high": self.c2st.null_high,
                        "c2st_pvalue": self.c2st.p_value})
        if self.qoi is not None:
            q = self.qoi
            out.update({f"{q.name}_sur": q.sur, f"{q.name}_sur_stderr": q.sur_stderr,
                        f"{q.name}_mc": q.mc, f"{q.name}_mc_stderr": q.mc_stderr,
                        f"{q.name}_z": q.z})
        for stat, coord, _, diff, se in self.moments.rows():
            out[f"{stat}_diff/{coord}"] = diff
            out[f"{stat}_diff_se/{coord}"] = se
        out["moments_max_abs_z"] = self.moments.max_abs_z()
        if self.param is not None:
            out["param"] = self.param
        return {k: float(v) for k, v in out.items()}


_METRIC_SAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(name: str) -> str:
    """``name`` with characters MLflow rejects in metric keys replaced by ``_``."""
    return _METRIC_SAFE.sub("_", name)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def fmt(value: float | None, digits: int = 3, missing: str = "-") -> str:
    """A number for a table: ``digits`` significant digits; ``missing`` for ``None``.

    >>> fmt(3.14159), fmt(2.0e-7, 2), fmt(float("inf")), fmt(None), fmt(None, missing="–")
    ('3.14', '2e-07', 'inf', '-', '–')
    """
    return missing if value is None else f"{value:.{digits}g}"


@dataclass
class ValidationReport:
    """Validation results of one surrogate on several test initial distributions."""

    problem: str
    results: list[DistributionValidation] = field(default_factory=list)
    cost: dict[str, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, result: DistributionValidation) -> None:
        if any(r.law == result.law for r in self.results):
            raise ValueError(f"law {result.law!r} is already in the report")
        self.results.append(result)

    def as_flat_metrics(self) -> dict[str, float]:
        """``{"val/<law>/<metric>": float}`` for MLflow (law names made key-safe), plus
        ``cost/<name>`` when a cost summary is attached."""
        out: dict[str, float] = {}
        for r in self.results:
            law = metric_key(r.law)
            out.update({f"val/{law}/{k}": v for k, v in r.flat_metrics().items()})
        for k, v in (self.cost or {}).items():
            out[f"cost/{metric_key(k)}"] = float(v)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able nested dict (arrays as lists) for an artifact."""

        def plain(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [plain(x) for x in v]
            if isinstance(v, np.generic):
                return v.item()
            return v

        return plain({"problem": self.problem, "results": [asdict(r) for r in self.results],
                      "cost": self.cost, "meta": self.meta})

    def to_markdown(self) -> str:
        """A summary table (one row per law), the moment/quantile table and the cost table."""
        lines = [f"# Validation: {_cell(self.problem)}", "",
                 "Ratios: distance to MC divided by the MC-vs-MC noise floor (≈ 1: "
                 "indistinguishable at this sample size). C2ST: held-out accuracy of a "
                 "surrogate-vs-MC classifier (0.5: indistinguishable; null range in brackets).",
                 ""]
        qoi_names = sorted({r.qoi.name for r in self.results if r.qoi is not None})
        head = ["law", "param", "n_sur", "n_mc", "energy", "energy floor", "energy ratio",
                "SW", "SW floor", "SW ratio", "C2ST acc", "C2ST null"]
        for q in qoi_names:
            head += [f"{q} (surrogate)", f"{q} (MC)", f"{q} z"]
        head.append("moments max abs z")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.results:
            row = [_cell(r.law), fmt(r.param, missing="–"), str(r.n_sur), str(r.n_mc_a + r.n_mc_b),
                   fmt(r.energy.value), fmt(r.energy.floor), fmt(r.energy.ratio, 2),
                   fmt(r.sliced_w.value), fmt(r.sliced_w.floor), _sw_ratio_cell(r.sliced_w)]
            if r.c2st is not None:
                row += [f"{r.c2st.accuracy:.3f} ± {r.c2st.stderr:.3f}",
                        f"[{r.c2st.null_low:.3f}, {r.c2st.null_high:.3f}]"]
            else:
                row += ["–", "–"]
            for q in qoi_names:
                if r.qoi is not None and r.qoi.name == q:
                    row += [f"{fmt(r.qoi.sur, 4)} ± {fmt(r.qoi.sur_stderr, 2)}",
                            f"{fmt(r.qoi.mc, 4)} ± {fmt(r.qoi.mc_stderr, 2)}",
                            fmt(r.qoi.z, 2)]
                else:
                    row += ["–", "–", "–"]
            row.append(fmt(r.moments.max_abs_z(), 2))
            lines.append("| " + " | ".join(row) + " |")
        if self.results:
            lines += ["", "## Moments and quantiles (surrogate − MC, ± SE of the difference)", ""]
            stats_ = [s for s, c, *_ in self.results[0].moments.rows()
                      if c == self.results[0].coord_names[0]]
            lines += ["| law | coordinate | " + " | ".join(stats_) + " |",
                      "|" + "---|" * (len(stats_) + 2)]
            for r in self.results:
                table: dict[str, dict[str, str]] = {}
                for s, c, _, d, e in r.moments.rows():
                    table.setdefault(c, {})[s] = f"{fmt(d)} ± {fmt(e, 2)}"
                for c in r.coord_names:
                    lines.append(f"| {_cell(r.law)} | {_cell(c)} | "
                                 + " | ".join(table[c].get(s, "–") for s in stats_) + " |")
        if self.cost:
            lines += ["", "## Cost", "", "| quantity | value |", "|---|---|"]
            lines += [f"| {_cell(k)} | {fmt(v, 4)} |" for k, v in self.cost.items()]
        return "\n".join(lines) + "\n"


def _sw_ratio_cell(nf: NoiseFloor) -> str:
    if math.isfinite(nf.ratio_stderr):
        return f"{fmt(nf.ratio, 3)} ± {fmt(nf.ratio_stderr, 2)}"
    return fmt(nf.ratio, 2)


def validate_samples(problem: str | None, sur_samples: ArrayLike, mc_a: ArrayLike,
                     mc_b: ArrayLike, *, law: str = "test",
                     coord_names: Sequence[str] | None = None, param: float | None = None,
                     seed: int = 0, max_n: int | None = DEFAULT_MAX_N,
                     n_projections: int = 128, standardize: bool = True, c2st: bool = True,
                     c2st_options: Mapping[str, Any] | None = None,
                     qoi: QoIFunction | None = None, bootstrap: int = 0
                     ) -> DistributionValidation:
    r"""All validation numbers for one test initial distribution.

    Args:
        problem: Registered problem name: selects the QoI (the problem's first declared one,
            ``SDE.primary_qoi``) and the coordinate
            names; ``None`` or an unknown name: no QoI, names ``x0, x1, ...``.
        sur_samples: Surrogate samples of :math:`X_T`, (n, d). Non-finite rows (a failure of
            the surrogate) are dropped and counted in ``n_sur_nonfinite``.
        mc_a, mc_b: Two independent MC sets of the same law (finite).
        law: Name of the test distribution (a key of the report and of the metric names).
        param: The distribution's parameter, if any (e.g. the temperature), for plots.
        standardize: Compute the distances after z-scoring every set with ``mc_a``'s
            per-coordinate mean and standard deviation, so coordinates in different units
            weigh alike (the C2ST standardizes on its own).
        qoi: Overrides the registry's QoI function.
        bootstrap: Resamples for the standard error of the sliced-Wasserstein ratio
            (:func:`noise_floor_ratio`); 0: none.

    What is computed: energy and sliced-W₂ noise-floor ratios
    (:func:`noise_floor_ratio`: sur vs ``mc_a``, floor ``mc_b`` vs ``mc_a``); the C2ST of the
    surrogate against the pooled MC set (``mc_a`` ∪ ``mc_b``); moment/quantile errors and the
    QoI against the pooled MC set (the more precise reference). Seeds of the parts derive from
    ``seed``.
    """
    sur = as_2d(sur_samples, "sur_samples", nonfinite="keep")
    a, b = as_2d(mc_a, "mc_a"), as_2d(mc_b, "mc_b")
    check_same_dim(("sur_samples", sur), ("mc_a", a), ("mc_b", b))
    finite = np.isfinite(sur).all(axis=1)
    n_bad = int((~finite).sum())
    sur = sur[finite]
    if len(sur) < 2:
        raise ValueError(f"sur_samples: fewer than 2 finite rows (of {len(finite)})")
    sde = default_problem(problem) if coord_names is None or qoi is None else None
    if coord_names is None and sde is not None and len(sde.coord_names) == sur.shape[1]:
        coord_names = sde.coord_names
    names = resolve_coord_names(coord_names, sur.shape[1])
    s_energy, s_sw, s_c2st = (int(s.generate_state(1)[0])
                              for s in np.random.SeedSequence(seed).spawn(3))
    if standardize:
        loc, scale = a.mean(axis=0), a.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        zs, za, zb = ((x - loc) / scale for x in (sur, a, b))
    else:
        zs, za, zb = sur, a, b
    energy = noise_floor_ratio(zs, za, zb, "energy", seed=s_energy, max_n=max_n)
    sw = noise_floor_ratio(zs, za, zb, "sliced_wasserstein", seed=s_sw, max_n=max_n,
                           n_projections=n_projections, bootstrap=bootstrap)
    pooled = np.concatenate([a, b])
    c2st_result = (classifier_two_sample_test(sur, pooled, s_c2st, max_n=max_n,
                                              **dict(c2st_options or {})) if c2st else None)
    moments = moment_quantile_errors(sur, pooled, coord_names=names)
    qoi_fn = qoi if qoi is not None or sde is None else sde.primary_qoi
    qoi_result = compare_qoi(qoi_fn, sur, pooled) if qoi_fn is not None else None
    return DistributionValidation(
        law=law, coord_names=names, n_sur=len(sur), n_mc_a=len(a), n_mc_b=len(b),
        energy=energy, sliced_w=sw, c2st=c2st_result, moments=moments, qoi=qoi_result,
        param=None if param is None else float(param), n_sur_nonfinite=n_bad,
    )


__all__ = ["DistributionValidation", "ValidationReport", "fmt", "metric_key", "validate_samples"]
