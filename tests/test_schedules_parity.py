"""Schedule values against independent oracles.

Where PyTorch has the same schedule (CyclicLR, OneCycleLR, CosineAnnealingWarmRestarts) the oracle is
torch itself, stepped one step at a time on a dummy SGD optimizer, and the comparison is exact
(``np.array_equal``): clrfast promises the same double as torch at every step. Schedules that torch does
not have (Cyclic windows, the CosineRestarts extensions, non-integer T_mult, Warmup, RangeSweep, Join)
are compared with the small pure-Python references below, written from the documented formulas.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import clrfast as clr
import numpy as np
import pytest
from clrfast import scales

torch = pytest.importorskip("torch")

from oracles import assert_exact, torch_cyclic, torch_onecycle, torch_restarts  # noqa: E402


def clr_cyclic(**kw):
    """The clrfast schedule for torch's CyclicLR keyword arguments."""
    kw = dict(kw)
    if not kw.pop("cycle_momentum", True):
        kw.pop("base_momentum", None)
        kw.pop("max_momentum", None)
    else:
        kw.setdefault("base_momentum", 0.8)
        kw.setdefault("max_momentum", 0.9)
    return clr.Cyclic(**kw)


def clr_onecycle(**kw):
    kw = dict(kw)
    kw["anneal"] = kw.pop("anneal_strategy", "cos")
    return clr.OneCycle(**kw)


def check_against_torch(sched, want_lr, want_mom, what, rng=None):
    """Tables over 0..n-1, tables at arbitrary steps, and scalar lr()/momentum() all equal torch's."""
    n = want_lr.size
    assert_exact(sched.lr_table(n), want_lr, f"{what} lr_table")
    if want_mom is not None:
        assert_exact(sched.momentum_table(n), want_mom, f"{what} momentum_table")
    else:
        assert sched.momentum_table(n) is None
    rng = rng or np.random.default_rng(0)
    idx = rng.integers(0, n, size=min(n, 257))
    idx = np.concatenate([idx, [0, n - 1]])
    assert_exact(sched.lr_table(idx), want_lr[idx], f"{what} lr_table(steps)")
    assert_exact(sched.lr_table(idx.reshape(-1, 1)).ravel(), want_lr[idx], f"{what} lr_table(2-d steps)")
    if want_mom is not None:
        assert_exact(sched.momentum_table(idx), want_mom[idx], f"{what} momentum_table(steps)")
    for i in idx[:40].tolist() + [0, n - 1]:
        assert sched.lr(i) == want_lr[i], f"{what} lr({i}) = {sched.lr(i)!r}, torch {want_lr[i]!r}"
        if want_mom is not None:
            assert sched.momentum(i) == want_mom[i], f"{what} momentum({i})"
        else:
            assert sched.momentum(i) is None


# ------------------------------------------------------------ long horizons
LONG = 100_000


@pytest.mark.parametrize(
    "kw",
    [
        dict(base_lr=1e-3, max_lr=6e-3, step_size_up=2000, step_size_down=1500, mode="triangular2"),
        dict(
            base_lr=0.01,
            max_lr=0.1,
            step_size_up=1000,
            mode="exp_range",
            gamma=0.99994,
            base_momentum=0.85,
            max_momentum=0.95,
        ),
        # Non-integer step sizes: cycle boundaries fall between steps and t/total rounds.
        dict(base_lr=0.3, max_lr=0.003, step_size_up=333.3, step_size_down=777.7, mode="triangular"),
    ],
    ids=["triangular2", "exp_range", "fractional-inverted"],
)
def test_cyclic_long_horizon(kw):
    want_lr, want_mom = torch_cyclic(LONG, **kw)
    check_against_torch(clr_cyclic(**kw), want_lr, want_mom, f"Cyclic{kw}")


@pytest.mark.parametrize(
    "kw",
    [
        dict(max_lr=0.1, total_steps=LONG, pct_start=0.3, anneal_strategy="cos"),
        dict(
            max_lr=2.5,
            total_steps=LONG + 7,
            pct_start=0.25,
            anneal_strategy="linear",
            three_phase=True,
            div_factor=10.0,
            final_div_factor=1e5,
            base_momentum=0.8,
            max_momentum=0.97,
        ),
    ],
    ids=["cos", "linear-three-phase"],
)
def test_onecycle_long_horizon_including_last_step(kw):
    # Steps 0..total_steps are valid in torch (the last one extrapolates the final phase).
    n = kw["total_steps"] + 1
    want_lr, want_mom = torch_onecycle(n, **kw)
    check_against_torch(clr_onecycle(**kw), want_lr, want_mom, f"OneCycle{kw}")
    s = clr_onecycle(**kw)
    assert s.lr(kw["total_steps"]) == want_lr[-1]
    assert s.lr(kw["total_steps"] - 1) == want_lr[-2]


