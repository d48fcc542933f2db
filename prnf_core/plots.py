"""Validation figures: surrogate vs Monte Carlo marginals, training curves, QoI studies.

Every function takes arrays (or a list of dicts) and an output path, writes one PNG and returns
the path. Figures are built on :class:`matplotlib.figure.Figure` directly and rendered by the
Agg canvas, so nothing touches pyplot's global state or the interactive backend: safe in
Prefect tasks, worker threads and headless machines.

>>> import numpy as np, tempfile, pathlib
>>> from prnf_core.plots import plot_marginals_1d
>>> rng = np.random.default_rng(0)
>>> out = plot_marginals_1d(rng.normal(size=(500, 2)), rng.normal(size=(500, 2)),
...                         pathlib.Path(tempfile.mkdtemp()) / "m.png", coord_names=["p", "xi"])
>>> out.read_bytes()[:4] == b"\\x89PNG"
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.ndimage import gaussian_filter

from prnf_core.arrays import as_2d

SUR_COLOR = "tab:orange"
MC_COLOR = "tab:blue"
DPI = 110


def _names(names: Sequence[str] | None, d: int) -> list[str]:
    if names is None:
        return [f"x{i}" for i in range(d)]
    if len(names) != d:
        raise ValueError(f"coord_names needs {d} names, got {list(names)}")
    return [str(n) for n in names]


def _pair(sur: np.ndarray | Sequence, mc: np.ndarray | Sequence) -> tuple[np.ndarray, np.ndarray]:
    s, m = as_2d(sur, "sur", nonfinite="drop"), as_2d(mc, "mc", nonfinite="drop")
    if s.shape[1] != m.shape[1]:
        raise ValueError(f"sur and mc need the same dimension, got {s.shape[1]} and {m.shape[1]}")
    if len(s) == 0 or len(m) == 0:
        raise ValueError("sur and mc need at least one finite row each")
    return s, m


def _range(*cols: np.ndarray, tail: float = 0.001) -> tuple[float, float]:
    """Plot range: pooled [tail, 1 - tail] quantiles, padded 5 % (extreme outliers are cut)."""
    both = np.concatenate(cols)
    lo, hi = np.quantile(both, [tail, 1 - tail])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def plot_marginals_1d(sur: np.ndarray, mc: np.ndarray, path: str | Path, *,
                      coord_names: Sequence[str] | None = None, title: str | None = None,
                      bins: int = 60, labels: tuple[str, str] = ("surrogate", "Monte Carlo"),
                      ) -> Path:
    """One panel per coordinate: density histograms of surrogate and MC samples, same bins.

    The bins span the pooled 0.1–99.9 % quantiles (plus 5 % padding); the panel title gives the
    sample sizes once, the x labels the coordinate names.
    """
    s, m = _pair(sur, mc)
    d = s.shape[1]
    names = _names(coord_names, d)
    rows, cols = _grid(d)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i in range(d):
        ax = axes[i]
        edges = np.linspace(*_range(s[:, i], m[:, i]), bins + 1)
        ax.hist(m[:, i], bins=edges, density=True, color=MC_COLOR, alpha=0.35,
                label=f"{labels[1]} (n={len(m)})")
        ax.hist(m[:, i], bins=edges, density=True, histtype="step", color=MC_COLOR, lw=1.2)
        ax.hist(s[:, i], bins=edges, density=True, histtype="step", color=SUR_COLOR, lw=1.8,
                label=f"{labels[0]} (n={len(s)})")
        ax.set_xlabel(names[i])
        ax.set_ylabel("density")
        ax.set_title(f"marginal of {names[i]}")
        ax.legend(fontsize="small")
    for ax in axes[d:]:
        ax.set_visible(False)
    fig.suptitle(title or "1-D marginals: surrogate vs Monte Carlo")
    return _save(fig, path)


def _hist2d(x: np.ndarray, y: np.ndarray, ex: np.ndarray, ey: np.ndarray,
            smooth: float) -> np.ndarray:
    h, _, _ = np.histogram2d(x, y, bins=(ex, ey), density=True)
    return gaussian_filter(h, smooth) if smooth > 0 else h


def _mass_levels(h: np.ndarray, masses: Sequence[float]) -> list[float]:
    """Density thresholds whose super-level sets hold the given fractions of the mass of h."""
    flat = np.sort(h.ravel())[::-1]
    cum = np.cumsum(flat)
    if cum[-1] <= 0:
        return []
    cum /= cum[-1]
    levels = {float(flat[min(np.searchsorted(cum, q), len(flat) - 1)]) for q in masses}
    return sorted(v for v in levels if v > 0)


def plot_marginals_2d(sur: np.ndarray, mc: np.ndarray, path: str | Path, *,
                      coord_names: Sequence[str] | None = None, title: str | None = None,
                      bins: int = 50, smooth: float = 1.0,
                      masses: Sequence[float] = (0.5, 0.8, 0.95),
                      labels: tuple[str, str] = ("surrogate", "Monte Carlo")) -> Path:
    """One panel per coordinate pair: contours of the 2-D marginal densities, overlaid.

    Kernel-free: a ``bins × bins`` density histogram per sample on common edges, smoothed
    lightly by a Gaussian filter of ``smooth`` bins (0: raw counts). Contour levels are the
    densities whose super-level sets of the *MC* histogram hold ``masses`` of its mass
    (filled, blue), and the surrogate is drawn at the *same* levels (orange lines): where the
    surrogate is right the orange lines trace the edges of the blue bands.
    """
    s, m = _pair(sur, mc)
    d = s.shape[1]
    if d < 2:
        raise ValueError("2-D marginals need at least 2 coordinates")
    names = _names(coord_names, d)
    pairs = list(itertools.combinations(range(d), 2))
    rows, cols = _grid(len(pairs))
    fig = Figure(figsize=(4.4 * cols, 4.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (i, j) in zip(axes, pairs, strict=False):
        ex = np.linspace(*_range(s[:, i], m[:, i], tail=0.005), bins + 1)
        ey = np.linspace(*_range(s[:, j], m[:, j], tail=0.005), bins + 1)
        cx, cy = 0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1])
        hm = _hist2d(m[:, i], m[:, j], ex, ey, smooth)
        hs = _hist2d(s[:, i], s[:, j], ex, ey, smooth)
        levels = _mass_levels(hm, masses)
        if len(levels) >= 1:
            top = max(float(hm.max()), float(hs.max()), levels[-1]) * 1.01
            ax.contourf(cx, cy, hm.T, levels=[*levels, top], cmap="Blues", alpha=0.6)
            ax.contour(cx, cy, hm.T, levels=levels, colors=MC_COLOR, linewidths=0.8)
            if hs.max() > levels[0]:
                ax.contour(cx, cy, hs.T, levels=levels, colors=SUR_COLOR, linewidths=1.6)
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        ax.set_title(f"({names[i]}, {names[j]})")
        ax.legend(handles=[Line2D([], [], color=MC_COLOR, lw=4, alpha=0.6,
                                  label=f"{labels[1]} (n={len(m)})"),
                           Line2D([], [], color=SUR_COLOR, lw=1.6,
                                  label=f"{labels[0]} (n={len(s)})")],
                  fontsize="small", loc="upper right")
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    mass_txt = ", ".join(f"{100 * q:g}%" for q in masses)
    fig.suptitle(title or f"2-D marginals: surrogate vs Monte Carlo (MC mass levels {mass_txt})")
    return _save(fig, path)


def _series(history: Sequence[Mapping[str, float]], key: str) -> np.ndarray:
    return np.array([float(h.get(key, math.nan)) for h in history])


def plot_training_curves(history: Sequence[Mapping[str, float]], path: str | Path, *,
                         title: str | None = None) -> Path:
    """NLL and reversibility loss per epoch, training and validation.

    ``history``: one dict per epoch with keys ``nll``, ``rev``, ``val_nll``, ``val_rev`` (as in
    :class:`prnf_core.train.TrainResult`; ``epoch`` is used for the x axis when present). Both
    panels use a log y axis when every plotted value is positive; a conditional NLL can be
    negative (a density above 1), and then its panel is linear. A reversibility loss that is
    identically 0 (an exact flow) is stated in the panel instead of plotted.
    """
    if not history:
        raise ValueError("history is empty")
    epochs = _series(history, "epoch")
    x = epochs if np.isfinite(epochs).all() else np.arange(len(history), dtype=float)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_nll, ax_rev = fig.subplots(1, 2)
    for ax, key, name in ((ax_nll, "nll", "negative log-likelihood"),
                          (ax_rev, "rev", "reversibility  ‖g(f(y)) − y‖²")):
        plotted = []
        for k, label, style in ((key, "train", "-"), (f"val_{key}", "validation", "--")):
            y = _series(history, k)
            if np.isfinite(y).any() and np.nanmax(np.abs(y)) > 0:
                ax.plot(x, y, style, marker="." if len(x) < 40 else None, label=label)
                plotted.append(y[np.isfinite(y)])
        if plotted and all((p > 0).all() for p in plotted):
            ax.set_yscale("log")
        if not plotted:
            ax.text(0.5, 0.5, f"no non-zero '{key}' values", transform=ax.transAxes,
                    ha="center", va="center")
        else:
            ax.legend()
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title or "training curves")
    return _save(fig, path)


def plot_qoi_vs_param(x: Sequence[float], sur_values: Sequence[float],
                      mc_values: Sequence[float], path: str | Path, *,
                      sur_err: Sequence[float] | None = None,
                      mc_err: Sequence[float] | None = None, xlabel: str = "parameter",
                      ylabel: str = "quantity of interest", title: str | None = None,
                      logy: bool = False, n_sigma: float = 2.0) -> Path:
    """A quantity of interest against the initial-distribution parameter: surrogate vs MC.

    Error bars are ``n_sigma`` standard errors (default 2, about 95 %). ``logy`` uses a log
    axis (non-positive values are then not drawn).
    """
    xs = np.asarray(x, dtype=float)
    ys, ym = np.asarray(sur_values, dtype=float), np.asarray(mc_values, dtype=float)
    if not len(xs) == len(ys) == len(ym):
        raise ValueError(f"x, sur_values and mc_values need equal lengths, got "
                         f"{len(xs)}, {len(ys)}, {len(ym)}")
    order = np.argsort(xs)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()

    def err(e: Sequence[float] | None) -> np.ndarray | None:
        return None if e is None else n_sigma * np.asarray(e, dtype=float)[order]

    ax.errorbar(xs[order], ym[order], yerr=err(mc_err), fmt="o-", color=MC_COLOR, capsize=3,
                label="Monte Carlo")
    ax.errorbar(xs[order], ys[order], yerr=err(sur_err), fmt="s--", color=SUR_COLOR,
                capsize=3, mfc="none", label="surrogate")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if sur_err is not None or mc_err is not None:
        ax.text(0.99, 0.01, f"error bars: ±{n_sigma:g} SE", transform=ax.transAxes,
                ha="right", va="bottom", fontsize="small", color="0.4")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title or f"{ylabel} vs {xlabel}")
    return _save(fig, path)


def plot_validation_curves(histories: Mapping[str, Sequence[Mapping[str, float]]],
                           path: str | Path, *, key: str = "val_nll",
                           ylabel: str = "validation NLL (cross-entropy)",
                           title: str | None = None) -> Path:
    """One curve of ``key`` per epoch for each labelled training run (e.g. one per λ).

    ``histories``: label -> per-epoch dicts as in :func:`plot_training_curves`. A log y axis
    is used when every value is positive.
    """
    if not histories:
        raise ValueError("histories is empty")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    values = []
    for label, history in histories.items():
        y = _series(history, key)
        epochs = _series(history, "epoch")
        x = epochs if np.isfinite(epochs).all() else np.arange(len(y), dtype=float)
        ax.plot(x, y, label=str(label))
        values.append(y[np.isfinite(y)])
    if all(len(v) and (v > 0).all() for v in values):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title or f"{ylabel} per epoch")
    return _save(fig, path)


def plot_curve(x: Sequence[float], y: Sequence[float], path: str | Path, *,
               err: Sequence[float] | None = None, xlabel: str = "x", ylabel: str = "y",
               title: str | None = None, n_sigma: float = 2.0) -> Path:
    """One quantity against one variable, with ``n_sigma`` standard-error bars."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    yerr = None if err is None else n_sigma * np.asarray(err, dtype=float)
    ax.errorbar(np.asarray(x, dtype=float), np.asarray(y, dtype=float), yerr=yerr,
                color=SUR_COLOR, marker="o", ms=3, capsize=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_heatmap(values: np.ndarray | Sequence, x_centres: Sequence[float],
                 y_centres: Sequence[float], path: str | Path, *, xlabel: str = "x",
                 ylabel: str = "y", label: str = "value", title: str | None = None,
                 marks: Sequence[tuple[float, float]] = ()) -> Path:
    """A parameter study as a heat map: ``values[i, j]`` at ``(x_centres[i], y_centres[j])``.

    ``marks``: points to outline (e.g. where a Monte Carlo reference was computed).
    """
    v = np.asarray(values, dtype=float)
    xs, ys = np.asarray(x_centres, dtype=float), np.asarray(y_centres, dtype=float)
    if v.shape != (len(xs), len(ys)):
        raise ValueError(f"values must have shape ({len(xs)}, {len(ys)}), got {v.shape}")
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    mesh = ax.pcolormesh(xs, ys, v.T, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=label)
    if len(marks):
        m = np.asarray(marks, dtype=float)
        ax.scatter(m[:, 0], m[:, 1], s=36, facecolors="none", edgecolors="white",
                   linewidths=1.2, label="Monte Carlo reference")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or label)
    return _save(fig, path)


__all__ = ["plot_curve", "plot_heatmap", "plot_marginals_1d", "plot_marginals_2d",
           "plot_qoi_vs_param", "plot_training_curves", "plot_validation_curves"]
