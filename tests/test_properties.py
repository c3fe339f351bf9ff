"""Properties of the schedules that must hold for every valid configuration (hypothesis)."""

from __future__ import annotations

import warnings

import clrfast as clr
import numpy as np
import pytest
from clrfast import scales
from hypothesis import assume, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None)

lrs = st.floats(1e-6, 10.0, allow_nan=False, allow_infinity=False)
int_sizes = st.integers(1, 400)
real_sizes = st.one_of(int_sizes, st.floats(0.5, 400.0, allow_nan=False))
momenta = st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 0.99))


@st.composite
def cyclic(draw, modes=("triangular", "triangular2", "exp_range"), momentum=None, windows=None):
    base, mx = draw(lrs), draw(lrs)
    up = draw(real_sizes)
    down = draw(st.one_of(st.none(), st.just(0), real_sizes))
    mode = draw(st.sampled_from(modes))
    window = draw(st.sampled_from(windows or ("triangular", "welch", "hann")))
    gamma = draw(st.floats(0.99, 1.0))
    mom = draw(momenta) if (momentum if momentum is not None else draw(st.booleans())) else (None, None)
    return clr.Cyclic(
        base, mx, up, down, mode=mode, gamma=gamma, window=window, base_momentum=mom[0], max_momentum=mom[1]
    )


@st.composite
def onecycle(draw):
    while True:
        kw = dict(
            max_lr=draw(lrs),
            total_steps=draw(st.integers(1, 3000)),
            pct_start=draw(st.floats(0.0, 1.0)),
            anneal=draw(st.sampled_from(["cos", "linear"])),
            three_phase=draw(st.booleans()),
            div_factor=draw(st.floats(1.0, 1e3)),
            final_div_factor=draw(st.floats(1.0, 1e5)),
        )
        try:
            return clr.OneCycle(**kw)
        except ValueError:  # a zero-length phase
            continue


@st.composite
def restarts(draw):
    T_0 = draw(st.integers(1, 300))
    return clr.CosineRestarts(
        draw(lrs),
        T_0,
        draw(st.one_of(st.integers(1, 3), st.floats(1.0, 3.0))),
        draw(st.floats(0.0, 1e-6)),
        peak_decay=draw(st.floats(0.1, 1.0)),
        warmup_steps=draw(st.integers(0, T_0 - 1)),
    )


simple = st.one_of(
    st.builds(clr.Warmup, lrs, lrs, st.integers(1, 500)),
    st.builds(clr.Constant, lrs),
    st.builds(clr.RangeSweep, lrs, lrs, st.integers(1, 500), st.sampled_from(["exp", "linear"])),
)
leaves = st.one_of(cyclic(), onecycle(), restarts(), simple)


@st.composite
def joined(draw):
    parts = draw(st.lists(st.one_of(cyclic(), restarts(), simple), min_size=1, max_size=4))
    parts.append(draw(leaves))
    cuts = sorted(set(draw(st.lists(st.integers(1, 2000), min_size=len(parts) - 1, max_size=len(parts) - 1))))
    parts = parts[: len(cuts) + 1]
    return clr.Join(parts, cuts)


any_schedule = st.one_of(leaves, joined())


def horizon(s, n):
    return n if s.max_step is None else min(n, s.max_step + 1)


# ------------------------------------------------------------------- bounds
@SETTINGS
@given(cyclic(modes=("triangular", "triangular2", "exp_range")), st.integers(1, 5000))
def test_cyclic_lr_and_momentum_within_bounds(s, n):
    lr = s.lr_table(n)
    lo, hi = min(s.base_lr, s.max_lr), max(s.base_lr, s.max_lr)
    # base + (max - base)*1 may miss max by an ulp or two of the larger bound (as in torch).
    slack = 4 * np.spacing(hi)
    assert np.all(lr >= lo - slack) and np.all(lr <= hi + slack), (s, lr.min(), lr.max())
    if s.has_momentum:
        m = s.momentum_table(n)
        mlo, mhi = sorted((s.base_momentum, s.max_momentum))
        assert np.all(m >= mlo - 1e-15) and np.all(m <= mhi + 1e-15), (s, m.min(), m.max())