@pytest.mark.parametrize("T_0,T_mult,eta_min", [(1000, 2, 1e-5), (777, 1, 0.0), (7, 3, 0.01)])
def test_cosine_restarts_long_horizon(T_0, T_mult, eta_min):
    want = torch_restarts(LONG, 0.1, T_0=T_0, T_mult=T_mult, eta_min=eta_min)
    check_against_torch(
        clr.CosineRestarts(0.1, T_0, T_mult, eta_min), want, None, f"CosineRestarts({T_0}, {T_mult}, {eta_min})"
    )


# ------------------------------------------------------ many short random ones
def _log_uniform(r, lo, hi):
    return math.exp(r.uniform(math.log(lo), math.log(hi)))


def _random_cyclic_kwargs(r):
    kw = dict(base_lr=_log_uniform(r, 1e-6, 1.0), max_lr=_log_uniform(r, 1e-5, 10.0))
    if r.random() < 0.5:
        kw["step_size_up"] = r.randint(1, 300)
    else:
        kw["step_size_up"] = round(r.uniform(0.5, 300.0), r.randint(0, 6))
    choice = r.random()
    if choice < 0.25:
        pass  # step_size_down defaults to step_size_up
    elif choice < 0.35:
        kw["step_size_down"] = 0
    elif choice < 0.7:
        kw["step_size_down"] = r.randint(1, 300)
    else:
        kw["step_size_down"] = r.uniform(0.5, 300.0)
    kw["mode"] = r.choice(["triangular", "triangular2", "exp_range"])
    if kw["mode"] == "exp_range" or r.random() < 0.2:
        kw["gamma"] = r.uniform(0.99, 1.0)
    if r.random() < 0.3:
        kw["scale_fn"] = r.choice(
            [
                scales.Flat(),
                scales.Halving(),
                scales.ExpRange(r.uniform(0.995, 1.0)),
                scales.Geometric(r.uniform(0.3, 1.0)),
            ]
        )
        kw["scale_mode"] = r.choice(["cycle", "iterations"])
    if r.random() < 0.2:
        kw["cycle_momentum"] = False
    else:
        lo = r.uniform(0.0, 0.99)
        kw["base_momentum"] = lo
        kw["max_momentum"] = r.uniform(lo, 0.999) if r.random() < 0.8 else r.uniform(0, lo)
    return kw


@pytest.mark.parametrize("seed", range(60))
def test_cyclic_random_configs(seed):
    r = random.Random(seed)
    kw = _random_cyclic_kwargs(r)
    n = r.randint(1, 3000)
    want_lr, want_mom = torch_cyclic(n, **kw)
    check_against_torch(clr_cyclic(**kw), want_lr, want_mom, f"seed {seed}: Cyclic{kw}", np.random.default_rng(seed))


def _random_onecycle_kwargs(r):
    while True:
        kw = dict(
            max_lr=_log_uniform(r, 1e-4, 10.0),
            total_steps=r.choice([1, 2, 3, 5, 10, r.randint(1, 3000)]),
            pct_start=r.choice([0.0, 0.1, 0.25, 0.3, 0.5, 1.0, r.random()]),
            anneal_strategy=r.choice(["cos", "linear"]),
            three_phase=r.random() < 0.4,
            div_factor=r.choice([25.0, _log_uniform(r, 1.0, 1e3)]),
            final_div_factor=r.choice([1e4, _log_uniform(r, 1.0, 1e6)]),
        )
        if r.random() < 0.2:
            kw["cycle_momentum"] = False
        else:
            kw["base_momentum"] = r.uniform(0.5, 0.9)
            kw["max_momentum"] = r.uniform(kw["base_momentum"], 0.999)
        try:
            # A phase of zero length divides 0 by 0 in torch too; clrfast rejects it up front.
            return kw, clr_onecycle(**kw)
        except ValueError:
            continue


