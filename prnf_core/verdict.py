r"""The verdict on a surrogate: one gate rule, noise-aware promotion, configuration fingerprints.

**Gate** (:func:`judge`). A surrogate passes only if the samples its users get agree with fresh
Monte Carlo: for every test law, the sliced-Wasserstein ratio of its samples to the MC noise
floor (:func:`prnf_core.validation.noise_floor_ratio`) is at most ``max_sw_ratio``; *and*, where
the problem has an exact transition density, the exact :math:`\mathrm{KL}(p_T\,\|\,q_T)` of its
density (:func:`prnf_core.validation.exact_kl`, at the horizon it was trained for) is at most
``max_kl`` for every law. A pseudo-reversible flow samples with ``g`` and evaluates densities with
``f``; checking only the density would pass a λ = 0 model whose ``g`` was never trained.

**Score.** Lower is better: the mean exact KL over the laws where there is one, else the mean
SW ratio. Its standard error combines the laws' errors: :math:`\mathrm{SE} = \sqrt{\sum_l
\mathrm{SE}_l^2}/L` (KL: the error of the mean over exact draws; SW ratio: a bootstrap of the
surrogate's samples, the MC sets held fixed).

**Promotion** (:func:`compare`). The challenger replaces the champion only if it is better by
more than ``n_se`` (default 2) combined standard errors, both scored on the *same* test sets:

.. math::
    s_\text{champion} - s_\text{challenger} > n_\text{se}\sqrt{\mathrm{SE}_\text{champion}^2
    + \mathrm{SE}_\text{challenger}^2}

so two equally good models do not swap the champion by chance.

**Fingerprint** (:class:`Fingerprint`). Champion and challenger are compared only when they
approximate the same conditional law: the same problem, resolved problem parameters, horizon T
and dimension. Models of other configurations are never scored on each other's test sets.

>>> laws = [LawScore("a", sw_ratio=Estimate(1.1, 0.1)), LawScore("b", sw_ratio=Estimate(1.3, 0.1))]
>>> verdict = judge(laws, max_sw_ratio=2.0, max_kl=0.02)
>>> verdict.passed, verdict.score_name, round(verdict.score.value, 3)
(True, 'mean_sw_ratio', 1.2)
>>> compare(Estimate(1.15, 0.05), Estimate(1.2, 0.05)).promote   # within noise: keep champion
False
>>> compare(Estimate(1.0, 0.05), Estimate(3.0, 0.2)).promote
True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_N_SE = 2.0


@dataclass(frozen=True)
class Estimate:
    """A score and its standard error (``nan`` when unknown)."""

    value: float
    stderr: float = math.nan

    def __str__(self) -> str:
        return f"{self.value:.4g} ± {self.stderr:.2g}"


@dataclass(frozen=True)
class LawScore:
    """What the gate needs from one test law."""

    law: str
    sw_ratio: Estimate
    kl: Estimate | None = None  # exact KL, only for problems with an exact transition


@dataclass(frozen=True)
class Verdict:
    """Pass/fail with every reason, and the score used for promotion."""

    passed: bool
    rule: str
    failures: tuple[str, ...]
    score: Estimate
    score_name: str


def _mean(estimates: Sequence[Estimate]) -> Estimate:
    value = sum(e.value for e in estimates) / len(estimates)
    stderr = math.sqrt(sum(e.stderr ** 2 for e in estimates)) / len(estimates)
    return Estimate(value, stderr)


def judge(laws: Sequence[LawScore], *, max_sw_ratio: float, max_kl: float) -> Verdict:
    """Apply the gate rule (module doc) to the scores of every test law.

    Exact-KL checks apply when every law carries a KL, which is the case exactly when the
    problem has an exact transition; a mix is an error of the caller.
    """
    if not laws:
        raise ValueError("laws: the gate needs at least one test law")
    with_kl = [law.kl is not None for law in laws]
    if any(with_kl) and not all(with_kl):
        raise ValueError("laws: either every law has an exact KL or none has")
    exact = all(with_kl)
    failures = []
    for law in laws:
        if not law.sw_ratio.value <= max_sw_ratio:  # NaN fails too
            failures.append(f"{law.law}: SW ratio {law.sw_ratio.value:.3g} > {max_sw_ratio}")
        if exact and not law.kl.value <= max_kl:
            failures.append(f"{law.law}: exact KL {law.kl.value:.3g} > {max_kl}")
    rule = f"sliced-Wasserstein ratio of the samples to the MC floor <= {max_sw_ratio}"
    if exact:
        rule += f" and exact KL at the trained horizon <= {max_kl}"
    rule += " for every law"
    if exact:
        score, name = _mean([law.kl for law in laws]), "mean_kl"
    else:
        score, name = _mean([law.sw_ratio for law in laws]), "mean_sw_ratio"
    return Verdict(not failures, rule, tuple(failures), score, name)


@dataclass(frozen=True)
class Comparison:
    """Whether a challenger that passed the gate replaces the champion, and why."""

    promote: bool
    margin: float  # champion score - challenger score (> 0: challenger looks better)
    required: float  # n_se combined standard errors
    decision: str


def compare(challenger: Estimate, champion: Estimate, n_se: float = DEFAULT_N_SE) -> Comparison:
    """Promote only when the challenger is better by more than ``n_se`` combined SEs.

    An unknown (``nan``) standard error counts as infinite: without an error bar, no claim of
    being better is made.
    """
    margin = champion.value - challenger.value
    combined = math.sqrt(challenger.stderr ** 2 + champion.stderr ** 2)
    required = n_se * combined if math.isfinite(combined) else math.inf
    promote = margin > required
    verb = "beats" if promote else "does not beat"
    decision = (f"{verb} the champion by more than {n_se:g} combined SEs: margin {margin:.3g} "
                f"{'>' if promote else '<='} {required:.3g} (challenger {challenger}, "
                f"champion {champion})")
    return Comparison(promote, margin, required, decision)


@dataclass(frozen=True)
class Fingerprint:
    """What makes two surrogates comparable: they approximate the same ``p(X_T | X_0)``, or,
    conditioned, the same :math:`p(X_t | X_0; θ)` over the same (t, θ) box (``conditioning``:
    the box as :meth:`Conditioning.model_dump <prnf_core.models.Conditioning>` gives it; left
    out of :meth:`as_dict` when None, so an unconditioned model's digest is what it was)."""

    problem: str
    problem_params: Mapping[str, Any]
    t_end: float
    dim: int
    conditioning: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"problem": self.problem, "problem_params": dict(self.problem_params),
               "t_end": float(self.t_end), "dim": int(self.dim)}
        if self.conditioning is not None:
            out["conditioning"] = json.loads(json.dumps(self.conditioning))  # tuples as lists
        return out

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def differences(self, other: Fingerprint) -> list[str]:
        """``field: mine != theirs`` for every field that differs (empty: comparable)."""
        mine, theirs = self.as_dict(), other.as_dict()
        out = []
        for key in dict.fromkeys([*mine, *theirs]):  # "conditioning" may be on one side only
            if key == "problem_params":
                for name in sorted(set(mine[key]) | set(theirs[key])):
                    a, b = mine[key].get(name), theirs[key].get(name)
                    if a != b:
                        out.append(f"problem_params.{name}: {a!r} != {b!r}")
            elif mine.get(key) != theirs.get(key):
                out.append(f"{key}: {mine.get(key)!r} != {theirs.get(key)!r}")
        return out

    @classmethod
    def of(cls, problem: str, problem_params: Mapping[str, Any] | None = None,
           t_end: float | None = None, conditioning: Mapping[str, Any] | None = None
           ) -> Fingerprint:
        """The fingerprint of a problem configuration, every default resolved."""
        from prnf_core.problems import get_problem

        sde = get_problem(problem, **dict(problem_params or {}))
        return cls(problem, sde.describe()["params"],
                   float(sde.t_end if t_end is None else t_end), sde.dim, conditioning)

    @classmethod
    def of_model(cls, metadata: Mapping[str, Any]) -> Fingerprint:
        """The fingerprint of a saved model (its ``config.json``): the configuration of the
        dataset it was trained on, which records the resolved horizon."""
        try:
            data = metadata["dataset_config"]
            return cls(data["problem"], data["problem_params"], float(data["t_end"]),
                       int(metadata["model"]["dim"]), metadata["model"].get("conditioning"))
        except (KeyError, TypeError) as exc:
            from prnf_core.errors import ConfigError

            raise ConfigError(f"model: its metadata lacks {exc} needed for a configuration "
                              "fingerprint (a model saved by `prnf train` records it)") from None

    def is_default(self) -> bool:
        """Whether this is the problem's default configuration (default parameters and T)."""
        return self.digest == Fingerprint.of(self.problem).digest
