"""clrfast.optax: optax schedules whose values are float32(s.lr(count)) from the C++ core, under jax.jit.

The oracle is the core itself (``s.lr``/``s.momentum`` in double, rounded to float32 here) and
optax's own optimizers fed those oracle values through a plain lookup. XLA flushes float32
subnormals (below 1.2e-38) to zero, so the oracle does too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax", reason="clrfast.optax needs jax (pip install 'clrfast[jax]')")
optax = pytest.importorskip("optax")

import clrfast as clr  # noqa: E402
import clrfast.optax as clro  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INT32_MAX = 2**31 - 1


def held(s, k: int) -> int:
    """The step whose value count ``k`` reads: past a finite schedule's end, its last step."""
    return k if s.max_step is None else min(k, s.max_step)


def _ftz(values):
    """float32 values with subnormals flushed to zero: XLA's CPU arithmetic flushes them, while a
    table gathered on the device keeps them, so both sides of a comparison are flushed."""
    v = np.array(values, np.float32)
    v[np.abs(v) < np.finfo(np.float32).tiny] = 0.0
    return v


def want_lr(s, counts):
    return _ftz([s.lr(held(s, int(k))) for k in counts])


def want_momentum(s, counts):
    return _ftz([s.momentum(held(s, int(k))) for k in counts])


# ------------------------------------------------------------ strategies
lrs = st.floats(0.0, 1.0)
steps = st.floats(0.5, 40.0)


@st.composite
def momentum_pair(draw):
    return {"base_momentum": draw(st.floats(0.0, 0.9)), "max_momentum": draw(st.floats(0.85, 0.99))}


@st.composite
def cyclic(draw, momentum=False):
    kw = momentum_pair() if momentum else st.one_of(st.just({}), momentum_pair())
    return clr.Cyclic(
        draw(lrs),
        draw(lrs),
        draw(steps),
        draw(st.one_of(st.none(), st.floats(0.0, 40.0))),
        mode=draw(st.sampled_from(["triangular", "triangular2", "exp_range"])),
        gamma=draw(st.floats(0.9, 1.0)),
        window=draw(st.sampled_from(["triangular", "welch", "hann"])),
        **draw(kw),
    )


@st.composite
def onecycle(draw):
    try:
        return clr.OneCycle(
            draw(lrs),
            draw(st.integers(2, 300)),
            pct_start=draw(st.floats(0.05, 0.95)),
            anneal=draw(st.sampled_from(["cos", "linear"])),
            three_phase=draw(st.booleans()),
        )
    except ValueError:  # a zero-length phase
        assume(False)


@st.composite
def restarts(draw):
    t0 = draw(st.integers(1, 40))
    return clr.CosineRestarts(
        draw(lrs),
        t0,
        T_mult=draw(st.floats(1.0, 2.5)),
        eta_min=draw(st.floats(0.0, 1e-3)),
        peak_decay=draw(st.floats(0.5, 1.0)),
        warmup_steps=draw(st.integers(0, t0 - 1)),
    )


leaf = st.one_of(
    cyclic(),
    onecycle(),
    restarts(),
    st.builds(clr.Warmup, lrs, lrs, st.integers(1, 50)),
    st.builds(clr.RangeSweep, st.floats(1e-6, 1e-3), st.floats(1e-2, 10.0), st.integers(1, 200)),
    st.builds(clr.Constant, lrs),
)


@st.composite
def any_schedule(draw):
    first = draw(leaf)
    if not draw(st.booleans()):
        return first
    span = draw(st.integers(1, 300)) if first.max_step is None else draw(st.integers(1, first.max_step + 1))
    return clr.Join([first, draw(leaf)], [span])


counts = st.lists(st.one_of(st.integers(0, 400), st.integers(0, INT32_MAX)), min_size=1, max_size=24)
# Short tables, so most counts take the host path; the default 2**20-step table (whose 4 MiB
# constant costs a few tenths of a second per compile) is tested once, below.
table_steps = st.integers(1, 300)
jax_settings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------- values
@jax_settings
@given(any_schedule(), counts, table_steps)
def test_jitted_schedule_matches_the_core(s, cs, n):
    sched = clro.schedule(s, num_steps=n)
    c = np.array(cs, np.int32)
    # Vector counts in one jitted call; a small table sends most counts through the host path.
    np.testing.assert_array_equal(_ftz(jax.jit(sched)(jnp.asarray(c))), want_lr(s, c))
    one = jax.jit(sched)
    for k in cs[:4]:  # a scalar count, as optax passes it
        got = one(jnp.int32(k))
        assert got.dtype == jnp.float32 and got.shape == ()
        assert _ftz([got])[0] == want_lr(s, [k])[0], k


