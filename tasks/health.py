r"""Champion health: the champion scored again on fresh Monte Carlo, one MLflow run series.

A health check (``flows/health.py``) validates the champion of a registered model on test sets
simulated with a *fresh* seed and compares each law's metrics with the ones recorded at its
registration (the version's tags ``val/<law>/<metric>`` and ``val/<law>/<metric>_stderr``).

**The series.** Every check of a registered model logs one point to the *same* MLflow run
(:func:`health_run`: tags ``prnf.step = health`` and ``prnf.model = <name>`` in the problem's
experiment, created by the first check), at ``step = number of points logged before``
(:func:`next_point`) and the wall-clock time, so the run's metric charts show the champion's
quality over time with exactly one point per check. The run is ended after each point
(FINISHED, or FAILED when that check found a degradation: the run list shows the last verdict)
and a later check logs to it again: MLflow accepts metrics on an ended run.

**Degradation** (:func:`degradations`): for each law and metric (``kl``, ``sw_ratio``), lower is
better, and the metric is degraded when

.. math::
    m_\text{now} - m_\text{base} > n_\text{se}\sqrt{\mathrm{SE}_\text{now}^2
    + \mathrm{SE}_\text{base}^2 + 2\,(s\,m_\text{base})^2}

where ``s`` (``spread``) is a relative spread of the metric *between test sets* that its SE does
not contain: 0 for the exact KL (its SE comes from its own draws, independent of the MC sets),
:data:`SW_RATIO_SPREAD` for the SW ratio, whose bootstrap SE holds the MC sets fixed
(:func:`prnf_core.validation.noise_floor_ratio`) while its noise floor, the denominator, changes
with every fresh MC set (a relative spread of about 0.2-0.3 for a perfect sampler, its docstring
table). Without that term a healthy champion would be flagged on many nights by the floor alone.
With ``spread = 0`` the rule is the plain combined-SE test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient

from tasks import tracking

HEALTH_RUN_NAME = "champion-health"
HEALTH_STEP = "health"
#: The metric whose history counts the points of a series (its value is the point's index).
POINT_METRIC = "health.point"
#: The metrics compared with the registration, per law.
METRICS = ("kl", "sw_ratio")
#: Without any standard error on either side, a metric is degraded beyond this relative change.
RELATIVE_TOLERANCE = 0.25
#: Relative spread of a SW ratio between independent MC test sets (module doc).
SW_RATIO_SPREAD = 0.25
DEFAULT_SPREAD: Mapping[str, float] = {"kl": 0.0, "sw_ratio": SW_RATIO_SPREAD}


class ChampionDegradedError(RuntimeError):
    """The champion of ``model`` degraded beyond noise, or now fails the gate; the message names
    every degraded metric or gate failure. The ``prnf`` commands exit with :attr:`exit_code`
    on it: neither bad input (2) nor a crash (1)."""

    exit_code = 3

    def __init__(self, model: str, version: str, problems: Sequence[str]) -> None:
        self.model, self.version, self.problems = model, str(version), list(problems)
        super().__init__(f"champion {model} v{version} degraded: " + "; ".join(self.problems))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its own signature (Prefect)
        return type(self), (self.model, self.version, self.problems)


@dataclass(frozen=True)
class Check:
    """One metric of one law: its value at registration and now, the limit, the verdict."""

    key: str  # val/<law>/<metric>
    base: float
    base_se: float
    now: float
    now_se: float
    limit: float

    @property
    def degraded(self) -> bool:
        return not self.now <= self.limit  # NaN now is degraded

    def describe(self) -> str:
        base = f"{self.base:.3g}"
        if math.isfinite(self.base_se) and self.base_se > 0:
            base += f" ± {self.base_se:.2g}"
        return (f"{self.key}: {self.now:.3g} now vs {base} at registration "
                f"(limit {self.limit:.3g})")

    def as_row(self) -> dict[str, Any]:
        return {"metric": self.key, "baseline": self.base, "baseline_se": self.base_se,
                "now": self.now, "now_se": self.now_se, "limit": self.limit,
                "degraded": self.degraded}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _se(value: Any) -> float:
    """A standard error, 0 when missing, NaN or infinite (it then adds nothing)."""
    se = _number(value)
    return se if math.isfinite(se) and se > 0 else 0.0


def checks(baseline: Mapping[str, Any], now: Mapping[str, float], n_se: float,
           spread: Mapping[str, float] | None = None) -> list[Check]:
    """A :class:`Check` for every ``val/<law>/<metric>`` (metric in :data:`METRICS`) present in
    both ``baseline`` (a version's tags: strings) and ``now`` (a validation's flat metrics), in
    the order of ``now``. A baseline that is not a finite number is skipped (nothing to compare
    with). ``spread``: the relative between-test-set spread per metric (module doc; default
    :data:`DEFAULT_SPREAD`).

    When neither side has a standard error and the spread is 0, the limit is the baseline plus
    :data:`RELATIVE_TOLERANCE` of it: without an error bar, no statement "beyond noise" can be
    made, and a limit of the baseline itself would flag every night that is a little worse by
    chance; 25 % still catches the failures that matter (a broken model is worse many times
    over), and the gate's absolute thresholds apply on top.
    """
    spread = DEFAULT_SPREAD if spread is None else spread
    out = []
    for key, value in now.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "val" or parts[2] not in METRICS:
            continue
        if key not in baseline:
            continue
        base = _number(baseline[key])
        if not math.isfinite(base):
            continue
        base_se = _se(baseline.get(f"{key}_stderr"))
        now_se = _se(now.get(f"{key}_stderr"))
        between = float(spread.get(parts[2], 0.0)) * abs(base)
        combined = math.sqrt(now_se ** 2 + base_se ** 2 + 2 * between ** 2)
        margin = n_se * combined if combined > 0 else RELATIVE_TOLERANCE * abs(base)
        limit = base + margin
        out.append(Check(key, base, _number(baseline.get(f"{key}_stderr")), _number(value),
                         _number(now.get(f"{key}_stderr")), limit))
    return out


def degradations(baseline: Mapping[str, str], now: Mapping[str, float], n_se: float,
                 spread: Mapping[str, float] | None = None) -> list[str]:
    """One human-readable line per degraded metric (:func:`checks`), e.g. ``"val/gaussian/kl:
    0.41 now vs 0.012 ± 0.003 at registration (limit 0.021)"``; empty when healthy."""
    return [c.describe() for c in checks(baseline, now, n_se, spread) if c.degraded]


