"""The framework-free LR range test (clrfast._range_test): the loop every front end's lr_find runs.

A scripted ``step(lr)`` stands in for training, so each check reads off a Python oracle:
the sweep the core computes, the bias-corrected moving average, the divergence rule, the stops
and the seeds' aggregation.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap

import clrfast as clr
import numpy as np
import pytest
from clrfast import _range_test as rt


def _sweep_lr(start, end, n, t, mode="exp"):
    f = t / (n - 1)
    return start * (end / start) ** f if mode == "exp" else start + (end - start) * f


def _oracle(losses, beta, diverge):
    """(smoothed, stop index or None), by the rule the docstring states."""
    out, avg, best = [], 0.0, math.inf
    for i, x in enumerate(losses):
        avg = beta * avg + (1 - beta) * x
        s = avg / (1 - beta ** (i + 1))
        out.append(s)
        best = min(best, s)
        if s - best > (diverge - 1) * abs(best):
            return out, i
    return out, None


class Script:
    """step(lr): records the lr it was given and returns the next scripted loss (None: data ran out)."""

    def __init__(self, losses):
        self.losses, self.lrs = list(losses), []

    def __call__(self, lr):
        self.lrs.append(lr)
        return self.losses[len(self.lrs) - 1] if len(self.lrs) <= len(self.losses) else None


@pytest.mark.parametrize("mode", ["exp", "linear"])
def test_settings_sweep_is_the_cores_range_sweep(mode):
    cfg = rt.settings(1e-4, 1.0, 30, mode, 0.9, 4.0)
    assert cfg.sweep == clr.RangeSweep(1e-4, 1.0, 30, mode)
    np.testing.assert_allclose(cfg.lrs(), [_sweep_lr(1e-4, 1.0, 30, t, mode) for t in range(30)], rtol=1e-14)


def test_run_sweep_smooths_and_stops_where_the_oracle_does():
    t = np.arange(60)
    losses = (2 - np.tanh(t / 8) + 0.1 * (-1.0) ** t + np.where(t > 35, np.exp((t - 35) / 3.0), 0)).tolist()
    cfg = rt.settings(1e-3, 1.0, 60, "exp", 0.9, 2.0)
    step = Script(losses)
    run = rt.run_sweep(step, cfg.lrs(), smooth=cfg.smooth, diverge=cfg.diverge)
    smoothed, stop = _oracle(losses, 0.9, 2.0)
    assert stop is not None and 36 < stop < 59
    assert run["stop_reason"] == "diverged" and len(run["losses"]) == stop + 1 == len(step.lrs)
    assert run["losses"].tolist() == losses[: stop + 1]
    np.testing.assert_allclose(run["smoothed"], smoothed, rtol=1e-13)
    np.testing.assert_allclose(step.lrs, [_sweep_lr(1e-3, 1.0, 60, i) for i in range(stop + 1)], rtol=1e-14)
    assert run["diverged_lr"] == step.lrs[-1] and run["val"] is None


def test_run_sweep_stops_at_nan_and_at_the_end_of_the_data():
    lrs = np.geomspace(1e-3, 1, 20)
    run = rt.run_sweep(Script([1.0] * 12 + [math.inf]), lrs, smooth=0.5, diverge=4.0)
    assert run["stop_reason"] == "nan" and len(run["losses"]) == 12 and run["diverged_lr"] == lrs[12]
    run = rt.run_sweep(Script([1.0] * 15), lrs, smooth=0.5, diverge=4.0)
    assert run["stop_reason"] == "data" and len(run["losses"]) == 15 and run["diverged_lr"] is None
    run = rt.run_sweep(Script([1.0] * 25), lrs, smooth=0.5, diverge=4.0)
    assert run["stop_reason"] == "end" and len(run["losses"]) == 20
    msg = "the range test recorded only 9 steps (9 batches); it needs at least 10: use more data or a lower start_lr"
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        rt.run_sweep(Script([1.0] * 9), lrs, smooth=0.5, diverge=4.0, describe_data=lambda: "9 batches")


def test_validation_every_k_steps():
    calls = []

    def validate():
        calls.append(len(calls))
        return 10.0 + len(calls)

    run = rt.run_sweep(
        Script([1.0] * 12), np.geomspace(1e-3, 1, 12), smooth=0.0, diverge=4.0, validate=validate, val_every=5
    )
    assert len(calls) == 3
    np.testing.assert_array_equal(run["val"][[0, 5, 10]], [11.0, 12.0, 13.0])
    assert np.isnan(np.delete(run["val"], [0, 5, 10])).all()


def test_run_seeds_aggregates_restores_and_suggests():
    cfg = rt.settings(1e-3, 1.0, 40, "exp", 0.0, 4.0)
    x = np.log10(cfg.lrs())
    curves = {s: (1 + (x + 1.5) ** 2 + 0.01 * s).tolist() for s in (0, 1, 2)}  # at most 3.27: no divergence
    curves[2] = curves[2][:30] + [100.0] * 10  # seed 2 diverges at step 30
    restored, seeded = [], []
    res = rt.run_seeds(
        lambda seed: rt.run_sweep(Script(curves[seed]), cfg.lrs(), smooth=0.0, diverge=4.0),
        cfg,
        [0, 1, 2],
        restore=lambda: restored.append(1),
        before_seed=seeded.append,
    )
    assert seeded == [0, 1, 2] and len(restored) == 4  # after each run, and once more at the end
    assert res.stop_reason == "diverged" and len(res.lrs) == 31  # cut where the first seed stopped
    stacked = np.array([curves[s][:31] for s in (0, 1, 2)])
    np.testing.assert_array_equal(res.smoothed, stacked.mean(0))
    np.testing.assert_array_equal(res.band[0], stacked.min(0))
    np.testing.assert_array_equal(res.band[1], stacked.max(0))
    s = rt.suggest(res.lrs, res.smoothed)
    assert (res.max_lr, res.base_lr, res.lr_min) == (s["max_lr"], s["base_lr"], s["lr_min"])
    # L = 1 + (x + 1.5)^2 on x = log10(lr): the minimum at lr = 10**-1.5, between two sweep points.
    assert abs(math.log10(res.lr_min) + 1.5) <= (x[1] - x[0]) / 2 + 1e-12
    assert [r["seed"] for r in res.runs] == [0, 1, 2]
    assert res.to_schedule("triangular", step_size_up=100) == clr.Cyclic(res.base_lr, res.max_lr, 100)


def test_run_seeds_restores_when_a_run_raises():
    restored = []

    def boom(seed):
        raise RuntimeError("training failed")

    with pytest.raises(RuntimeError, match="training failed"):
        rt.run_seeds(boom, rt.settings(1e-3, 1.0, 10, "exp", 0.9, 4.0), None, restore=lambda: restored.append(1))
    assert restored == [1]


@pytest.mark.parametrize(
    "args, exc, message",
    [
        ((1e-3, 1.0, 9, "exp", 0.9, 4.0), ValueError, "num_steps must be >= 10, got 9"),
        ((1e-3, 1.0, 20, "cos", 0.9, 4.0), ValueError, "mode must be one of 'exp', 'linear'; got 'cos'"),
        ((1.0, 1e-3, 20, "exp", 0.9, 4.0), ValueError, "end_lr must be > start_lr, got start_lr=1.0, end_lr=0.001"),
        ((1e-3, 1.0, 20, "exp", 1.0, 4.0), ValueError, "smooth must be <= 0.999, got 1.0"),
        ((1e-3, 1.0, 20, "exp", 0.9, 1.0), ValueError, "diverge must be > 1.0, got 1.0"),
    ],
)
def test_settings_name_the_bad_argument(args, exc, message):
    with pytest.raises(exc, match="^" + re.escape(message)):
        rt.settings(*args)


def test_imports_and_runs_without_any_framework():
    block = textwrap.dedent(
        """
        import sys

        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"torch", "jax", "keras", "tensorflow", "optax"}:
                    raise ImportError(f"{name} is blocked in this test", name=name)

        sys.meta_path.insert(0, _Block())
        from clrfast import _range_test as rt
        cfg = rt.settings(1e-4, 1.0, 30, "exp", 0.9, 4.0)
        losses = iter([1.0 / (1 + t) for t in range(30)])
        res = rt.run_seeds(
            lambda seed: rt.run_sweep(lambda lr: next(losses), cfg.lrs(), smooth=cfg.smooth, diverge=cfg.diverge),
            cfg, None, restore=lambda: None)
        assert res.stop_reason == "end" and len(res.lrs) == 30
        res.to_schedule("onecycle", total_steps=100)
        frameworks = {"torch", "jax", "keras", "tensorflow", "optax"}
        assert not frameworks & {m.split(".")[0] for m in sys.modules}
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