@SETTINGS
@given(onecycle())
def test_onecycle_within_bounds_starts_peaks_ends(s):
    lr = s.lr_table(s.total_steps)  # steps 0..T-1; step T extrapolates past the end
    initial = s.max_lr / s.div_factor
    min_lr = initial / s.final_div_factor
    # Linear annealing rounds (end - start)*pct + start on the scale of max_lr.
    slack = 1e-12 * s.max_lr
    assert np.all(lr <= s.max_lr + slack) and np.all(lr >= min_lr - slack)
    phase = onecycle_phase(s, np.arange(s.total_steps))
    if phase[0] == 0:
        # Step 0 lies in the warm-up phase: pct = 0 gives the initial lr.
        assert lr[0] == pytest.approx(initial, rel=1e-12)
    if phase[-1] == (2 if s.three_phase else 1):
        # Step T-1 ends the last phase at pct = 1.
        assert lr[-1] == pytest.approx(min_lr, rel=1e-9, abs=slack)
    peak_step = s.pct_start * s.total_steps - 1
    if peak_step == int(peak_step) and peak_step >= 0:
        assert lr[int(peak_step)] == pytest.approx(s.max_lr, rel=1e-12)
        assert lr.max() == pytest.approx(s.max_lr, rel=1e-12)
    m = s.momentum_table(s.total_steps)
    assert np.all(m >= s.base_momentum - 1e-12) and np.all(m <= s.max_momentum + 1e-12)


@SETTINGS
@given(restarts(), st.integers(1, 5000))
def test_restarts_within_bounds(s, n):
    lr = s.lr_table(n)
    # peak_decay may take the peak of a late cycle below eta_min; lr then lies between the two.
    # eta_min + (peak - eta_min) cancels to within a few ulps of eta_min.
    floor = min(s.eta_min, s.base_lr * s.peak_decay**n) - 4 * np.spacing(s.eta_min)
    low = np.flatnonzero(lr < floor)
    assert low.size == 0, (
        f"{s}: lr below {floor!r} at step {low[:1].tolist()}: {lr[low[:1]].tolist()} (see "
        "test_restarts_step_on_fractional_cycle_boundary_stays_in_bounds)"
    )
    assert np.all(lr <= s.base_lr * (1 + 1e-12))
    assert lr[0] == (s.eta_min if s.warmup_steps else pytest.approx(s.base_lr, rel=1e-15))


def test_restarts_step_on_fractional_cycle_boundary_stays_in_bounds():
    # Cycle 0 covers steps 0..118, so step 119 starts cycle 1 with T_cur = 0 and the warmup gives
    # exactly eta_min = 0. The cycle start T_0*(m - 1)/(m - 1) rounds to 119.00000000000001 in floating
    # point, and a negative T_cur gives a negative learning rate.
    s = clr.CosineRestarts(1.0, 119, 2.7549553931809956, 0.0, warmup_steps=1)
    assert s.lr(118) > 0
    got = s.lr(119)
    assert got == 0.0, (
        f"BUG: {s}.lr(119) = {got!r}, expected 0.0 (step 119 starts cycle 1, T_cur = 0); the core's "
        "restart_pos gives T_cur = 119 - 119.00000000000001 < 0"
    )
    assert s.lr_table(120)[119] == got


# -------------------------------------------------------------- periodicity
@SETTINGS
@given(
    lrs,
    lrs,
    int_sizes,
    st.integers(0, 400),
    st.sampled_from(["triangular", "welch", "hann"]),
    st.integers(0, 100_000),
    st.integers(1, 50),
)
def test_triangular_is_periodic(base, mx, up, down, window, t, k):
    s = clr.Cyclic(base, mx, up, down, window=window, base_momentum=0.8, max_momentum=0.9)
    total = up + down
    a, b = s.lr(t), s.lr(t + k * total)
    # Not exact: t/total and (t + k*total)/total round differently.
    assert abs(a - b) <= 1e-9 * abs(mx - base) + 1e-15, (s, t, k, a, b)
    assert abs(s.momentum(t) - s.momentum(t + k * total)) <= 1e-9 * 0.1


@SETTINGS
@given(lrs, lrs, int_sizes, st.one_of(st.none(), int_sizes), st.integers(1, 30))
def test_triangular2_amplitude_halves_each_cycle(base, mx, up, down, k):
    s = clr.Cyclic(base, mx, up, down, mode="triangular2")
    total = up + (up if down is None else down)
    expect = base + (mx - base) / 2 ** (k - 1)
    peak_step = (k - 1) * total + up
    assert s.lr(peak_step) == pytest.approx(expect, rel=1e-12)
    cycle = s.lr_table(np.arange((k - 1) * total, k * total))
    extreme = cycle.max() if mx >= base else cycle.min()
    assert extreme == pytest.approx(expect, rel=1e-12)
    assert cycle[0] == pytest.approx(base, rel=1e-12)