@pytest.mark.parametrize("seed", range(60))
def test_onecycle_random_configs(seed):
    r = random.Random(1000 + seed)
    kw, sched = _random_onecycle_kwargs(r)
    n = kw["total_steps"] + 1
    want_lr, want_mom = torch_onecycle(n, **kw)
    check_against_torch(sched, want_lr, want_mom, f"seed {seed}: OneCycle{kw}", np.random.default_rng(seed))


@pytest.mark.parametrize("seed", range(40))
def test_cosine_restarts_random_configs(seed):
    r = random.Random(2000 + seed)
    base = _log_uniform(r, 1e-4, 1.0)
    T_0 = r.randint(1, 200)
    T_mult = r.choice([1, 1, 2, 3, r.randint(1, 5)])
    eta_min = r.choice([0.0, base * r.random()])
    n = r.randint(1, 4000)
    want = torch_restarts(n, base, T_0=T_0, T_mult=T_mult, eta_min=eta_min)
    check_against_torch(
        clr.CosineRestarts(base, T_0, T_mult, eta_min),
        want,
        None,
        f"seed {seed}: CosineRestarts({base}, {T_0}, {T_mult}, {eta_min})",
    )


def test_onecycle_zero_length_phase_is_rejected_where_torch_divides_by_zero():
    kw = dict(max_lr=0.1, total_steps=20, pct_start=0.05)  # first phase ends at step 0
    with pytest.raises(ZeroDivisionError):
        torch_onecycle(2, **kw)
    with pytest.raises(ValueError, match=r"pct_start=0\.05.*total_steps=20"):
        clr_onecycle(**kw)


# --------------------------------------------- pure-Python references (no torch)
def ref_cyclic_position(t, up, down, window):
    """Cyclic docstring: cycle, x, s and the window."""
    total = float(up) + float(down)
    ratio = float(up) / total
    cycle = math.floor(1 + t / total)
    x = 1.0 + t / total - cycle
    s = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    if window == "welch":
        s = 1.0 - (1.0 - s) * (1.0 - s)
    elif window == "hann":
        s = (1.0 - math.cos(math.pi * s)) / 2.0
    return cycle, s


def ref_cyclic(t, base, mx, up, down, window, mode="triangular", gamma=1.0, mom=None):
    cycle, s = ref_cyclic_position(t, up, down, window)
    scale = {"triangular": 1.0, "triangular2": 1 / (2.0 ** (cycle - 1)), "exp_range": gamma**t}[mode]
    lr = base + (mx - base) * s * scale
    if mom is None:
        return lr, None
    return lr, mom[1] - (mom[1] - mom[0]) * s * scale


@pytest.mark.parametrize("window", ["welch", "hann"])
@pytest.mark.parametrize("seed", range(8))
def test_cyclic_windows_match_reference(window, seed):
    r = random.Random(3000 + seed)
    base, mx = _log_uniform(r, 1e-5, 1e-1), _log_uniform(r, 1e-4, 1.0)
    up = r.choice([r.randint(1, 200), r.uniform(0.5, 200)])
    down = r.choice([up, r.randint(1, 200), r.uniform(0.5, 200)])
    mode = r.choice(["triangular", "triangular2", "exp_range"])
    gamma = r.uniform(0.995, 1.0)
    mom = (0.8, 0.95) if r.random() < 0.7 else None
    s = clr.Cyclic(
        base,
        mx,
        up,
        down,
        mode=mode,
        gamma=gamma,
        window=window,
        base_momentum=mom and mom[0],
        max_momentum=mom and mom[1],
    )
    n = 2000
    want = [ref_cyclic(t, base, mx, up, down, window, mode, gamma, mom) for t in range(n)]
    want_lr = np.array([w[0] for w in want])
    # Same operations in the same order as the documented formula: exact.
    assert_exact(s.lr_table(n), want_lr, f"{window} lr")
    if mom:
        assert_exact(s.momentum_table(n), np.array([w[1] for w in want]), f"{window} momentum")
    # The window keeps the ends of each half-cycle: base at cycle starts, peak at step_size_up.
    if float(up) == int(up) and float(down) == int(down) and mode == "triangular":
        total = int(up) + int(down)
        assert s.lr(total * 3) == pytest.approx(base, rel=1e-12, abs=1e-300)
        assert s.lr(total * 3 + int(up)) == pytest.approx(mx, rel=1e-12)