@jax_settings
@given(st.one_of(cyclic(momentum=True), st.builds(clr.OneCycle, lrs, st.integers(10, 300))), counts, table_steps)
def test_jitted_momentum_schedule_matches_the_core(s, cs, n):
    sched = clro.momentum_schedule(s, num_steps=n)
    c = jnp.asarray(np.array(cs, np.int32))
    np.testing.assert_array_equal(_ftz(jax.jit(sched)(c)), want_momentum(s, cs))
    np.testing.assert_array_equal(_ftz(jax.jit(jax.vmap(sched))(c)), want_momentum(s, cs))


def test_table_is_gathered_on_the_device_and_host_path_stays_exact():
    s = clr.Cyclic(1e-3, 6e-3, step_size_up=7, mode="exp_range", gamma=0.999)
    sched = clro.schedule(s, num_steps=50)
    assert sched.num_steps == 50 and sched.nbytes == 200
    np.testing.assert_array_equal(np.asarray(sched._device_values), s.lr_table(50, dtype=np.float32))
    c = jnp.arange(0, 200, dtype=jnp.int32)  # 0..49 from the table, 50..199 from the host
    np.testing.assert_array_equal(np.asarray(jax.jit(sched)(c)), s.lr_table(200, dtype=np.float32))
    # The host branch is not in a table-only program: a fully tabled finite schedule has no callback.
    fin = clro.schedule(clr.OneCycle(0.1, 100))
    assert fin.num_steps == 101 and "callback" not in jax.jit(fin).lower(jnp.int32(0)).as_text()
    assert "callback" in jax.jit(sched).lower(jnp.int32(0)).as_text()


def test_default_table_length_and_memory():
    inf = clro.schedule(clr.Cyclic(1e-3, 6e-3))
    assert inf.num_steps == 2**20 and inf.nbytes == 4 * 2**20
    assert "lr table of 1048576 steps (4 MiB)" in repr(inf)
    long = clro.schedule(clr.OneCycle(0.1, 10**9))  # capped; the rest exact from the host
    assert long.num_steps == 2**20
    assert np.float32(jax.jit(long)(jnp.int32(500_000_000))) == np.float32(clr.OneCycle(0.1, 10**9).lr(500_000_000))
    assert clro.momentum_schedule(clr.OneCycle(0.1, 10), num_steps=5).num_steps == 5


def test_counts_past_a_finite_end_hold_the_last_value():
    s = clr.OneCycle(0.1, total_steps=20)
    sched = jax.jit(clro.schedule(s))
    last = np.float32(s.lr(20))
    for k in (20, 21, 1000, INT32_MAX):
        assert np.float32(sched(jnp.int32(k))) == last
    with pytest.raises(ValueError, match="Tried to step 21 times"):
        s.lr(21)  # the core itself still refuses, as torch does


def test_int32_counts_never_overflow():
    s = clr.OneCycle(0.1, total_steps=3_000_000_000)  # ends past int32: the comparison constants must not wrap
    sched = clro.schedule(s)
    jitted = jax.jit(sched)
    for k in (INT32_MAX, INT32_MAX - 1, 2**30):
        assert np.float32(jitted(jnp.int32(k))) == np.float32(s.lr(k))
    # optax's counters saturate at int32 max; the schedule then reads that step's value.
    tx = optax.scale_by_schedule(sched)
    u, state = jax.jit(tx.update)(jnp.ones(2), optax.ScaleByScheduleState(count=jnp.int32(INT32_MAX)))
    assert int(state.count) == INT32_MAX
    np.testing.assert_array_equal(np.asarray(u), np.full(2, np.float32(s.lr(INT32_MAX))))
    # A Python int past int32 is answered on the host instead of overflowing jnp.asarray.
    assert np.float32(sched(2**40)) == np.float32(s.lr(3_000_000_000))  # held at the end
    c = clr.Cyclic(1e-3, 6e-3, 7.5)
    assert np.float32(clro.schedule(c)(2**40)) == np.float32(c.lr(2**40))
    # Only a hand-rolled int32 counter wraps negative: NaN, never a plausible wrong value.
    assert np.isnan(np.float32(jax.jit(clro.schedule(c))(jnp.int32(-5))))
    # Narrow counts are widened before the comparison with the table length.
    assert np.float32(jax.jit(clro.schedule(c))(jnp.uint8(200))) == np.float32(c.lr(200))


