"""Pictures of schedules (matplotlib, the optional ``plot`` extra).

Figures are drawn on an off-screen Agg canvas, so this works on machines
without a display and never changes pyplot's global backend.
"""

from __future__ import annotations

import os
import textwrap

import numpy as np

_MISSING = "clrfast plotting needs matplotlib; install it with: pip install 'clrfast[plot]'"


def require_matplotlib():
    """Import matplotlib's Figure and Agg canvas, or raise ImportError with the install line."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(_MISSING) from e
    return Figure, FigureCanvasAgg


def new_figure(figsize=(6.4, 3.6), dpi=100):
    """A Figure attached to an Agg canvas (no pyplot state involved)."""
    Figure, FigureCanvasAgg = require_matplotlib()
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def written_path(path) -> str:
    """The file a figure saved to ``path`` lands in: matplotlib adds ``.png`` to a bare name."""
    path = str(path)
    return path if os.path.splitext(path)[1] else path + ".png"


def save(fig, path) -> str:
    """Write ``fig`` to ``path`` (format from the extension, PNG by default); returns the file written."""
    path = written_path(path)
    fig.savefig(path, bbox_inches="tight")
    return path


def _steps_array(steps) -> np.ndarray:
    if isinstance(steps, bool):
        raise TypeError(f"steps must be an int count or an integer array, got {steps!r}")
    if isinstance(steps, (int, np.integer)):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps!r}")
        return np.arange(int(steps), dtype=np.int64)
    arr = np.asarray(steps)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"steps must be an int count or a non-empty 1-D integer array, got {steps!r}")
    return arr.astype(np.int64)


def plot(
    schedule,
    steps,
    path=None,
    *,
    title=None,
    logy=None,
    momentum=True,
    label=None,
    figsize=(6.4, 3.6),
    dpi=100,
    ax=None,
):
    """Draw the learning rate (and momentum, on a second axis) of ``schedule`` over ``steps``.

    ``steps`` is a count ``N`` (steps ``0..N-1``) or an integer array of steps. The
    values come from ``schedule.lr_table``/``momentum_table``. With ``path`` the figure
    is written there (PNG unless the extension says otherwise; a bare name gets ``.png``).
    ``logy`` defaults to a log lr axis for an exponential sweep. ``ax`` draws into an
    existing matplotlib Axes instead of a new figure. Returns the Figure.
    """
    from .schedules import Schedule

    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a clrfast schedule, got {schedule!r}")
    x = _steps_array(steps)
    lr = schedule.lr_table(x)
    mom = schedule.momentum_table(x) if momentum else None
    if ax is None:
        fig = new_figure(figsize=figsize, dpi=dpi)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    ax.plot(x, lr, color="tab:blue", lw=1.5, label=label or "lr")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate", color="tab:blue")
    if logy is None:
        logy = type(schedule).__name__ == "RangeSweep" and schedule.mode == "exp"
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if mom is not None and np.isfinite(mom).any():
        ax2 = ax.twinx()
        ax2.plot(x, mom, color="tab:orange", lw=1.2, ls="--", label="momentum")
        ax2.set_ylabel("momentum", color="tab:orange")
    ax.set_title(title if title is not None else _describe(schedule), fontsize=9)
    if path is not None:
        save(fig, path)
    return fig


def _describe(schedule) -> str:
    """The schedule's type and the parameters that differ from their defaults, wrapped."""
    import dataclasses

    parts = []
    for f in dataclasses.fields(schedule):
        value = getattr(schedule, f.name)
        if f.default is not dataclasses.MISSING and value == f.default and f.name != "mode":
            continue  # the mode names the policy: always shown
        if isinstance(value, tuple) and value and hasattr(value[0], "to_dict"):
            value = "[" + ", ".join(type(v).__name__ for v in value) + "]"
        parts.append(
            f"{f.name}={value!r}" if not isinstance(value, str) or not value.startswith("[") else f"{f.name}={value}"
        )
    return "\n".join(textwrap.wrap(f"{type(schedule).__name__}({', '.join(parts)})", 90))