def test_triangular2_hand_values():
    s = clr.Cyclic(0.0, 8.0, 2, mode="triangular2")
    assert s.lr_table(13).tolist() == [0, 4, 8, 4, 0, 2, 4, 2, 0, 1, 2, 1, 0]


# ----------------------------------------------------------- tables vs scalars
@SETTINGS
@given(any_schedule, st.integers(1, 1500))
def test_table_equals_scalar_loop(s, n):
    n = horizon(s, n)
    table = s.lr_table(n)
    loop = np.array([s.lr(t) for t in range(n)])
    assert np.array_equal(table, loop)
    assert np.array_equal(s.lr_table(n, dtype=np.float32), table.astype(np.float32))
    # Steps in any integer dtype and any memory layout (here reversed, negative strides).
    assert np.array_equal(s.lr_table(np.arange(n)[::-1]), table[::-1])
    assert np.array_equal(s.lr_table(np.arange(n, dtype=np.int32)), table)
    assert np.array_equal(s.lr_table(np.arange(n, dtype=np.uint16)[::3]), table[::3])
    out = np.full(n, -1.0)
    assert s.lr_table(n, out=out) is out and np.array_equal(out, table)
    if s.has_momentum:
        mt = s.momentum_table(n)
        ml = np.array([np.nan if (m := s.momentum(t)) is None else m for t in range(n)])
        assert np.array_equal(mt, ml, equal_nan=True)
        assert np.array_equal(s.momentum_table(n, dtype=np.float32), mt.astype(np.float32), equal_nan=True)
    else:
        assert s.momentum_table(n) is None
        assert all(s.momentum(t) is None for t in range(0, n, max(1, n // 20)))


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 65_537, 300_001])
def test_large_tables_split_across_threads_equal_scalar_values(n):
    s = clr.Cyclic(1e-4, 1e-2, 1234.5, 777, mode="exp_range", gamma=0.99999, base_momentum=0.8, max_momentum=0.95)
    table = s.lr_table(n)
    assert table.shape == (n,)
    idx = np.unique(np.linspace(0, max(n - 1, 0), 200).astype(np.int64)) if n else np.array([], np.int64)
    assert np.array_equal(table[idx], [s.lr(int(t)) for t in idx])
    assert np.array_equal(s.lr_table(idx), table[idx])
    m = s.momentum_table(n, dtype=np.float32)
    assert np.array_equal(m[idx], np.array([s.momentum(int(t)) for t in idx]).astype(np.float32))


# ------------------------------------------------------------ momentum mirror
@SETTINGS
@given(cyclic(momentum=True), st.integers(1, 3000))
def test_cyclic_momentum_mirrors_lr(s, n):
    # Normalising by a vanishing amplitude would only measure rounding.
    assume(abs(s.max_lr - s.base_lr) > 1e-6 * max(s.max_lr, s.base_lr))
    assume(abs(s.max_momentum - s.base_momentum) > 1e-3)
    lr, m = s.lr_table(n), s.momentum_table(n)
    # Both are base + amplitude * s * scale with the same s * scale, in opposite directions.
    pos_lr = (lr - s.base_lr) / (s.max_lr - s.base_lr)
    pos_m = (s.max_momentum - m) / (s.max_momentum - s.base_momentum)
    tol = 1e-12 * (1 + max(s.base_lr, s.max_lr) / abs(s.max_lr - s.base_lr)) + 1e-12 * (
        1 + s.max_momentum / abs(s.max_momentum - s.base_momentum)
    )
    assert np.allclose(pos_lr, pos_m, rtol=0, atol=tol), (s, np.abs(pos_lr - pos_m).max())
    # In particular the highest lr comes with the lowest momentum when max_lr > base_lr, max_m > base_m.
    if s.max_lr > s.base_lr and s.max_momentum > s.base_momentum:
        assert m[np.argmax(lr)] == pytest.approx(m.min(), abs=tol)


def onecycle_phase(s, t):
    """Phase index of each step, from the phase ends in the OneCycle docstring."""
    T, p = float(s.total_steps), float(s.pct_start)
    ends = [p * T - 1, 2 * p * T - 2] if s.three_phase else [p * T - 1]
    return np.searchsorted(np.array(ends), t, side="left")


@SETTINGS
@given(onecycle())
def test_onecycle_momentum_moves_against_lr(s):
    n = s.total_steps
    lr, m = s.lr_table(n), s.momentum_table(n)
    phase = onecycle_phase(s, np.arange(n))
    d_lr, d_m = np.diff(lr), np.diff(m)
    # Compare steps inside one phase; in the third phase momentum is held at max.
    keep = (phase[1:] == phase[:-1]) & (phase[1:] < 2)
    keep &= (np.abs(d_lr) > 1e-12 * s.max_lr) & (np.abs(d_m) > 1e-12)
    assert np.all(np.sign(d_lr[keep]) == -np.sign(d_m[keep]))
    if s.three_phase:
        assert np.all(m[phase == 2] == s.max_momentum)
    if phase[0] == 0:
        assert m[0] == pytest.approx(s.max_momentum, rel=1e-12)


# -------------------------------------------------------------------- joins
@SETTINGS
@given(
    st.lists(st.one_of(cyclic(), restarts(), simple), min_size=1, max_size=3),
    leaves,
    st.lists(st.integers(1, 700), min_size=3, max_size=3, unique=True),
)
def test_join_clocks_restart_at_boundaries(head, tail, cuts):
    parts = head + [tail]
    bounds = sorted(cuts)[: len(parts) - 1]
    s = clr.Join(parts, bounds)
    edges = [0, *bounds]
    for i, piece in enumerate(parts):
        lo = edges[i]
        hi = edges[i + 1] if i + 1 < len(edges) else lo + horizon(piece, 500)
        got = s.lr_table(np.arange(lo, hi))
        assert np.array_equal(got, piece.lr_table(hi - lo)), f"piece {i} over [{lo}, {hi})"
        if s.has_momentum:
            mom = piece.momentum_table(hi - lo)
            want = np.full(hi - lo, np.nan) if mom is None else mom
            assert np.array_equal(s.momentum_table(np.arange(lo, hi)), want, equal_nan=True)


@SETTINGS
@given(
    st.lists(st.one_of(cyclic(), restarts(), simple), min_size=4, max_size=4),
    leaves,
    st.lists(st.integers(1, 300), min_size=4, max_size=4, unique=True),
)
def test_nested_join_equals_flat_join(parts, last, cuts):
    parts = parts + [last]
    b = sorted(cuts)
    flat = clr.Join(parts, b)
    # Inner joins keep their own clocks: their boundaries are relative to where they start.
    inner = clr.Join(parts[1:3], [b[1] - b[0]])
    nested = clr.Join([parts[0], inner, clr.Join(parts[3:], [b[3] - b[2]])], [b[0], b[2]])
    left = clr.Join([clr.Join(parts[:2], [b[0]]), *parts[2:]], b[1:])
    n = horizon(flat, b[-1] + 400)
    for other in (nested, left):
        assert np.array_equal(other.lr_table(n), flat.lr_table(n))
        if flat.has_momentum:
            assert np.array_equal(other.momentum_table(n), flat.momentum_table(n), equal_nan=True)
        assert other.max_step == flat.max_step


def test_join_truncates_an_inner_piece_that_never_runs():
    # The inner join switches at 100 on its own clock, but the outer boundary cuts it at 50.
    inner = clr.Join([clr.Constant(1.0), clr.Constant(2.0)], [100])
    s = clr.Join([inner, clr.Constant(3.0)], [50])
    assert s.lr_table(60).tolist() == [1.0] * 50 + [3.0] * 10


# ------------------------------------------------------------ scale values
@SETTINGS
@given(st.floats(0.01, 1.0), st.integers(1, 40))
def test_scales_are_the_documented_functions(g, x):
    assert scales.Flat()(x) == 1.0
    assert scales.Halving()(x) == 1 / 2.0 ** (x - 1)
    assert scales.ExpRange(g)(x) == g ** float(x)
    assert scales.Geometric(g)(x) == g ** float(x - 1)


def test_tables_work_in_a_forked_child_after_the_parent_used_threads():
    """A forked child has none of the parent's worker threads; it must not wait for them."""
    import multiprocessing as mp
    import sys

    if sys.platform == "win32" or "fork" not in mp.get_all_start_methods():
        pytest.skip("needs the fork start method")
    s = clr.Cyclic(1e-3, 6e-3, step_size_up=977)
    n = 1 << 18  # large enough for the threaded path
    expected = s.lr_table(n)
    ctx = mp.get_context("fork")
    with warnings.catch_warnings():
        # JAX, imported by the optax and Keras tests of the same run, warns at every fork; this
        # test is about clrfast's own threads, which the child must not wait for.
        warnings.filterwarnings("ignore", message="os.fork\\(\\) was called", category=RuntimeWarning)
        with ctx.Pool(1) as pool:
            result = pool.apply_async(_child_table, (s, n))
            got = result.get(timeout=60)
    assert np.array_equal(got, expected)


def _child_table(s, n):
    return s.lr_table(n)
