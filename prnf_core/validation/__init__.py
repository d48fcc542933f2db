r"""Validation of a surrogate's samples of :math:`X_T` against Monte Carlo (MC) references and
exact laws. One module per concept, each with its maths, reference and an example:

====================  ============================================================================
module                what it computes
====================  ============================================================================
``distances``         energy distance (Székely & Rizzo 2013), sliced Wasserstein (Bonneel et al.
                      2015) and its bootstrap
``noise_floor``       a distance to MC in units of the MC-vs-MC distance (:func:`noise_floor_ratio`)
``c2st``              the classifier two-sample test (Lopez-Paz & Oquab 2017)
``moments``           moment and quantile errors with standard errors
``kl``                exact KL for problems with an exact transition density, sampler check
``cost``              cost and the break-even number of initial distributions
``report``            :func:`validate_samples`, the report, its metrics and markdown, :func:`fmt`
====================  ============================================================================

Below the package, used by it and by the problems: :mod:`prnf_core.arrays` (the one array
checker, :func:`as_2d`, and the shared input helpers) and :mod:`prnf_core.qoi` (generic
quantities of interest, binomial probabilities and their comparison; problems declare theirs in
``SDE.qois``). Every public name is importable from here:

>>> from prnf_core.validation import noise_floor_ratio, validate_samples
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> mc_a, mc_b, sur = (rng.normal(size=(500, 2)) for _ in range(3))
>>> r = validate_samples("runaway2d", np.abs(sur) + 0.5, np.abs(mc_a) + 0.5, np.abs(mc_b) + 0.5,
...                      c2st=False)
>>> r.coord_names, r.qoi.name  # the problem's coordinates and its declared QoI
(('p', 'xi'), 'runaway_rate')
"""

from prnf_core.arrays import DEFAULT_MAX_N, as_2d, torch_threads
from prnf_core.qoi import (
    QoIComparison,
    QoIFunction,
    binomial_qoi,
    compare_qoi,
    exceedance_probability,
    region_probability,
)
from prnf_core.validation.c2st import C2STResult, classifier_two_sample_test
from prnf_core.validation.cost import break_even, cost_summary
from prnf_core.validation.distances import (
    energy_distance,
    random_directions,
    sliced_wasserstein,
    sliced_wasserstein_bootstrap,
)
from prnf_core.validation.kl import (
    KLEstimate,
    SampleCheck,
    exact_kl,
    exact_mixture_log_prob,
    exact_sample_check,
    sample_exact,
)
from prnf_core.validation.moments import (
    QUANTILE_LEVELS,
    MomentQuantileErrors,
    moment_quantile_errors,
    quantile_label,
)
from prnf_core.validation.noise_floor import NoiseFloor, noise_floor_ratio
from prnf_core.validation.report import (
    DistributionValidation,
    ValidationReport,
    fmt,
    metric_key,
    validate_samples,
)

__all__ = [
    "DEFAULT_MAX_N",
    "QUANTILE_LEVELS",
    "C2STResult",
    "DistributionValidation",
    "KLEstimate",
    "MomentQuantileErrors",
    "NoiseFloor",
    "QoIComparison",
    "QoIFunction",
    "SampleCheck",
    "ValidationReport",
    "as_2d",
    "binomial_qoi",
    "break_even",
    "classifier_two_sample_test",
    "compare_qoi",
    "cost_summary",
    "energy_distance",
    "exact_kl",
    "exact_mixture_log_prob",
    "exact_sample_check",
    "exceedance_probability",
    "fmt",
    "metric_key",
    "moment_quantile_errors",
    "noise_floor_ratio",
    "quantile_label",
    "random_directions",
    "region_probability",
    "sample_exact",
    "sliced_wasserstein",
    "sliced_wasserstein_bootstrap",
    "torch_threads",
    "validate_samples",
]
