"""Inputs that once hung, crashed or gave inf/NaN silently: each now gets torch's behaviour or a clear error.

Where torch has the same call the drop-in is checked against torch itself; elsewhere the error must
name the argument or the step, and a call that raises must change nothing.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import clrfast as clr
import numpy as np
import pytest
from clrfast import scales
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import clrfast.torch as ct  # noqa: E402
from torch.optim import lr_scheduler as L  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def sgd(groups=1):
    return torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)], lr=0.1, momentum=0.9
    )


def state_of(sched):
    opt = sched.optimizer
    return (
        {k: v for k, v in sched.__dict__.items() if k != "optimizer"},
        [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
    )


def outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001 - the exception type is what is compared
        return (type(e).__name__, None)


# --------------------------------------------------------------------- hangs
def test_fractional_restarts_past_2_53_cycles_terminate_with_a_value_in_range():
    s = clr.CosineRestarts(0.1, T_0=1, T_mult=1 + 2**-52)
    for t in (2**53, 2**62, 2**63 - 1):
        v = s.lr(t)
        assert 0.0 <= v <= 0.1
    assert np.isfinite(s.lr_table(np.array([2**62, 2**63 - 1]))).all()


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 1000), st.floats(1.0, 1e6), st.integers(0, 2**63 - 1))
def test_restarts_position_is_in_range_for_any_step(T_0, T_mult, t):
    v = clr.CosineRestarts(1.0, T_0, T_mult).lr(t)
    assert 0.0 <= v <= 1.0


# --------------------------------------------------------------------- one-cycle zero-length phases
@pytest.mark.parametrize(
    "kw",
    [
        dict(total_steps=100, pct_start=0.01),
        dict(total_steps=2, pct_start=0.5),
        dict(total_steps=10, pct_start=0.1, three_phase=True),
    ],
)
def test_onecycle_zero_length_first_phase_raises_like_torch(kw):
    for M in (L, ct):
        opt = sgd()
        with pytest.raises(ZeroDivisionError):
            M.OneCycleLR(opt, 0.1, **kw)
        assert not math.isnan(opt.param_groups[0]["lr"])


def test_onecycle_pct_start_one_raises_at_the_last_step_like_torch():
    results = []
    for M in (L, ct):
        opt = sgd()
        s = M.OneCycleLR(opt, 0.1, total_steps=10, pct_start=1.0)
        for _ in range(9):
            s.step()
        if M is ct:
            before = state_of(s)
        with pytest.raises(ZeroDivisionError):
            s.step()
        results.append(opt.param_groups[0]["lr"])
    assert state_of(s) == before  # clrfast: nothing changed
    assert not math.isnan(results[1])


# --------------------------------------------------------------------- overflow
def test_exp_range_overflow_raises_overflow_error_where_torch_does():
    got = []
    for M in (L, ct):
        s = M.CyclicLR(sgd(), 1e-3, 6e-3, step_size_up=10, mode="exp_range", gamma=2.0)
        for _ in range(1023):
            s.step()
        before = state_of(s) if M is ct else None
        with pytest.raises(OverflowError):
            s.step()
        got.append(s.optimizer.param_groups[0]["lr"])
    assert got[0] == got[1]
    assert state_of(s) == before


@pytest.mark.parametrize(
    "make, step",
    [
        (lambda: clr.Cyclic(1e-3, 6e-3, 10, mode="exp_range", gamma=2), 1030),
        (lambda: clr.Cyclic(1e-3, 6e-3, 10, mode="exp_range", gamma=1e300), 2),
        (lambda: clr.Cyclic(1e-3, 6e-3, 5e-324), 1),
        (lambda: clr.Cyclic(0.0, 10.0, 10, scale_fn=scales.Geometric(1e308)), 25),
        (lambda: clr.CosineRestarts(0.1, 10, peak_decay=1e308), 25),
    ],
)
def test_schedule_overflow_raises_and_names_the_step(make, step):
    s = make()
    with pytest.raises(OverflowError, match=r"no finite value at step \d+"):
        s.lr(step)
    out = np.full(step + 1, 7.0)
    with pytest.raises(OverflowError):
        s.lr_table(step + 1, out=out)
    assert (out == 7.0).all()  # checked before anything is written


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: clr.Cyclic(1e-3, 6e-3, 1e308), OverflowError, "step_size_up"),
        (lambda: clr.OneCycle(1e9, 100, div_factor=1e-300), OverflowError, "div_factor"),
        (lambda: clr.RangeSweep(5e-324, 1, 100), OverflowError, "start_lr"),
        (lambda: scales.Geometric(1e308)(3), OverflowError, "out of range"),
        (lambda: clr.Join([clr.Constant(0.1)] * 17, list(range(1, 17))), ValueError, "16"),
        (lambda: clr.OneCycle(0.1, 100, three_phase="false"), TypeError, "three_phase"),
        (lambda: clr.Cyclic(1e-3, 6e-3, 10).lr(10**400), OverflowError, "step"),
        (lambda: clr.from_dict({"clrfast_schedule": 1, "type": "Constant", "params": None}), TypeError, "params"),
    ],
)
def test_bad_schedules_are_refused_when_built_or_asked(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@settings(max_examples=60, deadline=None)
@given(st.floats(1.0, 1e300), st.integers(0, 2**62))
def test_tables_and_lr_are_finite_or_raise(gamma, t):
    s = clr.Cyclic(1e-3, 6e-3, 10, mode="exp_range", gamma=gamma)
    try:
        v = s.lr(t)
    except OverflowError:
        return
    assert math.isfinite(v)
    assert np.isfinite(s.lr_table(np.array([0, t]))).all()


def test_triangular2_past_cycle_1024_is_base_for_schedules_and_raises_for_the_dropin():
    s = clr.Cyclic(1e-3, 6e-3, 1, mode="triangular2")
    assert s.lr(4000) == 1e-3
    assert np.isfinite(s.lr_table(5000)).all()
    for M in (L, ct):
        d = M.CyclicLR(sgd(), 1e-3, 6e-3, step_size_up=1, mode="triangular2")
        with pytest.raises(OverflowError):
            d.step(4000)


# --------------------------------------------------------------------- numbers as values
def test_numpy_scalars_become_python_numbers():
    a = clr.Constant(np.float32(0.1))
    assert a != clr.Constant(0.1) and a.lr(0) == float(np.float32(0.1))
    assert clr.Constant(np.float64(0.1)) == clr.Constant(0.1)
    assert hash(clr.Constant(np.float64(0.1))) == hash(clr.Constant(0.1))
    d = clr.Cyclic(np.float64(1e-3), np.float32(6e-3), np.int64(20)).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert type(d["params"]["step_size_up"]) is int


# --------------------------------------------------------------------- drop-in steps
@pytest.mark.parametrize(
    "name, kw, epoch",
    [
        ("CyclicLR", dict(base_lr=1e-3, max_lr=6e-3), 10**20),
        ("CosineAnnealingWarmRestarts", dict(T_0=5), 1e20),
        ("CosineAnnealingWarmRestarts", dict(T_0=5, T_mult=2), 10**6 + 0.5),
    ],
)
def test_huge_epochs_work_as_in_torch(name, kw, epoch):
    runs = []
    for M in (L, ct):
        s = getattr(M, name)(sgd(), **kw)
        s.step(epoch)
        runs.append((s.optimizer.param_groups[0]["lr"], s.last_epoch, getattr(s, "T_cur", None)))
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    "name, kw",
    [
        ("CyclicLR", dict(base_lr=1e-3, max_lr=6e-3)),
        ("OneCycleLR", dict(max_lr=0.1, total_steps=100)),
        ("CosineAnnealingWarmRestarts", dict(T_0=5)),
    ],
)
@pytest.mark.parametrize(
    "epoch, exc",
    [(math.nan, ValueError), (math.inf, (OverflowError, ValueError)), ("3", TypeError), (10**400, OverflowError)],
)
def test_bad_epochs_raise_and_change_nothing(name, kw, epoch, exc):
    s = getattr(ct, name)(sgd(2), **kw)
    s.step()
    before = state_of(s)
    with pytest.raises(exc):
        s.step(epoch)
    assert state_of(s) == before


@pytest.mark.parametrize(
    "state", [{"last_epoch": "x"}, {"_step_count": 1.5}, {"T_cur": math.nan}, {"last_epoch": None}]
)
def test_broken_state_dicts_are_refused_and_change_nothing(state):
    s = ct.CosineAnnealingWarmRestarts(sgd(), 5)
    s.step()
    before = state_of(s)
    with pytest.raises((TypeError, ValueError)):
        s.load_state_dict(state)
    assert state_of(s) == before
    s.step()


@pytest.mark.parametrize("T_0, T_mult", [(2**63, 1), (2**53 + 1, 1), (1, 2**62), (3, 2**40)])
def test_restart_counters_are_python_ints_like_torch(T_0, T_mult):
    runs = []
    for M in (L, ct):
        s = M.CosineAnnealingWarmRestarts(sgd(), T_0, T_mult=T_mult)
        for _ in range(4):
            s.step()
        runs.append((s.T_cur, s.T_i, s.last_epoch, s.optimizer.param_groups[0]["lr"]))
    assert runs[0] == runs[1]


def test_loaded_torch_state_brings_its_geometry():
    got = []
    for M in (L, ct):
        a = M.CyclicLR(sgd(), 0.1, 1.0, step_size_up=20, step_size_down=5, cycle_momentum=False)
        for _ in range(7):
            a.step()
        b = M.CyclicLR(sgd(), 0.1, 1.0, step_size_up=10, cycle_momentum=False)
        b.load_state_dict(a.state_dict())
        b.step()
        got.append(b.optimizer.param_groups[0]["lr"])
    assert got[0] == got[1] == 0.4600000000000001


def test_scale_fn_returning_a_string_and_empty_betas():
    assert outcome(lambda: L.CyclicLR(sgd(), 0.01, 0.1, scale_fn=lambda x: "a").step())[0] == "TypeError"
    with pytest.raises(TypeError, match="scale_fn must return a real number"):
        ct.CyclicLR(sgd(), 0.01, 0.1, scale_fn=lambda x: "a")
    for M in (L, ct):
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
        opt.param_groups[0]["betas"] = ()
        M.CyclicLR(opt, 0.01, 0.1).step()
        assert len(opt.param_groups[0]["betas"]) == 1


def test_star_import_and_missing_torch_message():
    ns = {}
    exec("from clrfast.torch import *", ns)
    assert {"CyclicLR", "OneCycleLR", "CosineAnnealingWarmRestarts", "CLRSGD", "lr_find"} <= set(ns)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import clrfast.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    with warnings.catch_warnings():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "pip install 'clrfast[torch]'" in out
