"""Keras 3 front end: a clrfast schedule as a serializable ``LearningRateSchedule``, a momentum
callback, the reference CLR callback :class:`CyclicLR` and the LR range test :func:`lr_find`.

>>> import keras, clrfast as clr, clrfast.keras
>>> clr_cb = clrfast.keras.CyclicLR(base_lr=0.001, max_lr=0.006, step_size=2000., mode="triangular")
>>> model.fit(X_train, Y_train, callbacks=[clr_cb])          # the reference callback's form
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

import math
import numbers
from collections.abc import Callable

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

from . import _range_test as rt
from . import _validate as check
from ._device_table import ValueTable, _pieces_without_momentum, jax_lookup
from ._range_test import LRFindResult
from .scales import ExpRange, Flat, Halving
from .scales import Scale as _ClrScale
from .schedules import Cyclic, from_dict
from .schedules import Schedule as _ClrSchedule


class _Table(ValueTable):
    """A value table whose host path takes steps of every integer dtype, unsigned ones included
    (a ``uint8`` tensor, or the ``uint32`` array jax's host callback passes for a ``uint32`` step)."""

    def host(self, steps):
        return super().host(check.step_counts("step", steps))


def _host_steps(step) -> np.ndarray:
    """A step (tensor, Keras variable or array) as a NumPy array, without a warning on any backend.

    ``keras.ops.convert_to_numpy`` on torch goes through ``np.array(tensor)``, which NumPy 2 answers
    with a DeprecationWarning (torch's ``__array__`` takes no ``copy``): two per training step. A
    tensorflow variable's ``__array__`` takes none either, so there the value is read with ``.numpy()``.
    """
    if isinstance(step, keras.Variable):
        step = step.value
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if isinstance(step, torch.Tensor):
            return step.numpy(force=True)
    if backend == "tensorflow" and callable(getattr(step, "numpy", None)):
        return np.asarray(step.numpy())
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


def _inner_optimizer(model):
    opt = model.optimizer
    return getattr(opt, "inner_optimizer", opt)  # LossScaleOptimizer wraps the real one


def _momentum_attribute(who: str, model, opt) -> str:
    """The attribute a callback cycles as momentum (``beta_1`` or ``momentum``), once it is sure Keras reads it."""
    name = type(opt).__name__
    if hasattr(opt, "beta_1"):
        attribute = "beta_1"
    elif hasattr(opt, "momentum"):
        attribute = "momentum"
        if not opt.momentum:
            raise ValueError(
                f"{name} was created with momentum={opt.momentum!r}, so Keras keeps no velocity to cycle; "
                f"create it with momentum > 0 (e.g. {name}(momentum=0.9)), which {who} then replaces"
            )
    else:
        raise TypeError(f"{name} has no momentum or beta_1 for {who} to cycle")
    backend = keras.backend.backend()
    compiled = not model.run_eagerly and model.jit_compile
    if backend == "jax" and compiled:
        raise ValueError(
            f"{who} cannot cycle {name}.{attribute} under Keras' jax backend with "
            "jit_compile=True: the compiled train step reads it once, as a constant. Compile the model with "
            "jit_compile=False, or train with optax and clrfast.optax.momentum_schedule."
        )
    if backend == "tensorflow" and not model.run_eagerly:
        raise ValueError(
            f"{who} cannot cycle {name}.{attribute} inside a tf.function: the traced train "
            "step reads it once, as a constant. Compile the model with run_eagerly=True."
        )
    return attribute


def _check_one_step_per_batch(who: str, model) -> None:
    if getattr(model, "steps_per_execution", 1) != 1:
        raise ValueError(
            f"{who} needs steps_per_execution=1 (callbacks run once per execution), got {model.steps_per_execution!r}"
        )


def _float_lr_variable(who: str, opt):
    """The optimizer's learning-rate variable; a schedule or a callable there is refused (nothing could be set)."""
    lr = getattr(opt, "_learning_rate", None)
    if not isinstance(lr, keras.Variable):
        raise TypeError(
            f"{who} sets {type(opt).__name__}'s learning rate, which is {lr!r}: create the optimizer with a float "
            "learning_rate (e.g. SGD(learning_rate=0.01)); the callback replaces it"
        )
    return lr


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
        return _inner_optimizer(self.model)

    def on_train_begin(self, logs=None):
        opt = self._optimizer()
        self.attribute = _momentum_attribute("MomentumScheduler", self.model, opt)
        _check_one_step_per_batch("MomentumScheduler", self.model)
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


_MODE_SCALES = {"triangular": (Flat(), "cycle"), "triangular2": (Halving(), "cycle"), "exp_range": (None, "iterations")}


class CyclicLR(keras.callbacks.Callback):
    """The reference CLR callback (bckenstler/CLR's ``clr_callback.CyclicLR``), with clrfast's values.

    >>> clr_cb = CyclicLR(base_lr=0.001, max_lr=0.006, step_size=2000., mode="triangular")
    >>> model.fit(X_train, Y_train, callbacks=[clr_cb])
    >>> clr_cb.history["lr"], clr_cb.history["iterations"]

    It behaves as the reference does. At train begin the optimizer's learning rate is set to
    ``base_lr`` (or, when a previous ``fit`` left the cycle running, to the value it reached:
    a second ``fit`` continues the cycle), and after every batch to the value of the next
    iteration. With ``it`` the iterations since the last :meth:`_reset` (``clr_iterations``),
    ``cycle = floor(1 + it/(2*step_size))`` and ``x = |it/step_size - 2*cycle + 1|``::

        lr = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale_fn(cycle or it)

    ``mode`` gives the scale: ``"triangular"`` 1 and ``"triangular2"`` ``1/2**(cycle - 1)``, at
    the cycle; ``"exp_range"`` ``gamma**it``, at the iteration. A ``scale_fn`` replaces it (and
    ``mode`` is ignored), evaluated at the cycle or the iteration as ``scale_mode`` says; it is a
    :mod:`clrfast.scales` value (``Flat``, ``Halving``, ``ExpRange``, ``Geometric``) or any
    callable, such as the reference's ``lambda x: 0.5*(1+np.sin(x*np.pi/2.))``.

    The values are computed by the C++ core: ``clrfast.Cyclic(base_lr, max_lr, step_size,
    scale_fn=..., scale_mode=...)`` evaluated at ``it``, or, for a plain callable, the core's
    triangular wave ``max(0, 1 - x)`` times ``callable(cycle or it)``. Keras stores the lr as a
    float32 variable, so the lr applied at each batch is float32 of that double.

    ``history`` is a dict of lists, one entry per batch, as the reference keeps it: ``"lr"``
    (the lr the batch trained with), ``"iterations"`` (batches since the first ``fit``, as
    floats), ``"momentum"`` when cycled, and every key of the batch's logs (``"loss"``, metrics).
    The lr of each epoch's last batch is also written to the epoch's logs as
    ``"learning_rate"``, the key Keras' own lr callbacks use, so it lands in ``fit``'s History.

    :meth:`_reset` (``new_base_lr``, ``new_max_lr``, ``new_step_size``, each optional) restarts
    the cycle from iteration 0, as the reference's does. ``clr()`` is the lr of the current
    iteration. ``base_lr``, ``max_lr`` and ``step_size`` may also be assigned directly.

    Momentum cycling (optional, clrfast's addition): with ``base_momentum`` and
    ``max_momentum`` the optimizer's ``momentum`` (SGD) or ``beta_1`` (Adam and the like) follows
    ``max_momentum - (max_momentum - base_momentum) * max(0, 1 - x) * scale``, inverse to the lr,
    as :class:`MomentumScheduler` sets it (with its conditions: jax needs
    ``jit_compile=False``, tensorflow ``run_eagerly=True``).

    The optimizer must have a float learning rate (a schedule there is refused: this callback
    is the schedule), and the model ``steps_per_execution=1``.
    """

    def __init__(
        self,
        base_lr=0.001,
        max_lr=0.006,
        step_size=2000.0,
        mode="triangular",
        gamma=1.0,
        scale_fn=None,
        scale_mode="cycle",
        *,
        base_momentum=None,
        max_momentum=None,
    ):
        super().__init__()
        self.base_lr = base_lr
        self.max_lr = max_lr
        self.step_size = step_size
        self.mode = mode
        self.gamma = gamma
        if scale_fn is None:
            check.choice("mode", mode, tuple(_MODE_SCALES))
            scale, self.scale_mode = _MODE_SCALES[mode]
            self.scale_fn = scale if scale is not None else ExpRange(gamma)
        else:
            if not callable(scale_fn):
                raise TypeError(f"scale_fn must be a clrfast scale or a callable, got {scale_fn!r}")
            self.scale_fn = scale_fn
            self.scale_mode = check.choice("scale_mode", scale_mode, ("cycle", "iterations"))
        if (base_momentum is None) != (max_momentum is None):
            raise ValueError(
                f"give both base_momentum and max_momentum, or neither; got base_momentum={base_momentum!r}, "
                f"max_momentum={max_momentum!r}"
            )
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        self.clr_iterations = 0.0
        self.trn_iterations = 0.0
        self.history: dict = {}
        self.attribute = None
        self._built_for = None
        self._reset()

    # ------------------------------------------------------------------ values
    def _reset(self, new_base_lr=None, new_max_lr=None, new_step_size=None):
        """Restarts the cycle at iteration 0; optionally new bounds and step size."""
        if new_base_lr is not None:
            self.base_lr = new_base_lr
        if new_max_lr is not None:
            self.max_lr = new_max_lr
        if new_step_size is not None:
            self.step_size = new_step_size
        self.clr_iterations = 0.0
        self._schedule()  # checks the values now, not at the next batch

    def _schedule(self) -> Cyclic:
        """The clrfast schedule of the current bounds (rebuilt when they were assigned)."""
        key = (self.base_lr, self.max_lr, self.step_size, self.base_momentum, self.max_momentum)
        if self._built_for != key:
            mom = {}
            if self.base_momentum is not None:
                mom = {"base_momentum": self.base_momentum, "max_momentum": self.max_momentum}
            if isinstance(self.scale_fn, _ClrScale):
                s = Cyclic(
                    self.base_lr, self.max_lr, self.step_size, scale_fn=self.scale_fn, scale_mode=self.scale_mode, **mom
                )
            else:
                # A plain callable: the core gives the wave, 0 + (1 - 0)*s*1 = s exactly.
                Cyclic(self.base_lr, self.max_lr, self.step_size, **mom)  # the bounds' checks
                s = Cyclic(0.0, 1.0, self.step_size)
            self._cyclic, self._built_for = s, key
        return self._cyclic

    def _at(self, quantity: str) -> float:
        s = self._schedule()
        it = int(self.clr_iterations)
        if isinstance(self.scale_fn, _ClrScale):
            if quantity == "lr":
                return s.lr(it)
            momentum = s.momentum(it)
            return math.nan if momentum is None else momentum
        wave = s.lr(it)
        cycle = math.floor(1 + it / (2 * float(self.step_size)))
        scale = self.scale_fn(float(cycle) if self.scale_mode == "cycle" else float(it))
        if quantity == "lr":
            return self.base_lr + (self.max_lr - self.base_lr) * wave * scale
        return self.max_momentum - (self.max_momentum - self.base_momentum) * wave * scale

    def clr(self) -> float:
        """The lr at the current iteration (``clr_iterations``), as a Python float."""
        return float(self._at("lr"))

    def momentum(self) -> float:
        """The momentum at the current iteration (needs ``base_momentum`` and ``max_momentum``)."""
        if self.base_momentum is None:
            raise ValueError("this CyclicLR cycles no momentum: give base_momentum and max_momentum")
        return float(self._at("momentum"))

    # ------------------------------------------------------------------ callback
    def _set(self, lr: float) -> None:
        opt = _inner_optimizer(self.model)
        opt.learning_rate = lr
        if self.attribute is not None:
            setattr(opt, self.attribute, self.momentum())

    def on_train_begin(self, logs=None):
        opt = _inner_optimizer(self.model)
        _float_lr_variable("CyclicLR", opt)
        _check_one_step_per_batch("CyclicLR", self.model)
        self.attribute = None
        if self.base_momentum is not None:
            self.attribute = _momentum_attribute("CyclicLR", self.model, opt)
        self._set(self.base_lr if self.clr_iterations == 0 else self.clr())

    def on_train_batch_end(self, batch, logs=None):
        self.trn_iterations += 1
        self.clr_iterations += 1
        opt = _inner_optimizer(self.model)  # on jax, self.model syncs the train state first
        self.history.setdefault("lr", []).append(float(_host_steps(_float_lr_variable("CyclicLR", opt))))
        self.history.setdefault("iterations", []).append(self.trn_iterations)
        if self.attribute is not None:
            self.history.setdefault("momentum", []).append(float(getattr(opt, self.attribute)))
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
        self._set(self.clr())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.history.get("lr"):
            logs["learning_rate"] = self.history["lr"][-1]

    def __repr__(self) -> str:
        return (
            f"clrfast.keras.CyclicLR(base_lr={self.base_lr!r}, max_lr={self.max_lr!r}, step_size={self.step_size!r}, "
            f"scale_fn={self.scale_fn!r}, scale_mode={self.scale_mode!r}, clr_iterations={self.clr_iterations!r})"
        )


# ---------------------------------------------------------------------------- LR range test
def _num_samples(x) -> int:
    leaves = keras.tree.flatten(x)
    if not leaves:
        raise ValueError("x holds no arrays")
    for a in leaves:
        if not (hasattr(a, "__len__") and hasattr(a, "__getitem__") and hasattr(a, "shape")):
            raise TypeError(
                "lr_find takes x and y as arrays (or nested lists/dicts of arrays), as fit does; got "
                f"{type(a).__name__} (a dataset or generator: take the arrays out of it first)"
            )
    sizes = {len(a) for a in leaves}
    if len(sizes) != 1:
        raise ValueError(f"the arrays of x and y must have the same number of samples, got {sorted(sizes)}")
    return sizes.pop()


def _take(data, idx):
    return None if data is None else keras.tree.map_structure(lambda a: a[idx], data)


def _values(variables) -> list:
    # Host copies that read no deprecated NumPy path on torch (see _host_steps).
    return [np.array(_host_steps(v), copy=True) for v in variables]


def _torch_rng_state():
    # Keras' torch backend draws an unseeded layer's randomness (Dropout's) from torch's global RNG.
    import torch

    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_torch_rng_state(state) -> None:
    import torch

    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_find(
    model,
    x,
    y=None,
    *,
    batch_size: int = 32,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exp",
    smooth: float = 0.95,
    diverge: float = 4.0,
    shuffle: bool = True,
    seeds=None,
    validation_data=None,
    val_fn: Callable | None = None,
    val_every: int = 1,
    progress: bool | None = None,
    min_div: float = 4.0,
    base_div: float = 4.0,
) -> LRFindResult:
    r"""LR range test for a compiled Keras model: the lr rises from ``start_lr`` to ``end_lr``.

    Step ``t`` sets the optimizer's learning rate to ``clrfast.RangeSweep(start_lr, end_lr,
    num_steps, mode).lr(t)`` (float32, as Keras keeps it) and trains one batch of ``x``/``y``
    with ``model.train_on_batch``, its compiled train step (jitted on jax, a ``tf.function``
    on tensorflow); the batch's loss is the loss recorded. ``x`` and ``y`` are arrays (or
    nested lists/dicts of arrays, as ``fit`` takes them); batches of ``batch_size`` go through
    them pass after pass, each pass in the order of ``np.random.default_rng(seed).permutation``
    (``seed`` 0, or each of ``seeds``) when ``shuffle``, else in order.

    Smoothing, the divergence rule, the stop reasons, the suggestion rule and the result are
    those of :func:`clrfast.torch.lr_find` (one implementation, :mod:`clrfast._range_test`):
    the curve is the bias-corrected moving average of the loss, the test stops when it rises
    above its best by more than ``(diverge - 1)*|best|`` or a loss is NaN or inf, and
    ``max_lr = max(lr_steep, lr_min/min_div)``, ``base_lr = max_lr/base_div``.

    ``seeds`` repeats the test once per seed (the batch order drawn from it) and returns the
    mean curve with the spread as ``band``. ``validation_data=(x_val, y_val)`` records
    ``model.evaluate``'s loss, or ``val_fn(model)`` any float, every ``val_every`` steps.

    Afterwards every variable of the model (weights, non-trainable state such as BatchNorm's
    statistics, the layers' seed-generator states), of its optimizer (slots, ``iterations``,
    the learning rate) and of its metrics holds exactly what it held before, also when the
    test raises; on the torch backend, whose unseeded Dropout draws from torch's global RNG,
    that RNG's state is put back too. Each run starts from that state, so a seed's run
    repeats exactly. An unbuilt model or optimizer is built first (as ``fit`` would build it),
    and those are the values put back. NumPy's and Python's global RNGs are not used.

    The optimizer must have a float learning rate (not a schedule) and no
    ``gradient_accumulation_steps``; the model must be compiled.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise ValueError("model must be compiled (model.compile(optimizer=..., loss=...)) before lr_find")
    opt = _inner_optimizer(model)
    _float_lr_variable("lr_find", opt)
    if getattr(opt, "gradient_accumulation_steps", None):
        raise ValueError(
            f"lr_find trains one optimizer step per batch; got gradient_accumulation_steps="
            f"{opt.gradient_accumulation_steps!r}: use a larger batch_size instead"
        )
    cfg = rt.settings(start_lr, end_lr, num_steps, mode, smooth, diverge, val_every, min_div, base_div)
    batch_size = check.integer("batch_size", batch_size, min=1)
    shuffle = check.boolean("shuffle", shuffle)
    seeds = rt.check_seeds(seeds, None)
    rt.check_progress(progress)
    if validation_data is not None and val_fn is not None:
        raise TypeError("give at most one of validation_data and val_fn")
    if val_fn is not None and not callable(val_fn):
        raise TypeError(f"val_fn must be callable, got {val_fn!r}")
    if validation_data is not None and not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
        raise TypeError(f"validation_data must be a pair (x_val, y_val), got {type(validation_data).__name__}")
    n = _num_samples(x if y is None else (x, y))

    if not model.built:
        model(_take(x, np.arange(min(batch_size, n))))
    top = model.optimizer
    if not top.built:
        top.build(model.trainable_variables)
    variables = [*model.variables, *top.variables, *model.metrics_variables]
    saved = _values(variables)
    torch_rng = _torch_rng_state() if keras.backend.backend() == "torch" else None

    def restore() -> None:
        model.reset_metrics()
        for v, value in zip(variables, saved):
            v.assign(value)
        if torch_rng is not None:
            _set_torch_rng_state(torch_rng)

    bar = rt.progress_bar(cfg.num_steps * (len(seeds) if seeds else 1), progress)

    def one_run(seed) -> dict:
        rng = np.random.default_rng(0 if seed is None else seed)
        order: list = []

        def step(lr: float) -> float:
            if not order:
                order.extend(np.array_split(rng.permutation(n) if shuffle else np.arange(n), -(-n // batch_size)))
            idx = order.pop(0)
            opt.learning_rate = lr
            logs = model.train_on_batch(_take(x, idx), _take(y, idx), return_dict=True)
            return float(logs["loss"])

        validate = None
        if val_fn is not None:

            def validate() -> float:
                return float(val_fn(model))

        elif validation_data is not None:

            def validate() -> float:
                xv, yv = validation_data
                logs = model.evaluate(xv, yv, batch_size=batch_size, verbose=0, return_dict=True)
                return float(logs["loss"])

        return rt.sweep(
            step,
            cfg,
            validate=validate,
            bar=bar,
            describe_data=lambda: f"x has {n} samples, batch_size={batch_size}",
        )

    try:
        return rt.run_seeds(one_run, cfg, seeds, restore=restore)
    finally:
        if bar is not None:
            bar.close()


__all__ = ["Schedule", "MomentumScheduler", "CyclicLR", "lr_find", "LRFindResult"]