# -------------------------------------------------- counts of every dtype
INT_DTYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
# The dtypes jax holds without x64 (a 64-bit request is truncated to 32 bits, with a warning).
JAX_DTYPES = (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32)


def _forms(dt, k):
    """Count ``k`` as optax may be handed it: NumPy scalar, 0-d NumPy array, jax array."""
    forms = {"numpy scalar": dt(k), "0-d array": np.array(k, dt)}
    if dt in JAX_DTYPES:
        forms["jax array"] = jnp.asarray(k, dt)
    return forms


@pytest.mark.parametrize(
    "clr_s, optax_s, atol, ks",
    [
        # t/64 and 1 - t/64 are exact in float32: optax's value is the core's, bit for bit; both hold 1 after 64.
        (
            clr.Warmup(0.0, 1.0, 64),
            optax.linear_schedule(0.0, 1.0, 64),
            0.0,
            (0, 7, 49, 50, 63, 64, 100, 127, 255, 999),
        ),
        # optax computes the cosine in float32, the core in double and then rounds: ~1 float32 ulp of 0.1.
        # Within the first cycle only, since optax's cosine holds its floor where the core restarts.
        (clr.CosineRestarts(0.1, T_0=120), optax.cosine_decay_schedule(0.1, 120), 3e-8, (0, 7, 49, 50, 100, 119)),
    ],
    ids=["linear", "cosine"],
)
def test_counts_of_every_integer_dtype_match_optax_and_the_signed_count(clr_s, optax_s, atol, ks):
    # Both parameters fit int8: optax's own schedules clip the count in its dtype, so a longer
    # schedule would wrap there (an int8 count against 2**16 steps reads 0) and be no oracle.
    sched = clro.schedule(clr_s, num_steps=50)  # counts from 50 on take the host path
    jitted = jax.jit(sched)
    for dt in INT_DTYPES:
        fits = [k for k in ks if k <= np.iinfo(dt).max]
        for k in fits:
            signed = np.float32(sched(np.int64(k)))
            assert signed == want_lr(clr_s, [k])[0], k
            for form, count in _forms(dt, k).items():
                theirs = float(optax_s(count))
                for how, f in (("eager", sched), ("jit", jitted)):
                    got = f(count)
                    assert got.dtype == jnp.float32 and got.shape == (), (dt, form, how, k)
                    assert np.float32(got) == signed, (dt, form, how, k)
                    assert abs(float(got) - theirs) <= atol, (dt, form, how, k)
        vector = np.array(fits, dt)  # one call, table and host counts together
        np.testing.assert_array_equal(np.asarray(sched(vector)), want_lr(clr_s, fits))
        np.testing.assert_array_equal(np.asarray(jitted(vector)), want_lr(clr_s, fits))
    # Neighbouring steps differ, across the table's end too: a count read as another step would fail.
    assert len(set(want_lr(clr_s, (7, 49, 50)).tolist())) == 3