def markdown_table(rows: Sequence[Check]) -> str:
    """The checks as a markdown table: metric, baseline, now, limit, status."""
    lines = ["| metric | baseline | now | limit | status |", "|---|---|---|---|---|"]
    for c in rows:
        base = f"{c.base:.4g}" + (f" ± {c.base_se:.2g}" if math.isfinite(c.base_se) else "")
        now = f"{c.now:.4g}" + (f" ± {c.now_se:.2g}" if math.isfinite(c.now_se) else "")
        lines.append(f"| {c.key} | {base} | {now} | {c.limit:.4g} | "
                     f"{'**DEGRADED**' if c.degraded else 'ok'} |")
    return "\n".join(lines) + "\n"


def health_run(client: MlflowClient, experiment_id: str, model_name: str) -> str:
    """The id of the one MLflow run of ``model_name``'s health series (tags ``prnf.step =
    health``, ``prnf.model = <name>``) in ``experiment_id``, created if absent. Should two
    first checks have raced, the earliest run is the series."""
    query = (f"tags.`prnf.step` = '{HEALTH_STEP}' and "
             f"tags.`prnf.model` = '{model_name.replace(chr(39), '')}'")
    runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"],
                              max_results=1)
    if runs:
        return runs[0].info.run_id
    tags = {"prnf.step": HEALTH_STEP, **tracking.owner_tags(), "prnf.model": model_name}
    return client.create_run(experiment_id, run_name=HEALTH_RUN_NAME, tags=tags).info.run_id


def next_point(client: MlflowClient, run_id: str) -> int:
    """The step of the next point: how many points the series holds already."""
    return len(client.get_metric_history(run_id, POINT_METRIC))


def log_point(client: MlflowClient, run_id: str, point: int, metrics: Mapping[str, float],
              tags: Mapping[str, Any], degraded: bool) -> None:
    """Log one check at ``step = point`` (``metrics`` plus :data:`POINT_METRIC`), set the
    run's tags of the last check, and end the run FINISHED, or FAILED when ``degraded``."""
    tracking.log_metrics(client, run_id, {**metrics, POINT_METRIC: float(point)}, step=point)
    tracking.set_tags(client, run_id, tags)
    client.set_terminated(run_id, "FAILED" if degraded else "FINISHED")
