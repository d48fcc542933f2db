"""Validation figures: real PNG files of the expected size, drawing the data they are given."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.path import Path
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import gaussian_filter

from prnf_core import plots
from prnf_core.plots import (
    plot_heatmap,
    plot_marginals_1d,
    plot_marginals_2d,
    plot_qoi_vs_param,
    plot_training_curves,
    plot_validation_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_BYTES = 10_000  # a blank figure of this size compresses to ~3 KB; curves and text add more


def assert_png(path, min_bytes: int = MIN_BYTES) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes, len(data)


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    mc = rng.normal(size=(3000, 3))
    sur = rng.normal(size=(3000, 3)) * [1.0, 1.2, 1.0] + [0.2, 0.0, 0.0]
    return sur, mc


def test_marginals_1d(samples, tmp_path):
    sur, mc = samples
    out = plot_marginals_1d(sur, mc, tmp_path / "sub" / "m1.png", coord_names=["x", "y", "z"],
                            title="law A")
    assert out == tmp_path / "sub" / "m1.png"
    assert_png(out)
    # 3 panels of 4.2 x 3.4 inches at plots.DPI: the image has exactly that many pixels.
    img = imread(out)
    assert img.shape[:2] == (round(3.4 * plots.DPI), round(3 * 4.2 * plots.DPI))
    assert img.shape[2] in (3, 4)
    # Not a blank canvas: many distinct colours.
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 50


def test_marginals_2d(samples, tmp_path):
    sur, mc = samples
    assert_png(plot_marginals_2d(sur, mc, tmp_path / "m2.png", coord_names=["x", "y", "z"]))
    assert_png(plot_marginals_2d(sur[:, :2], mc[:, :2], tmp_path / "m2b.png", smooth=0))
    with pytest.raises(ValueError, match="at least 2"):
        plot_marginals_2d(sur[:, :1], mc[:, :1], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="same dimension"):
        plot_marginals_2d(sur, mc[:, :2], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="coord_names"):
        plot_marginals_1d(sur, mc, tmp_path / "bad.png", coord_names=["a"])


def test_training_curves(tmp_path):
    history = [{"epoch": i, "nll": 2 / (i + 1) - 0.5, "val_nll": 2.1 / (i + 1) - 0.5,
                "rev": 0.1 / (i + 1) ** 2, "val_rev": 0.12 / (i + 1) ** 2, "lr": 1e-3}
               for i in range(25)]
    assert_png(plot_training_curves(history, tmp_path / "tc.png", title="run 1"))
    # An exact flow (rev identically 0) without epoch numbers still plots.
    nsf = [{"nll": 1.0 / (i + 1), "val_nll": 1.1 / (i + 1), "rev": 0.0, "val_rev": 0.0}
           for i in range(5)]
    assert_png(plot_training_curves(nsf, tmp_path / "tc_nsf.png"))
    with pytest.raises(ValueError, match="empty"):
        plot_training_curves([], tmp_path / "x.png")


def test_qoi_vs_param(tmp_path):
    t0 = np.arange(1.0, 11.0)
    mc = 0.01 * t0**1.5
    out = plot_qoi_vs_param(t0[::-1], (mc * 1.05)[::-1], mc[::-1], tmp_path / "q.png",
                            sur_err=(mc * 0.03)[::-1], mc_err=(mc * 0.03)[::-1], xlabel="T0",
                            ylabel="runaway rate", logy=True)
    assert_png(out)
    assert_png(plot_qoi_vs_param([1, 2, 3], [0.1, 0.2, 0.3], [0.1, 0.2, 0.31],
                                 tmp_path / "q2.png"), min_bytes=5_000)
    with pytest.raises(ValueError, match="equal lengths"):
        plot_qoi_vs_param([1, 2], [1], [1, 2], tmp_path / "bad.png")


# -- the data each figure draws ----------------------------------------------------------------
# The plotting functions return the PNG's path; the Figure they built is captured where it is
# saved (matplotlib's public Figure.savefig), and its artists are compared with what the inputs
# imply, so swapped surrogate/MC data, wrong bins, unsorted x or wrong error bars fail.


@pytest.fixture
def drawn(monkeypatch):
    """The figures saved during the test, in order."""
    figures: list[Figure] = []
    save = Figure.savefig

    def capture(self, *args, **kwargs):
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    return figures


def pooled_edges(a: np.ndarray, b: np.ndarray, bins: int, tail: float) -> np.ndarray:
    """The documented bins: pooled [tail, 1 - tail] quantiles padded by 5 %, ``bins`` equal."""
    lo, hi = np.quantile(np.concatenate([a, b]), [tail, 1 - tail])
    pad = 0.05 * (hi - lo)
    return np.linspace(lo - pad, hi + pad, bins + 1)


def step_histogram(polygon) -> tuple[np.ndarray, np.ndarray]:
    """(edges, heights) of a ``histtype='step'`` outline (e0,0),(e0,h0),(e1,h0),…,(en,0)."""
    xy = polygon.get_xy()
    return np.append(xy[1:-1:2, 0], xy[-1, 0]), xy[1:-1:2, 1]


@pytest.fixture(scope="module")
def unlike():
    """Surrogate and MC samples that differ in size, location and scale per coordinate."""
    rng = np.random.default_rng(7)
    mc = rng.normal(size=(3000, 2)) * [1.0, 0.5]
    sur = rng.normal(size=(2001, 2)) * [1.5, 0.5] + [1.0, -0.4]
    sur[5, 1] = np.nan  # a non-finite row is dropped: 2000 surrogate samples drawn
    return sur, mc


def test_marginals_1d_draws_the_density_histograms_of_each_sample(unlike, drawn, tmp_path):
    sur, mc = unlike
    finite = sur[np.isfinite(sur).all(axis=1)]
    plot_marginals_1d(sur, mc, tmp_path / "m1.png", coord_names=["p", "xi"], bins=40)
    (fig,) = drawn
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_xlabel() for ax in axes] == ["p", "xi"]
    for i, ax in enumerate(axes):
        edges = pooled_edges(finite[:, i], mc[:, i], 40, tail=0.001)
        expect_mc = np.histogram(mc[:, i], edges, density=True)[0]
        expect_sur = np.histogram(finite[:, i], edges, density=True)[0]
        (bars,) = ax.containers  # the filled MC histogram
        assert bars.patches[0].get_label() == "Monte Carlo (n=3000)"  # hist labels patch 0
        np.testing.assert_allclose([r.get_height() for r in bars], expect_mc, rtol=1e-12)
        np.testing.assert_allclose([r.get_x() for r in bars], edges[:-1], rtol=1e-12,
                                   atol=1e-12)
        steps = {p.get_label(): p for p in ax.patches if p not in bars.patches}
        sur_edges, sur_heights = step_histogram(steps["surrogate (n=2000)"])
        np.testing.assert_allclose(sur_edges, edges, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sur_heights, expect_sur, rtol=1e-12)
        (mc_outline,) = (p for label, p in steps.items() if not str(label).startswith("surrogate"))
        np.testing.assert_allclose(step_histogram(mc_outline)[1], expect_mc, rtol=1e-12)
        # The two samples differ on purpose: the test would notice them swapped.
        assert np.abs(expect_mc - expect_sur).max() > 0.1


def mass_levels(h: np.ndarray, masses) -> list[float]:
    """Smallest density t whose super-level set {h ≥ t} holds at least each mass fraction."""
    flat = np.sort(h.ravel())[::-1]
    cum = np.cumsum(flat) / flat.sum()
    return sorted({float(flat[np.argmax(cum >= q)]) for q in masses})


def test_marginals_2d_contours_trace_each_samples_mass_levels(unlike, drawn, tmp_path):
    sur, mc = unlike
    finite = sur[np.isfinite(sur).all(axis=1)]
    bins, smooth, masses = 30, 1.0, (0.5, 0.8, 0.95)
    plot_marginals_2d(sur, mc, tmp_path / "m2.png", bins=bins, smooth=smooth, masses=masses)
    (fig,) = drawn
    (ax,) = (a for a in fig.axes if a.get_visible() and a.collections)
    ex = pooled_edges(finite[:, 0], mc[:, 0], bins, tail=0.005)
    ey = pooled_edges(finite[:, 1], mc[:, 1], bins, tail=0.005)
    cx, cy = (ex[1:] + ex[:-1]) / 2, (ey[1:] + ey[:-1]) / 2

    def density(x):
        return gaussian_filter(np.histogram2d(x[:, 0], x[:, 1], bins=(ex, ey), density=True)[0],
                               smooth)

    h_mc, h_sur = density(mc), density(finite)
    levels = mass_levels(h_mc, masses)
    assert len(levels) == 3
    filled, mc_lines, sur_lines = ax.collections
    np.testing.assert_allclose(filled.levels[:-1], levels, rtol=1e-12)
    np.testing.assert_allclose(mc_lines.levels, levels, rtol=1e-12)
    np.testing.assert_allclose(sur_lines.levels, levels, rtol=1e-12)  # the MC's levels
    # Every vertex of a level-L line lies where that sample's (linearly interpolated) density
    # is L: the MC lines on the MC histogram, the surrogate lines on the surrogate's.
    for lines, h, other in ((mc_lines, h_mc, h_sur), (sur_lines, h_sur, h_mc)):
        here = RegularGridInterpolator((cx, cy), h)
        there = RegularGridInterpolator((cx, cy), other)
        off_other = 0.0
        for level, path in zip(lines.levels, lines.get_paths(), strict=True):
            vertices = path.vertices[path.codes != Path.CLOSEPOLY]
            assert len(vertices) > 3
            np.testing.assert_allclose(here(vertices), level, rtol=1e-9)
            off_other = max(off_other, float(np.abs(there(vertices) - level).max() / level))
        assert off_other > 0.2  # the other sample's density is far from L there


def test_training_curves_draw_each_series_against_the_epoch(drawn, tmp_path):
    history = [{"epoch": 10 + i, "nll": 2 / (i + 1) - 0.5, "val_nll": 2.1 / (i + 1) - 0.4,
                "rev": 0.1 / (i + 1) ** 2, "val_rev": 0.12 / (i + 1) ** 2} for i in range(8)]
    plot_training_curves(history, tmp_path / "tc.png")
    ax_nll, ax_rev = drawn[0].axes
    epochs = [h["epoch"] for h in history]
    for ax, key in ((ax_nll, "nll"), (ax_rev, "rev")):
        lines = {line.get_label(): line.get_xydata() for line in ax.lines}
        assert set(lines) == {"train", "validation"}
        np.testing.assert_array_equal(lines["train"], [[e, h[key]] for e, h in
                                                       zip(epochs, history, strict=True)])
        np.testing.assert_array_equal(lines["validation"], [[e, h[f"val_{key}"]] for e, h in
                                                            zip(epochs, history, strict=True)])
    assert ax_nll.get_yscale() == "linear"  # the NLL goes negative
    assert ax_rev.get_yscale() == "log"
    # An exact flow: rev identically 0 is stated, not drawn; no epochs: x is 0, 1, 2, ...
    nsf = [{"nll": 1.0 / (i + 1), "val_nll": 1.1 / (i + 1), "rev": 0.0, "val_rev": 0.0}
           for i in range(5)]
    plot_training_curves(nsf, tmp_path / "nsf.png")
    ax_nll, ax_rev = drawn[1].axes
    np.testing.assert_array_equal(ax_nll.lines[0].get_xydata(),
                                  [[i, 1.0 / (i + 1)] for i in range(5)])
    assert not ax_rev.lines and "no non-zero 'rev' values" in [t.get_text() for t in ax_rev.texts]


def test_qoi_vs_param_draws_sorted_values_and_n_sigma_error_bars(drawn, tmp_path):
    x = np.array([4.0, 1.0, 3.0, 2.0])
    sur, mc = np.array([0.40, 0.10, 0.33, 0.21]), np.array([0.38, 0.11, 0.30, 0.20])
    sur_se, mc_se = np.array([0.04, 0.01, 0.03, 0.02]), np.array([0.004, 0.001, 0.003, 0.002])
    plot_qoi_vs_param(x, sur, mc, tmp_path / "q.png", sur_err=sur_se, mc_err=mc_se, logy=True)
    (ax,) = drawn[0].axes
    order = np.argsort(x)
    bars = {c.get_label(): c for c in ax.containers}
    assert set(bars) == {"Monte Carlo", "surrogate"}
    for label, y, se in (("Monte Carlo", mc, mc_se), ("surrogate", sur, sur_se)):
        line, _, (segments,) = bars[label]
        np.testing.assert_allclose(line.get_xydata(), np.column_stack([x[order], y[order]]))
        np.testing.assert_allclose(  # ±2 SE (the default n_sigma) around each point
            segments.get_segments(),
            [[[xi, yi - 2 * s], [xi, yi + 2 * s]] for xi, yi, s in
             zip(x[order], y[order], se[order], strict=True)], rtol=1e-12)
    assert ax.get_yscale() == "log"


def test_validation_curves_draw_one_line_per_run(drawn, tmp_path):
    histories = {"λ = 0": [{"epoch": e + 1, "val_nll": 3.0 - e} for e in range(4)],
                 "λ = 100": [{"epoch": e + 1, "val_nll": 2.0 + e, "val_rev": 0.5 / (e + 1)}
                             for e in range(3)]}
    plot_validation_curves(histories, tmp_path / "v.png", key="val_rev")
    plot_validation_curves(histories, tmp_path / "n.png")
    rev = {line.get_label(): line.get_xydata() for line in drawn[0].axes[0].lines}
    np.testing.assert_array_equal(rev["λ = 100"], [[1, 0.5], [2, 0.25], [3, 0.5 / 3]])
    assert np.isnan(rev["λ = 0"][:, 1]).all()  # a run without the key draws nothing
    nll = {line.get_label(): line.get_xydata() for line in drawn[1].axes[0].lines}
    np.testing.assert_array_equal(nll["λ = 0"], [[1, 3], [2, 2], [3, 1], [4, 0]])
    np.testing.assert_array_equal(nll["λ = 100"], [[1, 2], [2, 3], [3, 4]])
    assert drawn[1].axes[0].get_yscale() == "linear"  # a value of 0 is not positive


def test_heatmap_puts_values_i_j_at_x_i_y_j(drawn, tmp_path):
    values = np.arange(12.0).reshape(4, 3) ** 1.5  # values[i, j], 4 x centres, 3 y centres
    xs, ys = [0.0, 1.0, 2.0, 3.0], [10.0, 20.0, 30.0]
    plot_heatmap(values, xs, ys, tmp_path / "h.png", marks=[(1.0, 20.0), (3.0, 10.0)])
    ax = next(a for a in drawn[0].axes if a.get_label() != "<colorbar>")
    mesh, marks = ax.collections
    corners = mesh.get_coordinates()  # (ny + 1, nx + 1, 2) cell corners
    centres_x = (corners[0, 1:, 0] + corners[0, :-1, 0]) / 2
    centres_y = (corners[1:, 0, 1] + corners[:-1, 0, 1]) / 2
    np.testing.assert_allclose(centres_x, xs)
    np.testing.assert_allclose(centres_y, ys)
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(3, 4), values.T)
    np.testing.assert_array_equal(marks.get_offsets(), [[1.0, 20.0], [3.0, 10.0]])
