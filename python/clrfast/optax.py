"""optax front end: clrfast schedules as optax schedules, with values from the C++ core.

>>> import optax, clrfast as clr, clrfast.optax
>>> s = clr.Cyclic(1e-3, 6e-3, step_size_up=2000, base_momentum=0.85, max_momentum=0.95)
>>> tx = optax.sgd(learning_rate=clrfast.optax.schedule(s), momentum=0.9)
>>> tx = optax.inject_hyperparams(optax.sgd)(              # cycle the momentum too
...     learning_rate=clrfast.optax.schedule(s), momentum=clrfast.optax.momentum_schedule(s))
>>> tx = optax.inject_hyperparams(optax.adam)(             # Adam: the momentum schedule drives b1
...     learning_rate=clrfast.optax.schedule(s), b1=clrfast.optax.momentum_schedule(s))

The update at optax count ``k`` (0 for the first update) uses ``float32(s.lr(k))``, as torch's
scheduler gives step ``k``. Values come from a table the core computes once and that is
gathered on the device under ``jax.jit``; counts past it are computed exactly by the core on the
host. See :mod:`clrfast._device_table` for why, and for the memory it takes.

The LR range test runs around a user's jitted step: :func:`lr_find`.

Importing this module imports JAX; ``import clrfast`` alone does not.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as e:  # pragma: no cover - exercised in a subprocess without jax
    raise ImportError(f"clrfast.optax needs JAX and optax: pip install 'clrfast[jax]' ({e})") from e

from . import _range_test as rt
from . import _validate as check
from ._device_table import ValueTable, jax_lookup
from ._range_test import LRFindResult


class _Table(ValueTable):
    """A value table whose host path takes counts of every integer dtype, unsigned ones included.

    Both the eager path and ``jax_lookup``'s host callback (which passes the count's own dtype,
    ``uint32`` for a ``jnp.uint32`` counter) come through here.
    """

    def host(self, steps):
        return super().host(check.step_counts("count", steps))


class TableSchedule:
    """An optax schedule (``count -> value``) reading a clrfast schedule's core-computed table.

    Works eagerly, under ``jax.jit``/``vmap``, and wherever optax takes a schedule. ``count`` is
    an integer of any integer dtype, signed or unsigned: a jax array (traced or not), a NumPy
    integer or integer array, or a Python int. Python and NumPy integers are answered on the
    host, so a count beyond ``2**31 - 1`` never overflows an int32.
    """

    def __init__(self, schedule, quantity, num_steps=None, dtype=None):
        dtype = np.dtype(jnp.float32 if dtype is None else dtype)
        if dtype == np.float64 and not jax.config.jax_enable_x64:
            raise ValueError("dtype=float64 needs jax_enable_x64 (jax.config.update('jax_enable_x64', True))")
        self.table = _Table(schedule, quantity, num_steps, dtype)
        with jax.ensure_compile_time_eval():
            self._device_values = jnp.asarray(self.table.values)

    @property
    def schedule(self):
        return self.table.schedule

    @property
    def num_steps(self) -> int:
        """Length of the device table; larger counts are computed on the host (or held past the end)."""
        return self.table.n

    @property
    def nbytes(self) -> int:
        """Device memory the table takes."""
        return self.table.nbytes

    def __call__(self, count):
        if isinstance(count, (bool, np.bool_)):
            raise TypeError(f"count must be an integer step count, got {count!r}")
        if isinstance(count, numbers.Integral) or (isinstance(count, np.ndarray) and count.dtype.kind in "iu"):
            if np.any(np.asarray(count) < 0):
                raise ValueError(f"count must be >= 0, got {count!r}")
            return jnp.asarray(self.table.host(count))
        if isinstance(count, (numbers.Real, np.ndarray)):
            raise TypeError(f"count must be an integer step count, got {count!r}")
        return jax_lookup(self.table, count, self._device_values)

    def __repr__(self) -> str:
        fn = "schedule" if self.table.quantity == "lr" else "momentum_schedule"
        return f"clrfast.optax.{fn}({self.table.describe()})"


def schedule(s, *, num_steps=None, dtype=None) -> TableSchedule:
    """The learning rate of clrfast schedule ``s`` as an optax schedule: ``count -> float32(s.lr(count))``.

    ``num_steps`` sets the device table length (default ``min(2**20, s.max_step + 1)``, 4 MiB at
    most); counts past it stay exact, computed by the core on the host. Past a finite schedule's
    end the value at ``s.max_step`` is held. ``dtype`` is float32 (default) or float64 (x64 only).
    """
    return TableSchedule(s, "lr", num_steps, dtype)


def momentum_schedule(s, *, num_steps=None, dtype=None) -> TableSchedule:
    """The momentum of ``s`` as an optax schedule, for ``momentum`` of ``optax.sgd`` or ``b1`` of ``optax.adam``.

    Pass it through ``optax.inject_hyperparams``, which evaluates callables at each update::

        optax.inject_hyperparams(optax.sgd)(learning_rate=schedule(s), momentum=momentum_schedule(s))
        optax.inject_hyperparams(optax.adam)(learning_rate=schedule(s), b1=momentum_schedule(s))

    Every piece of ``s`` must define a momentum (``Cyclic`` with ``base_momentum``/``max_momentum``,
    ``OneCycle`` with ``cycle_momentum=True``). Otherwise as :func:`schedule`.
    """
    return TableSchedule(s, "momentum", num_steps, dtype)


def _copy(tree):
    # Fresh buffers, so a step that donates its inputs cannot delete the caller's state.
    return jax.tree.map(lambda a: jnp.array(a, copy=True) if isinstance(a, jax.Array) else a, tree)


def lr_find(
    step: Callable,
    state,
    batches: Iterable,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exp",
    smooth: float = 0.95,
    diverge: float = 4.0,
    val_fn: Callable | None = None,
    val_every: int = 1,
    progress: bool | None = None,
    min_div: float = 4.0,
    base_div: float = 4.0,
) -> LRFindResult:
    r"""LR range test around a jitted training step: ``step(state, batch, lr) -> (state, loss)``.

    ``state`` is whatever the step carries (params and optax state, a key, ...); ``lr`` arrives
    as a float32 scalar array, ``clrfast.RangeSweep(start_lr, end_lr, num_steps, mode).lr(t)``
    at step ``t``, so a jitted step compiles once. With ``optax.inject_hyperparams`` the step
    writes it into the optimizer's state::

        tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)

        @jax.jit
        def step(state, batch, lr):
            params, opt_state = state
            opt_state.hyperparams["learning_rate"] = lr
            loss, grads = jax.value_and_grad(loss_fn)(params, batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        result = clrfast.optax.lr_find(step, (params, tx.init(params)), batches)

    ``batches`` is iterated for one batch per step; a re-iterable one (a list) starts a new
    pass when it runs out, a one-shot iterator ends the test (``stop_reason="data"``).
    ``val_fn(state)``, when given, is recorded every ``val_every`` steps.

    The sweep, smoothing, divergence rule, suggestion and the :class:`LRFindResult` are those
    of :func:`clrfast.torch.lr_find` and :func:`clrfast.keras.lr_find` (one implementation,
    :mod:`clrfast._range_test`). ``state`` is left as it was: JAX arrays are immutable, and the
    sweep starts from a copy, so a step that donates its inputs does not delete it. There are
    no global RNGs to restore; the key of a stochastic step travels in ``state``.
    """
    if not callable(step):
        raise TypeError(f"step must be callable as step(state, batch, lr) -> (state, loss), got {step!r}")
    if val_fn is not None and not callable(val_fn):
        raise TypeError(f"val_fn must be callable, got {val_fn!r}")
    if not isinstance(batches, Iterable):
        raise TypeError(f"batches must be iterable, got {batches!r} of type {type(batches).__name__}")
    cfg = rt.settings(start_lr, end_lr, num_steps, mode, smooth, diverge, val_every, min_div, base_div)
    rt.check_progress(progress)
    bar = rt.progress_bar(cfg.num_steps, progress)

    def one_run(seed) -> dict:
        data = rt.Batches(batches)
        current = [_copy(state)]

        def one_step(lr: float) -> float | None:
            batch = data.next()
            if batch is None:
                return None
            out = step(current[0], batch, jnp.float32(lr))
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(f"step must return (state, loss), got {type(out).__name__}")
            current[0], loss = out
            if np.size(loss) != 1:
                raise TypeError(f"the loss step returns must be a scalar, got shape {np.shape(loss)}")
            return float(np.asarray(loss).reshape(()))

        validate = None
        if val_fn is not None:

            def validate() -> float:
                return float(val_fn(current[0]))

        return rt.sweep(
            one_step,
            cfg,
            validate=validate,
            bar=bar,
            describe_data=lambda: f"batches gave {data.count}",
        )

    try:
        return rt.run_seeds(one_run, cfg, None, restore=lambda: None)
    finally:
        if bar is not None:
            bar.close()


__all__ = ["schedule", "momentum_schedule", "TableSchedule", "lr_find", "LRFindResult"]
