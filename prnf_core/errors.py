"""Exceptions users can catch; each message names the offending field or location."""

from __future__ import annotations


class PrnfError(Exception):
    """Base class of prnf's own errors."""


class ConfigError(PrnfError, ValueError):
    """Bad configuration or input; the message starts with the field name."""


class NonFiniteStateError(PrnfError, FloatingPointError):
    """A simulation produced NaN or inf; nothing of the affected chunk is stored."""

    def __init__(self, problem: str, step: int, t: float, n_bad: int, n_total: int,
                 chunk: int | None = None) -> None:
        self.problem, self.step, self.t = problem, step, t
        self.n_bad, self.n_total, self.chunk = n_bad, n_total, chunk
        where = f"chunk {chunk}, " if chunk is not None else ""
        super().__init__(
            f"problem {problem!r}: non-finite state at {where}step {step} (t={t:.6g}): "
            f"{n_bad} of {n_total} particles are NaN/inf. Check the coefficients or reduce dt."
        )

    def in_chunk(self, chunk: int) -> NonFiniteStateError:
        return NonFiniteStateError(self.problem, self.step, self.t, self.n_bad, self.n_total, chunk)

    def __reduce__(self):  # picklable across Dask workers with all fields
        return (NonFiniteStateError,
                (self.problem, self.step, self.t, self.n_bad, self.n_total, self.chunk))


class DatasetMismatchError(ConfigError):
    """An existing store was created with another configuration."""


class IncompleteDatasetError(PrnfError):
    """A store is missing chunks; re-run the simulation to fill them."""
