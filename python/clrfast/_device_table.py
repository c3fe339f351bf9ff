"""Schedule values for the optax and Keras front ends: a table the C++ core computes once.

Why a table and not the closed form on the device: JAX computes in float32 unless x64 is on, so
re-writing the formulas with ``jax.numpy`` would differ from ``float32(s.lr(t))`` in the last bits
(``x = 1 + t/total - cycle`` loses most of its bits in float32 once ``t`` is large), and it would
be a second copy of the math. Instead the core fills ``values[t] = float32(s.lr(t))`` for
``t < n``; a traced count gathers from it on the device. Counts past the table are computed
exactly by the core on the host (a host callback, taken only when a count reaches that far), so
no count a run reaches ever gets a wrong value. A finite schedule holds its last value past its
end, as optax's schedules do (torch raises there; extending a run should not crash it).

Cost: 4 bytes per step per quantity (8 in float64); ``n`` is ``2**20`` by default (4 MiB), or
the whole of a shorter finite schedule. XLA embeds the table as a constant of each compiled
program, so compile time grows with it (on 2 CPU cores: ~0.2 s for the default 4 MiB, ~1.7 s
for 64 MiB). A count past the table costs a host round trip (~0.2 ms on CPU; a device-to-host
sync on an accelerator): size ``num_steps`` to runs of up to ~10**7 steps; past that the host
path is the cheaper one. XLA flushes float32 subnormals (below 1.2e-38) to zero.
"""

from __future__ import annotations

import numpy as np

from . import _validate as check
from .schedules import Join, Schedule

DEFAULT_STEPS = 1 << 20
# Table indices must fit an int32 count; a table this long would be 8 GiB anyway.
MAX_STEPS = (1 << 31) - 1
QUANTITIES = ("lr", "momentum")


def _pieces_without_momentum(s: Schedule, path: str = "schedule") -> list[str]:
    if isinstance(s, Join):
        out = []
        for i, piece in enumerate(s.schedules):
            out += _pieces_without_momentum(piece, f"{path}.schedules[{i}]")
        return out
    return [] if s.has_momentum else [path]


class ValueTable:
    """``float32(s.lr(t))`` (or momentum) for ``t < n`` in a NumPy array, plus exact values past it.

    ``num_steps`` is the table length (default ``min(2**20, max_step + 1)``); it never exceeds a
    finite schedule's ``max_step + 1``, since past the end the value is held.
    """

    def __init__(self, schedule, quantity: str = "lr", num_steps=None, dtype=np.float32):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a clrfast schedule (clrfast.Cyclic, ...), got {schedule!r}")
        check.choice("quantity", quantity, QUANTITIES)
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if quantity == "momentum":
            missing = _pieces_without_momentum(schedule)
            if missing:
                raise ValueError(
                    f"{missing[0]} defines no momentum ({schedule!r}); give it base_momentum and max_momentum "
                    "(OneCycle: cycle_momentum=True)"
                )
        last = schedule.max_step
        if num_steps is None:
            n = DEFAULT_STEPS
        else:
            n = check.integer("num_steps", num_steps, min=1)
            if n > MAX_STEPS:
                raise ValueError(f"num_steps must be <= {MAX_STEPS}, got {num_steps!r}")
        if last is not None:
            n = min(n, last + 1)
        self.schedule = schedule
        self.quantity = quantity
        self.dtype = dtype
        self.last = last
        self.n = n
        self.values = self._core_table(np.arange(n, dtype=np.int64))
        self.values.flags.writeable = False
        # True when every count is answered by the table (a finite schedule held at its end).
        self.covers_all = last is not None and n == last + 1

    def _core_table(self, steps: np.ndarray) -> np.ndarray:
        if self.quantity == "lr":
            return self.schedule.lr_table(steps, dtype=self.dtype)
        return self.schedule.momentum_table(steps, dtype=self.dtype)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes

    def host(self, steps) -> np.ndarray:
        """Exact values at integer ``steps`` of any shape: past a finite end the end's value, NaN below 0."""
        steps = np.asarray(steps)
        if steps.dtype == np.bool_ or not np.issubdtype(steps.dtype, np.integer):
            raise TypeError(f"count must be an integer step count, got dtype {steps.dtype}")
        if steps.dtype.kind == "u":
            t = np.minimum(steps, np.iinfo(np.int64).max).astype(np.int64)
        else:
            t = steps.astype(np.int64)
        out = np.full(t.shape, np.nan, dtype=self.dtype)
        valid = t >= 0
        if self.last is not None:
            t = np.minimum(t, self.last)
        inside = valid & (t < self.n)
        out[inside] = self.values[t[inside]]
        rest = valid & ~inside
        if rest.any():
            out[rest] = self._core_table(t[rest])
        return out

    def describe(self) -> str:
        size: float = self.nbytes
        unit = "bytes"
        for u in ("KiB", "MiB", "GiB"):
            if size < 1024:
                break
            size, unit = size / 1024, u
        return f"{self.schedule!r}, {self.quantity} table of {self.n} steps ({size:.4g} {unit})"


def jax_lookup(table: ValueTable, count, device_values=None):
    """The table's value at an integer jax ``count`` (any shape), traceable under ``jax.jit``.

    Negative counts give NaN (only a wrapped-around int32 counter makes one; optax's own counters
    saturate at ``2**31 - 1`` instead). Counts past the table go to ``table.host`` through
    ``jax.pure_callback``, under a ``lax.cond`` so that no step inside the table pays for it.
    """
    import jax
    import jax.numpy as jnp

    c = jnp.asarray(count)
    if c.dtype == jnp.bool_ or not jnp.issubdtype(c.dtype, jnp.integer):
        raise TypeError(f"count must be an integer step count, got dtype {c.dtype}")
    signed = jnp.issubdtype(c.dtype, jnp.signedinteger)
    if c.dtype.itemsize < 4:
        # Widen int8/int16 counts so the comparison with the table length cannot overflow.
        c = c.astype(jnp.int32 if signed else jnp.uint32)
    if device_values is None:
        with jax.ensure_compile_time_eval():
            device_values = jnp.asarray(table.values)
    n = table.n  # <= 2**31 - 1: representable in every count dtype from here on
    out_type = jax.ShapeDtypeStruct(c.shape, device_values.dtype)

    def from_table(c):
        return device_values[jnp.clip(c, 0, n - 1)]

    if table.covers_all:
        out = from_table(c)
    else:

        def from_host(c):
            return jax.pure_callback(table.host, out_type, c, vmap_method="expand_dims")

        out = jax.lax.cond(jnp.any(c >= n), from_host, from_table, c)
    if signed:
        out = jnp.where(c < 0, jnp.asarray(np.nan, out.dtype), out)
    return out