def test_unsigned_counts_past_int32_are_exact():
    c = clr.Cyclic(1e-3, 6e-3, 7.3)
    sched = clro.schedule(c, num_steps=50)
    wide = (INT32_MAX + 1, 3_000_000_000, 2**32 - 1)
    # Each differs from the value at int32 max, where a saturating cast would land.
    assert np.float32(c.lr(INT32_MAX)) not in {np.float32(c.lr(k)) for k in wide}
    for k in wide:
        want = np.float32(c.lr(k))
        assert np.float32(sched(np.int64(k))) == want
        for count in (np.uint32(k), np.array(k, np.uint32), np.uint64(k), jnp.asarray(k, jnp.uint32)):
            assert np.float32(sched(count)) == want, (count, k)
            # Traced: a uint32 count is not saturated at int32 max; the host callback reads it whole.
            assert np.float32(jax.jit(sched)(count)) == want, (count, k)
    for k in (2**40, 2**53):  # too wide for jax without x64: answered on the host
        assert np.float32(sched(np.uint64(k))) == np.float32(sched(np.int64(k))) == np.float32(c.lr(k))
    # Past int64, a uint64 saturates at its largest step instead of wrapping to a negative one.
    top = np.float32(sched(np.int64(2**63 - 1)))
    assert np.float32(sched(np.uint64(2**64 - 1))) == top and not np.isnan(top)


def test_64_bit_counts_under_x64():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            """
import warnings
warnings.simplefilter("error")
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, optax, clrfast as clr, clrfast.optax as clro
c = clr.Cyclic(1e-3, 6e-3, 7.3, mode="triangular2")
f = jax.jit(clro.schedule(c, num_steps=10))
ks = [0, 5, 9, 10, 3_000_000_000, 2**40]
for dt in (jnp.int64, jnp.uint64, jnp.uint32):
    counts = [k for k in ks if k <= jnp.iinfo(dt).max]
    got = f(jnp.asarray(counts, dt))
    assert got.dtype == jnp.float32, got.dtype
    assert got.tolist() == [float(np.float32(c.lr(k))) for k in counts], (dt, got)
w, ref = jax.jit(clro.schedule(clr.Warmup(0.0, 1.0, 2**16), num_steps=10)), optax.linear_schedule(0.0, 1.0, 2**16)
for k in (3, 40_000, 2**40):
    assert float(w(jnp.uint64(k))) == float(ref(jnp.uint64(k))) == float(w(jnp.int64(k))), k
print("ok")
""",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


# ------------------------------------------------- inside optax optimizers
def _run(tx, steps, grads=None):
    params = jnp.zeros(3)
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state, u

    trace = []
    for k in range(steps):
        g = jnp.asarray(grads[k] if grads is not None else np.ones(3, np.float32))
        params, state, u = step(params, state, g)
        trace.append((np.asarray(params), state, np.asarray(u)))
    return trace


GRADS = np.random.default_rng(0).standard_normal((30, 3)).astype(np.float32)


@pytest.mark.parametrize("s", [clr.Cyclic(0.01, 0.1, 4, mode="triangular2"), clr.OneCycle(0.1, 9)])
def test_inside_optax_sgd_the_update_at_count_k_uses_lr_k(s):
    steps = 30  # past the OneCycle's end (held) and past the 5-step table (host)
    trace = _run(optax.sgd(clro.schedule(s, num_steps=5)), steps)
    for k, (_, _, u) in enumerate(trace):
        np.testing.assert_array_equal(u, np.full(3, -np.float32(s.lr(held(s, k)))))


def test_inside_optax_adamw_matches_adamw_fed_the_core_values():
    s = clr.Cyclic(1e-3, 1e-2, 3, mode="exp_range", gamma=0.99)
    oracle = jnp.asarray(want_lr(s, range(30)))
    got = _run(optax.adamw(clro.schedule(s, num_steps=7), weight_decay=0.1), 30, GRADS)
    ref = _run(optax.adamw(lambda c: oracle[c], weight_decay=0.1), 30, GRADS)
    for (p, _, _), (q, _, _) in zip(got, ref):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("opt, key", [(optax.sgd, "momentum"), (optax.adam, "b1")])
