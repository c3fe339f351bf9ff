"""Keras 3 front end: a clrfast schedule as a serializable ``LearningRateSchedule``, and a momentum callback.

>>> import keras, clrfast as clr, clrfast.keras
>>> s = clr.Cyclic(1e-3, 6e-3, step_size_up=2000, base_momentum=0.85, max_momentum=0.95)
>>> opt = keras.optimizers.SGD(learning_rate=clrfast.keras.Schedule(s), momentum=0.9)
>>> model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
>>> model.fit(x, y, callbacks=[clrfast.keras.MomentumScheduler(s)])     # momentum too (see its notes)

The learning rate at training iteration ``k`` (0 for the first batch) is ``float32(s.lr(k))``,
from a table the C++ core computes once (see :mod:`clrfast._device_table`). ``model.save`` keeps
the schedule as ``s.to_dict()``; ``keras.saving.load_model`` restores it once this module is
imported, which registers the class.

Importing this module imports Keras (and its backend); ``import clrfast`` alone does not.
"""

from __future__ import annotations

import numbers

import numpy as np

try:
    import keras
except ImportError as e:  # pragma: no cover - exercised in a subprocess without keras
    if getattr(e, "name", None) in (None, "keras") or str(getattr(e, "name", "")).startswith("keras."):
        raise ImportError(f"clrfast.keras needs Keras 3: pip install 'clrfast[keras]' ({e})") from e
    raise ImportError(
        f"Keras could not load its backend ({e}). Set KERAS_BACKEND to an installed backend "
        "(jax, torch or tensorflow) before keras is first imported; pip install 'clrfast[keras]' installs JAX."
    ) from e

from . import _validate as check
from ._device_table import ValueTable, _pieces_without_momentum, jax_lookup
from .schedules import Schedule as _ClrSchedule
from .schedules import from_dict


class _Table(ValueTable):
    """A value table whose host path takes steps of every integer dtype, unsigned ones included
    (a ``uint8`` tensor, or the ``uint32`` array jax's host callback passes for a ``uint32`` step)."""

    def host(self, steps):
        return super().host(check.step_counts("step", steps))


def _host_steps(step) -> np.ndarray:
    """A step (tensor, Keras variable or array) as a NumPy array, without a warning on any backend.

    ``keras.ops.convert_to_numpy`` on torch goes through ``np.array(tensor)``, which NumPy 2 answers
    with a DeprecationWarning (torch's ``__array__`` takes no ``copy``): two per training step.
    """
    if isinstance(step, keras.Variable):
        step = step.value
    if keras.backend.backend() == "torch":
        import torch

        if isinstance(step, torch.Tensor):
            return step.numpy(force=True)
    return keras.ops.convert_to_numpy(step)


@keras.saving.register_keras_serializable(package="clrfast")
class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """``step -> float32(s.lr(step))`` for any Keras optimizer's ``learning_rate``, on any backend.

    ``schedule`` is a clrfast schedule (or its ``to_dict()``). ``num_steps`` sets the table length
    (default ``min(2**20, s.max_step + 1)``); later steps stay exact, computed by the core on the
    host. Past a finite schedule's end the value at ``s.max_step`` is held. ``dtype`` is
    ``"float32"`` (default) or ``"float64"``.

    On the jax backend the table is gathered on the device inside the compiled train step; on
    torch (and numpy) the step is read on the host, one scalar per step; on tensorflow the
    lookup runs through ``tf.numpy_function``.
    """

    def __init__(self, schedule, num_steps=None, dtype="float32"):
        if isinstance(schedule, dict):
            schedule = from_dict(schedule)
        if not isinstance(schedule, _ClrSchedule):
            raise TypeError(f"schedule must be a clrfast schedule or its to_dict(), got {schedule!r}")
        self._num_steps = num_steps
        self.table = _Table(schedule, "lr", num_steps, np.dtype(dtype))
        self._jax_values = None

    @property
    def schedule(self):
        return self.table.schedule

    def __call__(self, step):
        if isinstance(step, (bool, np.bool_)):
            raise TypeError(f"step must be an integer step count, got {step!r}")
        if isinstance(step, numbers.Integral):
            # A Python or NumPy integer (a direct call) is answered on the host: no int32 overflow,
            # any size, any integer dtype.
            if step < 0:
                raise ValueError(f"step must be >= 0, got {step!r}")
            return keras.ops.convert_to_tensor(self.table.host(step))
        backend = keras.backend.backend()
        if backend == "jax":
            import jax
            import jax.numpy as jnp

            if self._jax_values is None:
                with jax.ensure_compile_time_eval():
                    self._jax_values = jnp.asarray(self.table.values)
            return jax_lookup(self.table, keras.ops.convert_to_tensor(step), self._jax_values)
        if backend == "tensorflow":
            import tensorflow as tf

            step = tf.convert_to_tensor(keras.ops.convert_to_tensor(step))
            out = tf.numpy_function(self.table.host, [step], tf.as_dtype(self.table.dtype), stateful=False)
            out.set_shape(step.shape)
            return out
        # torch and numpy run the train step eagerly: one host read of the step per call.
        return keras.ops.convert_to_tensor(self.table.host(_host_steps(step)))

    def get_config(self):
        return {"schedule": self.schedule.to_dict(), "num_steps": self._num_steps, "dtype": self.table.dtype.name}

    def __repr__(self) -> str:
        return f"clrfast.keras.Schedule({self.table.describe()})"