def test_welch_and_hann_hand_values():
    # up = down = 4: s = 0.5 at t = 2, welch 1 - 0.25 = 0.75, hann (1 - cos(pi/2))/2 = 0.5.
    welch = clr.Cyclic(0.0, 1.0, 4, window="welch")
    hann = clr.Cyclic(0.0, 1.0, 4, window="hann")
    tri = clr.Cyclic(0.0, 1.0, 4)
    assert tri.lr_table(9).tolist() == [0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0]
    assert welch.lr_table(9).tolist() == [0, 0.4375, 0.75, 0.9375, 1, 0.9375, 0.75, 0.4375, 0]
    assert hann.lr(2) == pytest.approx(0.5, abs=1e-15)
    assert hann.lr(4) == 1.0 and hann.lr(0) == 0.0 and hann.lr(8) == 0.0


def ref_restarts(n, base, T_0, T_mult, eta_min, peak_decay=1.0, warmup=0):
    """CosineRestarts docstring at steps 0..n-1, with the cycles found by exact rational arithmetic.

    Cycle k starts at T_0 (m^k - 1)/(m - 1) and lasts T_0 m^k. ``m`` is the decimal the user wrote
    (``Fraction(repr(1.1)) == 11/10``), so T_0=20, T_mult=1.1 has cycles of exactly 20, 22, 24.2, ...
    steps, and a step that lands exactly on such a boundary starts the new cycle.
    """
    m = Fraction(repr(float(T_mult)))
    start, length, k = Fraction(0), Fraction(T_0), 0
    out = []
    for t in range(n):
        while t >= start + length:
            start += length
            length *= m
            k += 1
        T_cur, T_i = float(t - start), float(length)
        peak = base * peak_decay**k if peak_decay != 1.0 else base
        if warmup > 0:
            if T_cur < warmup:
                out.append(eta_min + (peak - eta_min) * (T_cur / warmup))
                continue
            T_cur -= warmup
            T_i -= warmup
        out.append(eta_min + (peak - eta_min) * (1.0 + math.cos(math.pi * T_cur / T_i)) / 2.0)
    return np.array(out)


@pytest.mark.parametrize(
    "T_0,T_mult,eta_min,peak_decay,warmup",
    [
        (10, 1, 0.0, 0.5, 0),
        (10, 2, 1e-4, 0.7, 3),
        (50, 1, 1e-3, 1.0, 49),
        (1, 3, 0.0, 0.9, 0),
        (7, 2, 0.0, 1.0, 2),
        (100, 1, 0.0, 1.5, 10),
    ],
)
def test_cosine_restarts_decay_and_warmup_match_reference(T_0, T_mult, eta_min, peak_decay, warmup):
    s = clr.CosineRestarts(0.1, T_0, T_mult, eta_min, peak_decay=peak_decay, warmup_steps=warmup)
    n = 5000
    want = ref_restarts(n, 0.1, T_0, T_mult, eta_min, peak_decay, warmup)
    # Integer T_0 and T_mult keep T_cur and T_i exact integers, so this is exact.
    assert_exact(s.lr_table(n), want, "CosineRestarts")
    if peak_decay == 1.0 and warmup == 0:
        assert_exact(s.lr_table(n), torch_restarts(n, 0.1, T_0=T_0, T_mult=T_mult, eta_min=eta_min), "torch")


_FRACTIONAL = [(10, 1.5), (3, 1.25), (20, 1.1), (1, 2.5), (64, 1.0625), (5, 1.7)]
_rng = random.Random(4000)
# Short decimals (1.3, 1.05, 1.125, ...) put many cycle boundaries exactly on integer steps.
_FRACTIONAL += [(_rng.randint(1, 60), round(_rng.uniform(1.0, 2.5), i % 4 + 1)) for i in range(20)]


@pytest.mark.parametrize("T_0,T_mult", _FRACTIONAL)
def test_cosine_restarts_fractional_T_mult(T_0, T_mult):
    s = clr.CosineRestarts(0.1, T_0, T_mult, 1e-4)
    n = 20_000
    got = s.lr_table(n)
    want = ref_restarts(n, 0.1, T_0, T_mult, 1e-4)
    # Not exact: the core computes the cycle start T_0 (m^k - 1)/(m - 1) in floating point, so T_cur
    # can differ from the exact value in the last bits. A step placed in the wrong cycle would be off
    # by up to the whole amplitude, far beyond this tolerance.
    bad = np.flatnonzero(~np.isclose(got, want, rtol=1e-9, atol=1e-13))
    assert bad.size == 0, (
        f"CosineRestarts(0.1, T_0={T_0}, T_mult={T_mult}, eta_min=1e-4): {bad.size} steps differ from the "
        f"exact reference, first at step {bad[0] if bad.size else None}: "
        f"got {got[bad[0]] if bad.size else None!r}, want {want[bad[0]] if bad.size else None!r}"
    )


