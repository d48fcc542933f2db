"""Validation figures are written as real, non-trivial PNG files of the expected size."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from prnf_core import plots
from prnf_core.plots import (
    plot_marginals_1d,
    plot_marginals_2d,
    plot_qoi_vs_param,
    plot_training_curves,
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