class MomentumScheduler(keras.callbacks.Callback):
    """Sets the optimizer's momentum to ``s.momentum(k)`` before training iteration ``k``.

    It sets ``momentum`` on SGD (and RMSprop), ``beta_1`` on Adam, AdamW, Adamax, Nadam, Lion and
    other optimizers that have one, as torch's ``CyclicLR`` and ``OneCycleLR`` do. Past a finite
    schedule's end the value at ``s.max_step`` is held.

    Keras reads these as Python floats inside the train step, so a change takes effect only where
    the step is not compiled with them frozen in. ``fit`` raises ``ValueError`` at the start where
    it would be silently ignored:

    - jax: needs ``model.compile(..., jit_compile=False)``; the jitted step keeps the first value.
      For compiled JAX training use ``clrfast.optax.momentum_schedule`` with ``inject_hyperparams``.
    - tensorflow: needs ``run_eagerly=True``.
    - torch: works as compiled by default (eagerly); ``jit_compile=True`` recompiles on each change.

    SGD must be created with ``momentum > 0`` (any value; the callback replaces it): with 0 Keras
    keeps no velocity. Where the schedule's momentum is exactly 0, Keras' SGD skips the velocity
    update for that step. ``steps_per_execution`` and ``gradient_accumulation_steps`` must be 1/None.
    """

    def __init__(self, schedule):
        super().__init__()
        if isinstance(schedule, dict):
            schedule = from_dict(schedule)
        if not isinstance(schedule, _ClrSchedule):
            raise TypeError(f"schedule must be a clrfast schedule or its to_dict(), got {schedule!r}")
        missing = _pieces_without_momentum(schedule)
        if missing:
            raise ValueError(
                f"{missing[0]} defines no momentum ({schedule!r}); give it base_momentum and max_momentum "
                "(OneCycle: cycle_momentum=True)"
            )
        self.schedule = schedule
        self.attribute = None
        self._step = 0

    def _optimizer(self):
        opt = self.model.optimizer
        return getattr(opt, "inner_optimizer", opt)  # LossScaleOptimizer wraps the real one

    def on_train_begin(self, logs=None):
        opt = self._optimizer()
        name = type(opt).__name__
        if hasattr(opt, "beta_1"):
            self.attribute = "beta_1"
        elif hasattr(opt, "momentum"):
            self.attribute = "momentum"
            if not opt.momentum:
                raise ValueError(
                    f"{name} was created with momentum={opt.momentum!r}, so Keras keeps no velocity to cycle; "
                    f"create it with momentum > 0 (e.g. {name}(momentum=0.9)), which MomentumScheduler then replaces"
                )
        else:
            raise TypeError(f"{name} has no momentum or beta_1 for MomentumScheduler to cycle")
        backend = keras.backend.backend()
        model = self.model
        compiled = not model.run_eagerly and model.jit_compile
        if backend == "jax" and compiled:
            raise ValueError(
                f"MomentumScheduler cannot cycle {name}.{self.attribute} under Keras' jax backend with "
                "jit_compile=True: the compiled train step reads it once, as a constant. Compile the model with "
                "jit_compile=False, or train with optax and clrfast.optax.momentum_schedule."
            )
        if backend == "tensorflow" and not model.run_eagerly:
            raise ValueError(
                f"MomentumScheduler cannot cycle {name}.{self.attribute} inside a tf.function: the traced train "
                "step reads it once, as a constant. Compile the model with run_eagerly=True."
            )
        if getattr(model, "steps_per_execution", 1) != 1:
            raise ValueError(
                f"MomentumScheduler needs steps_per_execution=1 (callbacks run once per execution), "
                f"got {model.steps_per_execution!r}"
            )
        if getattr(opt, "gradient_accumulation_steps", None):
            raise ValueError(
                "MomentumScheduler does not support gradient_accumulation_steps="
                f"{opt.gradient_accumulation_steps!r}: the lr schedule counts batches, optimizer.iterations updates"
            )

    def on_epoch_begin(self, epoch, logs=None):
        # The optimizer's counter is current here on every backend (jax syncs its state at epoch
        # ends, not per batch), so count batches from it within the epoch.
        self._step = int(_host_steps(self._optimizer().iterations))

    def on_train_batch_begin(self, batch, logs=None):
        last = self.schedule.max_step
        t = self._step if last is None else min(self._step, last)
        setattr(self._optimizer(), self.attribute, self.schedule.momentum(t))

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1


__all__ = ["Schedule", "MomentumScheduler"]
