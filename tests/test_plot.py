"""clrfast.plot: values drawn, momentum axis, output file, missing matplotlib."""

import math
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import clrfast as clr  # noqa: E402
from clrfast.plotting import plot  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def triangular(t, base, top, step):
    # The Keras/TF-Addons form of the triangular policy, independent of the core's formula.
    cycle = math.floor(1 + t / (2 * step))
    x = abs(t / step - 2 * cycle + 1)
    return base + (top - base) * max(0.0, 1 - x)


def test_plot_draws_the_schedule_and_writes_a_png(tmp_path):
    s = clr.Cyclic(0.1, 1.0, step_size_up=5)
    path = tmp_path / "lr.png"
    fig = clr.plot(s, 23, path=str(path))
    assert path.read_bytes()[:8] == PNG
    assert len(fig.axes) == 1  # no momentum defined, no second axis
    (line,) = fig.axes[0].get_lines()
    np.testing.assert_array_equal(line.get_xdata(), np.arange(23))
    np.testing.assert_allclose(line.get_ydata(), [triangular(t, 0.1, 1.0, 5) for t in range(23)], rtol=1e-14)


def test_momentum_goes_on_a_second_axis():
    s = clr.OneCycle(max_lr=1.0, total_steps=100)
    fig = plot(s, np.arange(0, 100, 10))
    assert len(fig.axes) == 2
    lr_line = fig.axes[0].get_lines()[0]
    mom_line = fig.axes[1].get_lines()[0]
    np.testing.assert_array_equal(lr_line.get_xdata(), np.arange(0, 100, 10))
    # OneCycle starts at max_lr/div_factor with max_momentum and peaks at step pct*T - 1 = 29.
    assert lr_line.get_ydata()[0] == pytest.approx(1.0 / 25, rel=1e-15)
    assert mom_line.get_ydata()[0] == pytest.approx(0.95, rel=1e-15)
    assert fig.axes[1].get_ylabel() == "momentum"
    assert len(plot(s, 10, momentum=False).axes) == 1


def test_plot_into_existing_axes_with_options(tmp_path):
    from clrfast.plotting import new_figure

    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    out = plot(clr.RangeSweep(1e-5, 1.0, 50), 50, ax=ax, logy=True, title="sweep", label="range")
    assert out is fig and ax.get_yscale() == "log" and ax.get_title() == "sweep"
    y = ax.get_lines()[0].get_ydata()
    assert y[0] == pytest.approx(1e-5, rel=1e-14) and y[-1] == pytest.approx(1.0, rel=1e-14)
    path = tmp_path / "sweep.svg"
    fig.savefig(path)
    assert b"<svg" in path.read_bytes()[:400]


@pytest.mark.parametrize(
    "steps, exc",
    [(0, ValueError), (True, TypeError), (np.array([0.5, 1.5]), TypeError), (np.zeros((2, 2), dtype=int), TypeError)],
)
def test_bad_steps(steps, exc):
    with pytest.raises(exc, match="steps"):
        plot(clr.Constant(0.1), steps)


def test_not_a_schedule():
    with pytest.raises(TypeError, match="schedule must be a clrfast schedule"):
        plot(lambda t: 0.1, 10)


def test_missing_matplotlib_gives_the_install_line(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'clrfast\[plot\]'"):
        clr.plot(clr.Constant(0.1), 10)