def ref_warmup(t, start, end, steps):
    return end if t >= steps else start + (end - start) * (t / steps)


def ref_sweep(t, start, end, n, mode):
    last = n - 1
    if t >= last:
        return end
    f = t / last
    return start * (end / start) ** f if mode == "exp" else start + (end - start) * f


@pytest.mark.parametrize("start,end,steps", [(0.0, 0.1, 500), (1e-3, 1e-5, 7), (0.2, 0.2, 1), (0.0, 1.0, 3)])
def test_warmup_matches_reference(start, end, steps):
    s = clr.Warmup(start, end, steps)
    n = steps * 2 + 5
    assert_exact(s.lr_table(n), np.array([ref_warmup(t, start, end, steps) for t in range(n)]), "Warmup")
    assert s.lr(0) == start and s.lr(steps) == end and s.momentum(3) is None
    assert s.momentum_table(5) is None


@pytest.mark.parametrize("mode", ["exp", "linear"])
@pytest.mark.parametrize("start,end,n", [(1e-7, 10.0, 100), (1e-4, 1.0, 1), (1e-3, 1e-1, 2), (0.5, 1e-3, 1000)])
def test_range_sweep_matches_reference(mode, start, end, n):
    s = clr.RangeSweep(start, end, n, mode=mode)
    m = n + 10
    assert_exact(s.lr_table(m), np.array([ref_sweep(t, start, end, n, mode) for t in range(m)]), "RangeSweep")
    assert s.lr(n - 1) == end
    if n > 1:
        assert s.lr(0) == start


def test_range_sweep_exp_hand_values():
    # 1e-4 -> 1 over 5 steps: one decade per step.
    got = clr.RangeSweep(1e-4, 1.0, 5).lr_table(5)
    np.testing.assert_allclose(got, [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-14)


def test_join_against_torch_pieces():
    """Warmup then SGDR, and OneCycle then a CyclicLR tail: each piece on its own clock."""
    warm, B = 500, 500
    s = clr.Join([clr.Warmup(0.0, 0.1, warm), clr.CosineRestarts(0.1, T_0=1000, T_mult=2)], boundaries=[B])
    n = 20_000
    want = np.concatenate(
        [
            [ref_warmup(t, 0.0, 0.1, warm) for t in range(B)],
            torch_restarts(n - B, 0.1, T_0=1000, T_mult=2),
        ]
    )
    assert_exact(s.lr_table(n), want, "Join(Warmup, CosineRestarts)")
    assert s.momentum_table(n) is None

    oc = dict(max_lr=0.1, total_steps=3000, three_phase=True)
    cy = dict(base_lr=1e-4, max_lr=1e-3, step_size_up=100, mode="triangular2")
    s = clr.Join([clr_onecycle(**oc), clr_cyclic(**cy)], boundaries=[3001])
    lr1, m1 = torch_onecycle(3001, **oc)
    lr2, m2 = torch_cyclic(2000, **cy)
    assert_exact(s.lr_table(5001), np.concatenate([lr1, lr2]), "Join(OneCycle, Cyclic) lr")
    assert_exact(s.momentum_table(5001), np.concatenate([m1, m2]), "Join(OneCycle, Cyclic) momentum")
    assert s.max_step is None


def test_join_momentum_is_nan_where_the_piece_has_none():
    s = clr.Join([clr.Constant(0.05), clr_cyclic(base_lr=0.01, max_lr=0.1, step_size_up=5)], [10])
    m = s.momentum_table(20)
    assert np.isnan(m[:10]).all()
    assert m[10] == 0.9 and m[15] == 0.8
    assert s.momentum(3) is None and s.momentum(15) == 0.8
    np.testing.assert_array_equal(s.lr_table(20)[:10], 0.05)


def test_join_with_onecycle_last_has_max_step():
    s = clr.Join([clr.Constant(0.01), clr.OneCycle(0.1, 100)], [50])
    assert s.max_step == 150
    lr, _ = torch_onecycle(101, max_lr=0.1, total_steps=100)
    assert_exact(s.lr_table(151)[50:], lr, "OneCycle after Join boundary")
    with pytest.raises(ValueError, match="Tried to step 151 times"):
        s.lr(151)
