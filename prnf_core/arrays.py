"""Input handling shared by the validation modules and the figures: the one array checker.

Every metric takes samples as an ``(n, d)`` array, a 1-D array (read as ``(n, 1)``), a nested
sequence or a torch tensor, and turns them into a float64 numpy array with :func:`as_2d`, which
also decides what happens to non-finite rows (refuse them, keep them, or drop them).

>>> import numpy as np
>>> as_2d([1.0, 2.0], "x").shape
(2, 1)
>>> as_2d([[1.0, np.nan], [2.0, 3.0]], "x", nonfinite="drop")
array([[2., 3.]])
>>> as_2d([[1.0, np.nan]], "x")
Traceback (most recent call last):
...
ValueError: x: contains NaN or inf
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch

ArrayLike = np.ndarray | Sequence[Sequence[float]] | Sequence[float] | torch.Tensor
DEFAULT_MAX_N = 20_000
"""Default cap on the rows each metric uses (larger sets are subsampled, deterministically)."""


def as_2d(x: ArrayLike, name: str,
          nonfinite: Literal["raise", "keep", "drop"] = "raise") -> np.ndarray:
    """``x`` as a non-empty float64 ``(n, d)`` array (a 1-D input becomes one column).

    ``nonfinite``: ``"raise"`` refuses NaN or inf (``ValueError`` naming ``name``), ``"keep"``
    leaves them in, ``"drop"`` removes the rows that hold one (the result may then be empty).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name}: need a non-empty (n, d) array, got shape {arr.shape}")
    if nonfinite == "drop":
        return arr[np.isfinite(arr).all(axis=1)]
    if nonfinite == "raise" and not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def check_same_dim(*arrays: tuple[str, np.ndarray]) -> None:
    """Raise unless the named ``(n, d)`` arrays share one dimension d."""
    dims = {name: a.shape[1] for name, a in arrays}
    if len(set(dims.values())) != 1:
        raise ValueError(f"samples must have the same dimension d, got {dims}")


def as_samples(**named: ArrayLike) -> list[np.ndarray]:
    """Every named sample set through :func:`as_2d` (in order), then checked to share one
    dimension (:func:`check_same_dim`).

    >>> [x.shape for x in as_samples(a=[1.0, 2.0], b=[[3.0]])]
    [(2, 1), (1, 1)]
    """
    arrays = [(name, as_2d(x, name)) for name, x in named.items()]
    check_same_dim(*arrays)
    return [a for _, a in arrays]


def subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``x`` without replacement (``x`` itself when it has at most ``n``)."""
    if len(x) <= n:
        return x
    return x[np.sort(rng.choice(len(x), size=n, replace=False))]


def balance(a: np.ndarray, b: np.ndarray, max_n: int | None,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r"""``a`` and ``b`` subsampled (:func:`subsample`, ``a`` first) to one common size
    :math:`\min(|a|, |b|, \text{max\_n})` (``max_n=None``: no cap)."""
    n = min(len(a), len(b), max_n or len(a))
    return subsample(a, n, rng), subsample(b, n, rng)


def resolve_coord_names(names: Sequence[str] | None, dim: int) -> tuple[str, ...]:
    """``names`` as a tuple of ``dim`` strings; ``None``: ``x0, x1, ...``."""
    if names is None:
        return tuple(f"x{i}" for i in range(dim))
    if len(names) != dim:
        raise ValueError(f"coord_names needs {dim} names, got {list(names)}")
    return tuple(str(n) for n in names)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` torch intra-op threads, then restore the setting.

    ``None`` leaves the setting alone. The setting is process-wide: torch work in other threads
    of the process is affected while the block runs.
    """
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["DEFAULT_MAX_N", "ArrayLike", "as_2d", "as_samples", "balance", "check_same_dim",
           "resolve_coord_names", "subsample", "torch_threads"]
