r"""Classifier two-sample test (C2ST): can a small network tell surrogate from MC samples?

:func:`classifier_two_sample_test` (D. Lopez-Paz, M. Oquab, "Revisiting classifier two-sample
tests", ICLR 2017): the held-out accuracy of a small MLP trained to tell surrogate from MC;
0.5 means indistinguishable, a binomial null (exact or conservative) gives the bound.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> far = classifier_two_sample_test(rng.normal(size=(400, 2)) + 3.0, rng.normal(size=(400, 2)),
...                                  epochs=5)
>>> far.accuracy > far.null_high, far.n_test
(True, 400)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from prnf_core.arrays import DEFAULT_MAX_N, ArrayLike, as_samples, balance, torch_threads


@dataclass(frozen=True)
class C2STResult:
    """Held-out accuracy of a surrogate-vs-MC classifier and its binomial null."""

    accuracy: float
    stderr: float  # sqrt(acc (1 - acc) / n_test)
    n_test: int
    n_train: int
    null_low: float  # exact binomial central (1 - alpha) range of the accuracy under H0
    null_high: float
    p_value: float  # P[Binomial(n_test, 1/2) >= correct], one-sided
    chance: float = 0.5

    @property
    def null_std(self) -> float:
        return 0.5 / math.sqrt(self.n_test)

    @property
    def indistinguishable(self) -> bool:
        return self.accuracy <= self.null_high


def classifier_two_sample_test(sur: ArrayLike, mc: ArrayLike, seed: int = 0, *,
                               test_fraction: float = 0.5, hidden: int = 64, epochs: int = 20,
                               batch_size: int = 256, lr: float = 3e-3,
                               weight_decay: float = 1e-4, max_n: int | None = DEFAULT_MAX_N,
                               alpha: float = 0.05, num_threads: int | None = 1) -> C2STResult:
    r"""Classifier two-sample test (Lopez-Paz & Oquab 2017) of surrogate vs MC samples.

    1. Balance: both sets are subsampled (without replacement, from ``seed``) to
       :math:`n = \min(|\text{sur}|, |\text{mc}|, \text{max\_n})` rows, so chance accuracy is
       exactly 1/2. Labels: surrogate 1, MC 0.
    2. Split: a stratified random ``test_fraction`` of each class is held out.
    3. Classifier: MLP d → ``hidden`` → ``hidden`` → 1 (SiLU), on coordinates standardized
       with the training split's mean and std; Adam (``lr``, ``weight_decay``), binary
       cross-entropy, ``epochs`` passes of minibatches of ``batch_size``; weights and batch
       order fixed by ``seed``.
    4. Held-out accuracy of the rule "predict surrogate iff P > 1/2".

    Null distribution: under H0 (same law) the held-out points are i.i.d. whatever their label,
    so given the trained classifier, which calls a point "surrogate" with some probability π,
    the number of correct predictions is Binomial(k, π) + Binomial(k, 1 − π) with k = n_test/2
    per class: mean n_test/2 and variance 2kπ(1 − π) ≤ n_test/4. The Binomial(n_test, 1/2)
    law used here is therefore exact when π = 1/2 and conservative otherwise. ``null_low`` /
    ``null_high`` is its central 1 − ``alpha`` range divided by n_test
    (≈ 0.5 ± 1.96·0.5/√n_test for ``alpha=0.05``), ``p_value`` the one-sided binomial p-value of
    the observed count, ``stderr`` the binomial standard error
    :math:`\sqrt{\hat a(1-\hat a)/n_{test}}` of the observed accuracy. An accuracy above
    ``null_high`` means the classifier tells the samples apart; how far above measures how
    easily (1.0: perfectly separable).

    The network is tiny, so it trains on ``num_threads`` torch threads (default 1; the
    process-wide setting is restored afterwards, ``None`` leaves it alone): more threads only add
    synchronization (measured times: ``benchmarks/README.md``).
    """
    sur, mc = as_samples(sur=sur, mc=mc)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    sur, mc = balance(sur, mc, max_n, rng)
    n = len(sur)
    n_test_each = min(max(1, round(test_fraction * n)), n - 1)
    if n_test_each < 1:
        raise ValueError(f"need at least 2 samples of each kind, got {n}")
    perm_s, perm_m = rng.permutation(n), rng.permutation(n)
    x_test = np.concatenate([sur[perm_s[:n_test_each]], mc[perm_m[:n_test_each]]])
    x_train = np.concatenate([sur[perm_s[n_test_each:]], mc[perm_m[n_test_each:]]])
    y_test = np.repeat([1.0, 0.0], n_test_each)
    y_train = np.repeat([1.0, 0.0], n - n_test_each)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def to_t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32)

    xt, yt = to_t((x_train - mean) / std), to_t(y_train)
    xv = to_t((x_test - mean) / std)
    torch_seed = int(rng.integers(2**62))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        d = xt.shape[1]
        net = torch.nn.Sequential(
            torch.nn.Linear(d, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(), torch.nn.Linear(hidden, 1),
        )
    gen = torch.Generator().manual_seed(torch_seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    with torch_threads(num_threads):
        for _ in range(epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for start in range(0, len(xt), batch_size):
                idx = perm[start:start + batch_size]
                opt.zero_grad(set_to_none=True)
                loss_fn(net(xt[idx]).squeeze(1), yt[idx]).backward()
                opt.step()
        with torch.no_grad():
            pred = (net(xv).squeeze(1) > 0).numpy()
    n_test = len(y_test)
    correct = int((pred == (y_test > 0.5)).sum())
    acc = correct / n_test
    null = stats.binom(n_test, 0.5)
    return C2STResult(
        accuracy=acc, stderr=math.sqrt(acc * (1 - acc) / n_test), n_test=n_test,
        n_train=len(y_train),
        null_low=float(null.ppf(alpha / 2)) / n_test,
        null_high=float(null.isf(alpha / 2)) / n_test,
        p_value=float(null.sf(correct - 1)),
    )


__all__ = ["C2STResult", "classifier_two_sample_test"]
