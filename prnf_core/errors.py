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


class CompileError(ConfigError):
    """``torch.compile`` could not compile a problem's simulation step (``compile=True`` with
    ``compile_fallback=False``, as datasets run it); the message starts with ``compile:``."""


class DatasetMismatchError(ConfigError):
    """An existing store was created with another configuration."""


class IncompleteDatasetError(PrnfError):
    """A store is missing chunks; re-run the simulation to fill them."""


class InsufficientDiskSpaceError(PrnfError, OSError):
    """A store's estimated size exceeds the free space of its filesystem; nothing was written."""

    def __init__(self, path: str, needed: int, free: int, checked: str) -> None:
        self.path, self.needed, self.free, self.checked = path, needed, free, checked
        super().__init__(
            f"output: not enough disk space for {path}: writing it needs up to "
            f"{format_bytes(needed)} ({needed} bytes, uncompressed upper bound) but the "
            f"filesystem of {checked} has {format_bytes(free)} ({free} bytes) free. Free space, "
            "choose another output path, or simulate fewer particles or in float32."
        )

    def __reduce__(self):  # picklable (Prefect and Dask may copy exceptions) with all fields
        return (InsufficientDiskSpaceError, (self.path, self.needed, self.free, self.checked))


def format_bytes(n: int) -> str:
    """``n`` bytes in decimal units for messages, e.g. ``480 TB``."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            break
        value /= 1000
    return f"{value:.3g} {unit}"


class CorruptChunkError(PrnfError):
    """Stored chunks fail verification (unreadable, or not the bytes written); repair re-simulates
    them. ``faults`` maps each chunk index to what is wrong with it."""

    def __init__(self, path: str, faults: dict[int, str]) -> None:
        self.path, self.faults, self.chunks = path, dict(faults), sorted(faults)
        shown = "; ".join(f"chunk {i}: {faults[i]}" for i in self.chunks[:5])
        more = f"; and {len(self.chunks) - 5} more" if len(self.chunks) > 5 else ""
        super().__init__(
            f"dataset {path}: {len(self.chunks)} corrupt chunk(s) {self.chunks} ({shown}{more}); "
            f"run `prnf repair {path}` to re-simulate them"
        )

    def __reduce__(self):  # picklable across Dask workers with all fields
        return (CorruptChunkError, (self.path, self.faults))


class StoreLockedError(PrnfError):
    """Another run holds the writer lock of a dataset store."""

    def __init__(self, path: str, holder: dict, waited: float) -> None:
        self.path, self.holder, self.waited = path, dict(holder), waited
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
               f"started {holder.get('started', '?')}") if holder else "a run just starting"
        after = f" (waited {waited:g} s)" if waited else ""
        # An object-store lock is a lease (prnf_core.objectstore): no kernel drops it when its
        # holder dies, so say when it lapses.
        lease = (f" Its lock is a lease renewed while it runs: if that run was killed, the lock "
                 f"lapses {holder['ttl']:g} s after its last renewal and a re-run then resumes."
                 if isinstance(holder.get("ttl"), int | float) else "")
        super().__init__(
            f"output: {path} is being written by another run ({who}){after}; two runs must not "
            "write one dataset at once. Wait for it to finish (a re-run then only verifies the "
            f"store), or stop it and re-run to resume.{lease}"
        )

    def __reduce__(self):
        return (StoreLockedError, (self.path, self.holder, self.waited))