def test_inject_hyperparams_cycles_momentum_and_b1(opt, key):
    s = clr.Cyclic(0.01, 0.1, 4, base_momentum=0.8, max_momentum=0.95)
    lr_o, mom_o = jnp.asarray(want_lr(s, range(30))), jnp.asarray(want_momentum(s, range(30)))
    tx = optax.inject_hyperparams(opt)(
        learning_rate=clro.schedule(s, num_steps=10), **{key: clro.momentum_schedule(s, num_steps=10)}
    )
    got = _run(tx, 30, GRADS)
    for k, (_, state, _) in enumerate(got):  # hyperparams hold the values update k used
        assert np.float32(state.hyperparams["learning_rate"]) == np.float32(s.lr(k))
        assert np.float32(state.hyperparams[key]) == np.float32(s.momentum(k))
    ref = _run(optax.inject_hyperparams(opt)(learning_rate=lambda c: lr_o[c], **{key: lambda c: mom_o[c]}), 30, GRADS)
    for (p, _, _), (q, _, _) in zip(got, ref):
        np.testing.assert_array_equal(p, q)
    # The momentum matters: a constant one ends elsewhere.
    const = _run(optax.inject_hyperparams(opt)(learning_rate=lambda c: lr_o[c], **{key: 0.9}), 30, GRADS)
    assert not np.allclose(got[-1][0], const[-1][0], rtol=1e-4)


def test_float64_tables_under_x64():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            """
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, clrfast as clr, clrfast.optax as clro
s = clr.Cyclic(1e-3, 6e-3, 7.3, mode="triangular2")
f = jax.jit(clro.schedule(s, num_steps=10, dtype=jnp.float64))
c = jnp.asarray([0, 5, 9, 10, 3_000_000_000], jnp.int64)
assert f(c).dtype == jnp.float64
assert [float(v) for v in f(c)] == [s.lr(int(k)) for k in c], f(c)
print("ok")
""",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


# ------------------------------------------------------------- bad input
def test_bad_input_names_the_argument_and_value():
    c = clr.Cyclic(1e-3, 6e-3)
    with pytest.raises(TypeError, match="schedule must be a clrfast schedule.*got 0.1"):
        clro.schedule(0.1)
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        clro.schedule(c, num_steps=0)
    with pytest.raises(TypeError, match="num_steps must be an integer, got 2.5"):
        clro.schedule(c, num_steps=2.5)
    with pytest.raises(ValueError, match=r"schedule.schedules\[1\] defines no momentum"):
        clro.momentum_schedule(
            clr.Join([clr.Cyclic(0.1, 1, 5, base_momentum=0.8, max_momentum=0.9), clr.Constant(0.1)], [10])
        )
    with pytest.raises(ValueError, match="dtype=float64 needs jax_enable_x64"):
        clro.schedule(c, dtype=jnp.float64)
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int32"):
        clro.schedule(c, dtype=np.int32)
    sched = clro.schedule(c)
    with pytest.raises(ValueError, match="count must be >= 0, got -1"):
        sched(-1)
    with pytest.raises(TypeError, match="count must be an integer step count, got 1.5"):
        sched(1.5)
    with pytest.raises(TypeError, match="count must be an integer step count, got True"):
        sched(True)
    with pytest.raises(TypeError, match="count must be an integer step count, got dtype float32"):
        jax.jit(sched)(jnp.float32(3))
    with pytest.raises(TypeError, match=r"count must be an integer step count, got array\(3\.\)"):
        sched(np.array(3.0))
    with pytest.raises(OverflowError, match=f"count must be <= {2**63 - 1}, got {2**70}"):
        sched(2**70)


# ----------------------------------------------------- imports, examples
def test_import_clrfast_needs_no_framework_and_missing_jax_names_the_extra():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"jax", "jaxlib", "optax", "keras"}:
            raise ImportError(f"{name} is blocked in this test", name=name)
sys.meta_path.insert(0, _Block())
import clrfast
assert clrfast.Cyclic(1e-3, 6e-3).lr(10) > 0
assert not {"jax", "optax", "keras"} & set(sys.modules), sorted(sys.modules)
try:
    import clrfast.optax
except ImportError as e:
    print(e)
""",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'clrfast[jax]'" in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn")
def test_optax_example_trains_digits():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "optax_digits.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert float(lines[-1].split("test accuracy")[1]) >= 0.9, proc.stdout
    pairs = [re.findall(r"(lr|momentum) (\S+) \(core (\S+)\)", line) for line in lines[:-1]]
    assert len(pairs) == 3 and all(len(p) == 2 for p in pairs), proc.stdout
    for p in pairs:  # the hyperparameters optax used equal the core's, to the printed digits
        assert all(used == core for _, used, core in p), p
