"""clrfast.optax.lr_find: the shared LR range test around a user's jitted optax step.

The step trains 0.5*c*w^2 with optax.sgd (its lr injected per step), so the loss at every step
is a known function of the lrs applied; a Python oracle replays it.
"""

from __future__ import annotations

import math
import re

import clrfast as clr
import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import clrfast.optax as co  # noqa: E402
import jax.numpy as jnp  # noqa: E402

TX = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
TRACES = []


def _step(state, c, lr):
    TRACES.append(1)  # runs once per compilation
    params, opt_state = state
    opt_state.hyperparams["learning_rate"] = lr
    loss, grads = jax.value_and_grad(lambda w: 0.5 * c * jnp.sum(w * w))(params)
    updates, opt_state = TX.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss


def _state(w0=1.0):
    params = jnp.array([w0], jnp.float32)
    return params, TX.init(params)


def _sweep(start, end, n, t):
    return start * (end / start) ** (t / (n - 1))


def _oracle(start, end, n, beta, diverge, cs, w0=1.0):
    """SGD on 0.5*c*w^2 in float32, as optax computes it, then the documented smoothing and stop rule."""
    w = np.float32(w0)
    losses, smoothed, avg, best = [], [], 0.0, math.inf
    for t in range(n):
        lr, c = np.float32(_sweep(start, end, n, t)), np.float32(cs[t % len(cs)])
        losses.append(float(np.float32(0.5) * c * (w * w)))
        w = np.float32(w - lr * (c * w))
        avg = beta * avg + (1 - beta) * losses[-1]
        smoothed.append(avg / (1 - beta ** (t + 1)))
        best = min(best, smoothed[-1])
        if smoothed[-1] - best > (diverge - 1) * abs(best):
            return losses, smoothed, "diverged"
    return losses, smoothed, "end"


def test_sweep_losses_and_divergence_match_an_oracle_and_the_step_compiles_once():
    TRACES.clear()
    cs = [1.0, 0.5, 2.0, 1.5]
    data = [jnp.float32(c) for c in cs]
    start, end, n = 1e-3, 30.0, 60
    res = co.lr_find(
        jax.jit(_step), _state(), data, start_lr=start, end_lr=end, num_steps=n, smooth=0.9, progress=False
    )
    losses, smoothed, stop = _oracle(start, end, n, 0.9, 4.0, cs)
    assert res.stop_reason == stop == "diverged" and len(res.losses) == len(losses) < n
    np.testing.assert_allclose(res.lrs, [_sweep(start, end, n, t) for t in range(len(losses))], rtol=1e-14)
    np.testing.assert_allclose(res.losses, losses, rtol=2e-6)
    np.testing.assert_allclose(res.smoothed, smoothed, rtol=2e-6)
    assert res.diverged_lr == res.lrs[-1]
    assert len(TRACES) == 1  # the lr is an argument, not a constant: one compilation for the sweep
    assert res.max_lr == max(res.lr_steep, res.lr_min / 4) and res.base_lr == res.max_lr / 4


def test_the_callers_state_survives_a_step_that_donates_it():
    state = _state(0.75)
    res = co.lr_find(
        jax.jit(_step, donate_argnums=0),
        state,
        [jnp.float32(1.0)] * 5,  # re-iterated: passes restart
        start_lr=1e-3,
        end_lr=1.0,
        num_steps=20,
        progress=False,
    )
    assert res.stop_reason == "end" and len(res.lrs) == 20
    assert float(state[0][0]) == 0.75 and int(state[1].count) == 0


def test_a_one_shot_iterator_ends_the_test_and_val_fn_is_recorded():
    seen = []

    def val_fn(state):
        seen.append(float(state[0][0]))
        return 0.5 * seen[-1] ** 2

    gen = (jnp.float32(1.0) for _ in range(14))
    res = co.lr_find(
        jax.jit(_step),
        _state(),
        gen,
        start_lr=1e-3,
        end_lr=0.1,
        num_steps=40,
        val_fn=val_fn,
        val_every=4,
        progress=False,
    )
    assert res.stop_reason == "data" and len(res.lrs) == 14
    assert len(seen) == 4 and np.isnan(res.val[[1, 2, 3, 5]]).all()
    # The validation after step t sees the params the training loss of step t + 1 is computed at.
    np.testing.assert_allclose(res.val[[0, 4, 8]], res.losses[[1, 5, 9]], rtol=1e-6)


def test_the_result_builds_the_schedule_optax_then_runs():
    res = co.lr_find(
        jax.jit(_step), _state(), [jnp.float32(1.0)], start_lr=1e-3, end_lr=30.0, num_steps=50, progress=False
    )
    s = res.to_schedule("triangular", step_size_up=10)
    assert s == clr.Cyclic(res.base_lr, res.max_lr, 10)
    sched = co.schedule(s)
    assert float(sched(0)) == float(np.float32(res.base_lr)) and float(sched(10)) == float(np.float32(res.max_lr))


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"step": 3}, TypeError, "step must be callable as step(state, batch, lr) -> (state, loss), got 3"),
        ({"batches": 5}, TypeError, "batches must be iterable, got 5 of type int"),
        ({"num_steps": 5}, ValueError, "num_steps must be >= 10, got 5"),
        ({"end_lr": 1e-4}, ValueError, "end_lr must be > start_lr, got start_lr=0.001, end_lr=0.0001"),
        ({"val_fn": 1}, TypeError, "val_fn must be callable, got 1"),
        ({"progress": "no"}, TypeError, "progress must be True, False or None, got 'no'"),
        ({"step": lambda s, b, lr: 1.0}, TypeError, "step must return (state, loss), got float"),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, message):
    args = {"step": jax.jit(_step), "batches": [jnp.float32(1.0)], "start_lr": 1e-3, "progress": False}
    args.update(kwargs)
    step, batches = args.pop("step"), args.pop("batches")
    with pytest.raises(exc, match="^" + re.escape(message)):
        co.lr_find(step, _state(), batches, **args)
