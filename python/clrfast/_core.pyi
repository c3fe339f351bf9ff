# Generated from the compiled module by .ci/check_stub --write (pybind11-stubgen, then ruff format).
"""
clrfast compiled core: schedules, batch tables, fused SGD and Adam steps, the declared rules.
"""

from __future__ import annotations

import collections.abc
import typing

import numpy
import numpy.typing

__all__: list[str] = [
    "Anneal",
    "GroupWriter",
    "Kind",
    "MomentumKey",
    "Quantity",
    "Ramp",
    "ScaleKind",
    "ScaleMode",
    "Schedule",
    "Status",
    "StepCheck",
    "StepCheckSpec",
    "SweepMode",
    "TimmCurve",
    "TimmDecay",
    "TimmStable",
    "Window",
    "adam_step",
    "constant",
    "cosine_restarts",
    "cpu_isa",
    "cuda_built",
    "cuda_chunk_table",
    "cuda_geometry",
    "cuda_workspace_bytes",
    "cyclic",
    "cyclic_geometry",
    "cyclic_scale",
    "dtype_codes",
    "hardware_threads",
    "join",
    "linear",
    "lion_step",
    "onecycle",
    "onecycle_phase_ends",
    "onecycle_phases",
    "rehorizon",
    "restart_pos_torch_epoch",
    "rmsprop_step",
    "rule_step_cuda",
    "rule_step_emulated",
    "rules",
    "scale_lr",
    "schedule_bytes",
    "schedulefree_adamw_step",
    "schedulefree_sgd_step",
    "set_tensor_api",
    "sgd_hyper",
    "sgd_step",
    "sweep",
    "timm_cycle",
    "timm_error",
    "timm_step",
    "timm_values",
    "timm_wsd",
    "warmup_decay",
]

class ScaleKind:
    """
    Amplitude scale of a cyclical schedule.

    Members:

      triangular

      triangular2

      exp_range

      geometric

      external
    """

    __members__: typing.ClassVar[dict[str, ScaleKind]]
    exp_range: typing.ClassVar[ScaleKind]
    external: typing.ClassVar[ScaleKind]
    geometric: typing.ClassVar[ScaleKind]
    triangular: typing.ClassVar[ScaleKind]
    triangular2: typing.ClassVar[ScaleKind]
    @typing.overload
    def __eq__(self, other: ScaleKind) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: ScaleKind) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class ScaleMode:
    """
    What the scale is evaluated at.

    Members:

      cycle

      iterations
    """

    __members__: typing.ClassVar[dict[str, ScaleMode]]
    cycle: typing.ClassVar[ScaleMode]
    iterations: typing.ClassVar[ScaleMode]
    @typing.overload
    def __eq__(self, other: ScaleMode) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: ScaleMode) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class Window:
    """
    Shape of one cycle.

    Members:

      triangular

      welch

      hann
    """

    __members__: typing.ClassVar[dict[str, Window]]
    hann: typing.ClassVar[Window]
    triangular: typing.ClassVar[Window]
    welch: typing.ClassVar[Window]
    @typing.overload
    def __eq__(self, other: Window) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: Window) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class Anneal:
    """
    One-cycle annealing.

    Members:

      cos

      linear
    """

    __members__: typing.ClassVar[dict[str, Anneal]]
    cos: typing.ClassVar[Anneal]
    linear: typing.ClassVar[Anneal]
    @typing.overload
    def __eq__(self, other: Anneal) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: Anneal) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class SweepMode:
    """
    Range-test sweep.

    Members:

      linear

      exp
    """

    __members__: typing.ClassVar[dict[str, SweepMode]]
    exp: typing.ClassVar[SweepMode]
    linear: typing.ClassVar[SweepMode]
    @typing.overload
    def __eq__(self, other: SweepMode) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: SweepMode) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class Ramp:
    """
    Shape of a warmup-stable-decay ramp.

    Members:

      linear

      cosine

      one_minus_sqrt
    """

    __members__: typing.ClassVar[dict[str, Ramp]]
    cosine: typing.ClassVar[Ramp]
    linear: typing.ClassVar[Ramp]
    one_minus_sqrt: typing.ClassVar[Ramp]
    @typing.overload
    def __eq__(self, other: Ramp) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: Ramp) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class Kind:
    """
    Kind of a leaf schedule.

    Members:

      constant

      linear

      sweep

      cyclic

      onecycle

      cosine_restarts

      warmup_stable_decay

      warmup_linear

      warmup_cosine

      warmup_hard_restarts

      warmup_polynomial

      inverse_sqrt

      timm_cosine

      timm_tanh

      timm_poly

      timm_step

      timm_multistep

      timm_wsd
    """

    __members__: typing.ClassVar[dict[str, Kind]]
    constant: typing.ClassVar[Kind]
    cosine_restarts: typing.ClassVar[Kind]
    cyclic: typing.ClassVar[Kind]
    inverse_sqrt: typing.ClassVar[Kind]
    linear: typing.ClassVar[Kind]
    onecycle: typing.ClassVar[Kind]
    sweep: typing.ClassVar[Kind]
    timm_cosine: typing.ClassVar[Kind]
    timm_multistep: typing.ClassVar[Kind]
    timm_poly: typing.ClassVar[Kind]
    timm_step: typing.ClassVar[Kind]
    timm_tanh: typing.ClassVar[Kind]
    timm_wsd: typing.ClassVar[Kind]
    warmup_cosine: typing.ClassVar[Kind]
    warmup_hard_restarts: typing.ClassVar[Kind]
    warmup_linear: typing.ClassVar[Kind]
    warmup_polynomial: typing.ClassVar[Kind]
    warmup_stable_decay: typing.ClassVar[Kind]
    @typing.overload
    def __eq__(self, other: Kind) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: Kind) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class TimmCurve:
    """
    Curve of a timm cycle schedule.

    Members:

      cosine

      tanh

      poly
    """

    __members__: typing.ClassVar[dict[str, TimmCurve]]
    cosine: typing.ClassVar[TimmCurve]
    poly: typing.ClassVar[TimmCurve]
    tanh: typing.ClassVar[TimmCurve]
    @typing.overload
    def __eq__(self, other: TimmCurve) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: TimmCurve) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class TimmStable:
    """
    Stable function of timm's WSD schedule (rsqrt is power 0.5).

    Members:

      constant

      power
    """

    __members__: typing.ClassVar[dict[str, TimmStable]]
    constant: typing.ClassVar[TimmStable]
    power: typing.ClassVar[TimmStable]
    @typing.overload
    def __eq__(self, other: TimmStable) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: TimmStable) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class TimmDecay:
    """
    Decay function of timm's WSD schedule.

    Members:

      linear

      one_minus_sqrt

      cosine

      power

      exp
    """

    __members__: typing.ClassVar[dict[str, TimmDecay]]
    cosine: typing.ClassVar[TimmDecay]
    exp: typing.ClassVar[TimmDecay]
    linear: typing.ClassVar[TimmDecay]
    one_minus_sqrt: typing.ClassVar[TimmDecay]
    power: typing.ClassVar[TimmDecay]
    @typing.overload
    def __eq__(self, other: TimmDecay) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: TimmDecay) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class Quantity:
    """
    What a table holds.

    Members:

      lr

      momentum
    """

    __members__: typing.ClassVar[dict[str, Quantity]]
    lr: typing.ClassVar[Quantity]
    momentum: typing.ClassVar[Quantity]
    @typing.overload
    def __eq__(self, other: Quantity) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: Quantity) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class Status:
    """
    Whether a schedule has finite values at some steps.

    Members:

      ok

      overflow

      zero_division
    """

    __members__: typing.ClassVar[dict[str, Status]]
    ok: typing.ClassVar[Status]
    overflow: typing.ClassVar[Status]
    zero_division: typing.ClassVar[Status]
    @typing.overload
    def __eq__(self, other: Status) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: Status) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class Schedule:
    """
    A compiled schedule: leaf pieces and join boundaries.
    """
    def at(self, t: typing.SupportsFloat | typing.SupportsIndex) -> tuple[float, float]:
        """
        (lr, momentum) at step t; momentum is NaN where undefined.
        """
    def lr(self, t: typing.SupportsFloat | typing.SupportsIndex) -> float: ...
    def momentum(self, t: typing.SupportsFloat | typing.SupportsIndex) -> float:
        """
        Momentum at step t; NaN where undefined.
        """
    def status_between(
        self, first: typing.SupportsFloat | typing.SupportsIndex, last: typing.SupportsFloat | typing.SupportsIndex
    ) -> Status:
        """
        Whether every step first..last has finite values (checked at both ends; overflow is monotone).
        """
    def table_range(
        self,
        quantity: Quantity,
        first: typing.SupportsInt | typing.SupportsIndex,
        n: typing.SupportsInt | typing.SupportsIndex,
        out: numpy.ndarray,
        threads: typing.SupportsInt | typing.SupportsIndex = 0,
    ) -> None:
        """
        Values at steps first..first+n-1 into out (float32 or float64), GIL released.
        """
    def table_steps(
        self,
        quantity: Quantity,
        steps: typing.Annotated[numpy.typing.ArrayLike, numpy.int64],
        out: numpy.ndarray,
        threads: typing.SupportsInt | typing.SupportsIndex = 0,
    ) -> None:
        """
        Values at each int64 step into out, GIL released.
        """
    @property
    def has_momentum(self) -> bool: ...

class MomentumKey:
    """
    Which param-group entry a scheduler's momentum goes to.

    Members:

      none

      momentum

      betas
    """

    __members__: typing.ClassVar[dict[str, MomentumKey]]
    betas: typing.ClassVar[MomentumKey]
    momentum: typing.ClassVar[MomentumKey]
    none: typing.ClassVar[MomentumKey]
    @typing.overload
    def __eq__(self, other: MomentumKey) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: MomentumKey) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class GroupWriter:
    """
    Writes one step's lr and momentum, from one compiled schedule per param group.
    """
    def __init__(
        self,
        *,
        schedules: collections.abc.Sequence[Schedule],
        momentum_key: MomentumKey,
        fallback_momentum: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex] = [],
        as_torch: bool = True,
    ) -> None: ...
    def cycle(self, t: typing.SupportsFloat | typing.SupportsIndex) -> float: ...
    def values(self, t: typing.SupportsFloat | typing.SupportsIndex) -> list: ...
    def values_restarts(
        self, T_cur: typing.SupportsFloat | typing.SupportsIndex, T_i: typing.SupportsFloat | typing.SupportsIndex
    ) -> list: ...
    def write(self, t: typing.SupportsFloat | typing.SupportsIndex, groups: list) -> list:
        """
        Values at step t into the groups; returns the lrs. Raises before writing anything.
        """
    def write_restarts(
        self,
        T_cur: typing.SupportsFloat | typing.SupportsIndex,
        T_i: typing.SupportsFloat | typing.SupportsIndex,
        groups: list,
    ) -> list: ...
    def write_scaled(
        self,
        t: typing.SupportsFloat | typing.SupportsIndex,
        lr_scales: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
        momentum_scales: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
        groups: list,
    ) -> list:
        """
        Cyclic values with scales from a Python scale_fn.
        """
    @property
    def fast(self) -> bool:
        """
        Whether scheduler_step may take the common step here (false: always self._step).
        """
    @fast.setter
    def fast(self, arg0: bool) -> None: ...
    @property
    def group_scales(self) -> bool:
        """
        Whether each group's lr is multiplied by its 'lr_scale' (timm's key), checked before any write.
        """
    @group_scales.setter
    def group_scales(self, arg0: bool) -> None: ...
    @property
    def max_step(self) -> float:
        """
        The common step leaves a step past this to Python (its error).
        """
    @max_step.setter
    def max_step(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def restarts(self) -> bool:
        """
        Whether the common step is CosineAnnealingWarmRestarts' (T_cur, T_i).
        """
    @restarts.setter
    def restarts(self, arg0: bool) -> None: ...

class StepCheckSpec:
    """
    What a StepCheck compares: a plan's kernel table and layout, then one add_* call per parameter in group order, and the extents of the memory the step writes.
    """
    def __init__(
        self,
        table: typing.Annotated[numpy.typing.ArrayLike, numpy.int64],
        keys: tuple,
        slots: typing.SupportsInt | typing.SupportsIndex,
        grad_col: typing.SupportsInt | typing.SupportsIndex,
        n_col: typing.SupportsInt | typing.SupportsIndex,
        ptr_cols: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
        merge: bool,
        device_index: typing.SupportsInt | typing.SupportsIndex,
    ) -> None: ...
    def add_row(
        self, param: typing.Any, row: typing.SupportsInt | typing.SupportsIndex, grad: typing.Any, state: typing.Any
    ) -> None:
        """
        A parameter the kernel updates as template row `row` (state: its state dict or None).
        """
    def add_slow(self, param: typing.Any, grad: typing.Any, state: typing.Any) -> None:
        """
        A parameter torch's code updates (its layouts are then compared exactly).
        """
    def add_without_grad(self, param: typing.Any, state: typing.Any) -> None:
        """
        A parameter that had no gradient when the plan was built.
        """
    def add_written(
        self, start: typing.SupportsInt | typing.SupportsIndex, end: typing.SupportsInt | typing.SupportsIndex
    ) -> None:
        """
        A byte range [start, end) the step writes (a parameter or a state tensor).
        """
    def set_guard(self, make_guard: typing.Any) -> None:
        """
        make_guard(*tensors) -> guard or None, called once after the last add_*: tensors are, per parameter that had a gradient in group order, the parameter, its gradient and its state tensors in key order. guard(*successors) -> True only while each keeps its dtype, device, sizes, strides and view bits.
        """

class StepCheck:
    """
    Revalidates a cached fused-step plan each step and yields that step's kernel table.
    """
    def __init__(self, spec: StepCheckSpec) -> None: ...
    def refresh(self, state: typing.Any, params: typing.Any, grads_written: bool) -> int:
        """
        The number of rows of this step's table (the first rows of `out`), or -1 when the plan no longer describes the group.
        """
    def release(self) -> None:
        """
        Drops the references to this step's gradients.
        """
    def set(
        self,
        row: typing.SupportsInt | typing.SupportsIndex,
        col: typing.SupportsInt | typing.SupportsIndex,
        value: typing.SupportsInt | typing.SupportsIndex,
    ) -> None:
        """
        Sets a column of a template row.
        """
    @property
    def emitted(self) -> numpy.typing.NDArray[numpy.bool]:
        """
        Template rows the last refresh put in the table.
        """
    @property
    def guarded(self) -> bool:
        """
        Whether refresh asks the guard first (it has one, and it never said no).
        """
    @property
    def out(self) -> numpy.typing.NDArray[numpy.int64]: ...

def adam_step(
    segments: numpy.ndarray,
    scalars: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
    inv_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    store_grad: bool = False,
    threads: typing.SupportsInt | typing.SupportsIndex = 1,
    sqrt_f32: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_f64: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_threads_local: typing.SupportsInt | typing.SupportsIndex = 0,
    schedule: Schedule | None = None,
    next_step: typing.SupportsInt | typing.SupportsIndex = 0,
    momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    divide_scale: bool = False,
) -> typing.Any:
    """
    The adam step on the CPU over an int64 segment table (columns: _core.rules['adam']['cols']). scalars: the values of _core.rules['adam']['scalars'], in that order. inv_scale/store_grad: GradScaler's unscaling. sqrt_f32, sqrt_f64, sqrt_threads_local: the vector square roots (0: IEEE sqrt). With a schedule, returns (lr, momentum) of next_step as sgd_hyper does (momentum: the constant where the schedule has none); else None. divide_scale (with store_grad): inv_scale is the scale, and gradients are divided by it, as torch's fused CPU kernels unscale.
    """

def constant(*, lr: typing.SupportsFloat | typing.SupportsIndex) -> Schedule: ...
def cosine_restarts(
    *,
    base_lr: typing.SupportsFloat | typing.SupportsIndex,
    eta_min: typing.SupportsFloat | typing.SupportsIndex,
    T_0: typing.SupportsFloat | typing.SupportsIndex,
    T_mult: typing.SupportsFloat | typing.SupportsIndex,
    peak_decay: typing.SupportsFloat | typing.SupportsIndex,
    warmup_steps: typing.SupportsFloat | typing.SupportsIndex,
) -> Schedule: ...
def cpu_isa() -> str:
    """
    Instruction set the CPU kernels dispatch to.
    """

def cuda_chunk_table(
    lengths: typing.Annotated[numpy.typing.ArrayLike, numpy.int64],
) -> numpy.typing.NDArray[numpy.int32]:
    """
    The CUDA step's chunk table of rows of these lengths: int32 (seg, chunk) pairs, chunk c of a row covering its elements [c * chunk, (c + 1) * chunk) (cuda_geometry['chunk']).
    """

def cuda_workspace_bytes(name: str, nrows: typing.SupportsInt | typing.SupportsIndex) -> int:
    """
    Bytes of device workspace (64-byte aligned) a CUDA step of nrows rows needs.
    """

def cyclic(
    *,
    base_lr: typing.SupportsFloat | typing.SupportsIndex,
    max_lr: typing.SupportsFloat | typing.SupportsIndex,
    total_size: typing.SupportsFloat | typing.SupportsIndex,
    step_ratio: typing.SupportsFloat | typing.SupportsIndex,
    scale: ScaleKind,
    gamma: typing.SupportsFloat | typing.SupportsIndex,
    scale_mode: ScaleMode,
    window: Window,
    cycle_momentum: bool,
    base_momentum: typing.SupportsFloat | typing.SupportsIndex,
    max_momentum: typing.SupportsFloat | typing.SupportsIndex,
) -> Schedule: ...
def cyclic_geometry(
    step_size_up: typing.SupportsFloat | typing.SupportsIndex,
    step_size_down: typing.SupportsFloat | typing.SupportsIndex,
) -> tuple[float, float]:
    """
    (total_size, step_ratio) as torch's CyclicLR computes them.
    """

def cyclic_scale(
    kind: ScaleKind, gamma: typing.SupportsFloat | typing.SupportsIndex, x: typing.SupportsFloat | typing.SupportsIndex
) -> float:
    """
    The amplitude scale at x; OverflowError where its power overflows.
    """

def hardware_threads() -> int: ...
def join(
    *,
    schedules: collections.abc.Sequence[Schedule],
    boundaries: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
) -> Schedule:
    """
    Schedules joined at step boundaries (nested joins flattened; at most 16 pieces).
    """

def linear(
    *,
    start_lr: typing.SupportsFloat | typing.SupportsIndex,
    end_lr: typing.SupportsFloat | typing.SupportsIndex,
    steps: typing.SupportsFloat | typing.SupportsIndex,
) -> Schedule: ...
def lion_step(
    segments: numpy.ndarray,
    scalars: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
    inv_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    store_grad: bool = False,
    threads: typing.SupportsInt | typing.SupportsIndex = 1,
    sqrt_f32: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_f64: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_threads_local: typing.SupportsInt | typing.SupportsIndex = 0,
    schedule: Schedule | None = None,
    next_step: typing.SupportsInt | typing.SupportsIndex = 0,
    momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    divide_scale: bool = False,
) -> typing.Any:
    """
    The lion step on the CPU over an int64 segment table (columns: _core.rules['lion']['cols']). scalars: the values of _core.rules['lion']['scalars'], in that order. inv_scale/store_grad: GradScaler's unscaling. sqrt_f32, sqrt_f64, sqrt_threads_local: the vector square roots (0: IEEE sqrt). With a schedule, returns (lr, momentum) of next_step as sgd_hyper does (momentum: the constant where the schedule has none); else None. divide_scale (with store_grad): inv_scale is the scale, and gradients are divided by it, as torch's fused CPU kernels unscale.
    """

def onecycle(
    *,
    max_lr: typing.SupportsFloat | typing.SupportsIndex,
    total_steps: typing.SupportsFloat | typing.SupportsIndex,
    pct_start: typing.SupportsFloat | typing.SupportsIndex,
    anneal: Anneal,
    three_phase: bool,
    div_factor: typing.SupportsFloat | typing.SupportsIndex,
    final_div_factor: typing.SupportsFloat | typing.SupportsIndex,
    cycle_momentum: bool,
    base_momentum: typing.SupportsFloat | typing.SupportsIndex,
    max_momentum: typing.SupportsFloat | typing.SupportsIndex,
) -> Schedule: ...
def onecycle_phase_ends(
    total_steps: typing.SupportsFloat | typing.SupportsIndex,
    pct_start: typing.SupportsFloat | typing.SupportsIndex,
    three_phase: bool,
) -> list[float]:
    """
    The phase end steps of torch's OneCycleLR.
    """

def onecycle_phases(
    *,
    phases: collections.abc.Sequence[
        tuple[
            typing.SupportsFloat | typing.SupportsIndex,
            typing.SupportsFloat | typing.SupportsIndex,
            typing.SupportsFloat | typing.SupportsIndex,
            typing.SupportsFloat | typing.SupportsIndex,
            typing.SupportsFloat | typing.SupportsIndex,
        ]
    ],
    total_steps: typing.SupportsFloat | typing.SupportsIndex,
    anneal: Anneal,
    cycle_momentum: bool,
) -> Schedule:
    """
    One-cycle from explicit phases (end_step, start_lr, end_lr, start_momentum, end_momentum).
    """

def rehorizon(
    *,
    schedule: Schedule,
    at: typing.SupportsFloat | typing.SupportsIndex,
    last: typing.SupportsFloat | typing.SupportsIndex,
    new_last: typing.SupportsFloat | typing.SupportsIndex,
) -> Schedule:
    """
    The schedule up to `at`, its steps at..last stretched onto at..new_last.
    """

def restart_pos_torch_epoch(
    T_0: typing.SupportsFloat | typing.SupportsIndex,
    T_mult: typing.SupportsFloat | typing.SupportsIndex,
    epoch: typing.SupportsFloat | typing.SupportsIndex,
) -> tuple[float, float]:
    """
    (T_cur, T_i) from torch's closed form for step(epoch).
    """

def rmsprop_step(
    segments: numpy.ndarray,
    scalars: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
    inv_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    store_grad: bool = False,
    threads: typing.SupportsInt | typing.SupportsIndex = 1,
    sqrt_f32: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_f64: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_threads_local: typing.SupportsInt | typing.SupportsIndex = 0,
    schedule: Schedule | None = None,
    next_step: typing.SupportsInt | typing.SupportsIndex = 0,
    momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    divide_scale: bool = False,
) -> typing.Any:
    """
    The rmsprop step on the CPU over an int64 segment table (columns: _core.rules['rmsprop']['cols']). scalars: the values of _core.rules['rmsprop']['scalars'], in that order. inv_scale/store_grad: GradScaler's unscaling. sqrt_f32, sqrt_f64, sqrt_threads_local: the vector square roots (0: IEEE sqrt). With a schedule, returns (lr, momentum) of next_step as sgd_hyper does (momentum: the constant where the schedule has none); else None. divide_scale (with store_grad): inv_scale is the scale, and gradients are divided by it, as torch's fused CPU kernels unscale.
    """

def rule_step_cuda(
    name: str,
    rows: typing.SupportsInt | typing.SupportsIndex,
    nrows: typing.SupportsInt | typing.SupportsIndex,
    chunks: typing.SupportsInt | typing.SupportsIndex,
    nchunks: typing.SupportsInt | typing.SupportsIndex,
    scalars: typing.SupportsInt | typing.SupportsIndex,
    *,
    schedule: typing.SupportsInt | typing.SupportsIndex = 0,
    clock: typing.SupportsInt | typing.SupportsIndex = 0,
    lr_index: typing.SupportsInt | typing.SupportsIndex = -1,
    momentum_index: typing.SupportsInt | typing.SupportsIndex = -1,
    inv_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    grad_scale: typing.SupportsInt | typing.SupportsIndex = 0,
    found_inf: typing.SupportsInt | typing.SupportsIndex = 0,
    store_grad: bool = False,
    hyper_out: typing.SupportsInt | typing.SupportsIndex = 0,
    workspace: typing.SupportsInt | typing.SupportsIndex = 0,
    stream: typing.SupportsInt | typing.SupportsIndex = 0,
) -> None:
    """
    Enqueues one step of rule `name` on a CUDA stream; every address is device memory (rows: the segment table, chunks: cuda_chunk_table, scalars: float64, schedule: a Schedule's bytes, workspace: cuda_workspace_bytes). Never synchronizes.
    """

def rule_step_emulated(
    name: str,
    segments: numpy.ndarray,
    scalars: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
    chunks: numpy.ndarray,
    *,
    schedule: Schedule | None = None,
    clock: typing.SupportsInt | typing.SupportsIndex = 0,
    lr_index: typing.SupportsInt | typing.SupportsIndex = -1,
    momentum_index: typing.SupportsInt | typing.SupportsIndex = -1,
    inv_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    grad_scale: typing.SupportsInt | typing.SupportsIndex = 0,
    found_inf: typing.SupportsInt | typing.SupportsIndex = 0,
    store_grad: bool = False,
    hyper_out: typing.SupportsInt | typing.SupportsIndex = 0,
    seed: typing.SupportsInt | typing.SupportsIndex = 0,
    dry: bool = False,
    max_blocks: typing.SupportsInt | typing.SupportsIndex = 1048576,
    only_blocks: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = [],
) -> dict:
    """
    One CUDA step of rule `name` executed on the CPU: the device kernels' code over their grid, block by block and thread by thread (seed: a permuted order), every index checked (IndexError). Addresses are host memory: clock (int64), grad_scale and found_inf (float32), hyper_out (2 float64). dry: the index arithmetic only, memory untouched. Returns the grid size, the element accesses and whether it skipped.
    """

def scale_lr(
    *,
    schedule: Schedule,
    factor: typing.SupportsFloat | typing.SupportsIndex,
    floor: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    times: typing.SupportsInt | typing.SupportsIndex = 1,
) -> Schedule:
    """
    The schedule with its lr passed `times` times through max(lr * factor, floor).
    """

def schedule_bytes(arg0: Schedule) -> bytes:
    """
    The compiled schedule's raw bytes (copied to device memory for the CUDA kernel).
    """

def schedulefree_adamw_step(
    segments: numpy.ndarray,
    scalars: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
    inv_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    store_grad: bool = False,
    threads: typing.SupportsInt | typing.SupportsIndex = 1,
    sqrt_f32: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_f64: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_threads_local: typing.SupportsInt | typing.SupportsIndex = 0,
    schedule: Schedule | None = None,
    next_step: typing.SupportsInt | typing.SupportsIndex = 0,
    momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    divide_scale: bool = False,
) -> typing.Any:
    """
    The schedulefree_adamw step on the CPU over an int64 segment table (columns: _core.rules['schedulefree_adamw']['cols']). scalars: the values of _core.rules['schedulefree_adamw']['scalars'], in that order. inv_scale/store_grad: GradScaler's unscaling. sqrt_f32, sqrt_f64, sqrt_threads_local: the vector square roots (0: IEEE sqrt). With a schedule, returns (lr, momentum) of next_step as sgd_hyper does (momentum: the constant where the schedule has none); else None. divide_scale (with store_grad): inv_scale is the scale, and gradients are divided by it, as torch's fused CPU kernels unscale.
    """

def schedulefree_sgd_step(
    segments: numpy.ndarray,
    scalars: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
    inv_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    store_grad: bool = False,
    threads: typing.SupportsInt | typing.SupportsIndex = 1,
    sqrt_f32: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_f64: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_threads_local: typing.SupportsInt | typing.SupportsIndex = 0,
    schedule: Schedule | None = None,
    next_step: typing.SupportsInt | typing.SupportsIndex = 0,
    momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    divide_scale: bool = False,
) -> typing.Any:
    """
    The schedulefree_sgd step on the CPU over an int64 segment table (columns: _core.rules['schedulefree_sgd']['cols']). scalars: the values of _core.rules['schedulefree_sgd']['scalars'], in that order. inv_scale/store_grad: GradScaler's unscaling. sqrt_f32, sqrt_f64, sqrt_threads_local: the vector square roots (0: IEEE sqrt). With a schedule, returns (lr, momentum) of next_step as sgd_hyper does (momentum: the constant where the schedule has none); else None. divide_scale (with store_grad): inv_scale is the scale, and gradients are divided by it, as torch's fused CPU kernels unscale.
    """

def set_tensor_api(tensor_type: typing.Any, data_ptr_fn: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    torch.Tensor and torch's C function returning a tensor's data address (0: call data_ptr).
    """

def sgd_hyper(
    schedule: Schedule,
    step: typing.SupportsInt | typing.SupportsIndex,
    momentum: typing.SupportsFloat | typing.SupportsIndex,
) -> tuple[float, float]:
    """
    (lr, momentum) of `step`; the schedule's momentum, else `momentum`.
    """

def sgd_step(
    segments: numpy.ndarray,
    scalars: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
    inv_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    store_grad: bool = False,
    threads: typing.SupportsInt | typing.SupportsIndex = 1,
    sqrt_f32: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_f64: typing.SupportsInt | typing.SupportsIndex = 0,
    sqrt_threads_local: typing.SupportsInt | typing.SupportsIndex = 0,
    schedule: Schedule | None = None,
    next_step: typing.SupportsInt | typing.SupportsIndex = 0,
    momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    divide_scale: bool = False,
) -> typing.Any:
    """
    The sgd step on the CPU over an int64 segment table (columns: _core.rules['sgd']['cols']). scalars: the values of _core.rules['sgd']['scalars'], in that order. inv_scale/store_grad: GradScaler's unscaling. sqrt_f32, sqrt_f64, sqrt_threads_local: the vector square roots (0: IEEE sqrt). With a schedule, returns (lr, momentum) of next_step as sgd_hyper does (momentum: the constant where the schedule has none); else None. divide_scale (with store_grad): inv_scale is the scale, and gradients are divided by it, as torch's fused CPU kernels unscale.
    """

def sweep(
    *,
    start_lr: typing.SupportsFloat | typing.SupportsIndex,
    end_lr: typing.SupportsFloat | typing.SupportsIndex,
    num_steps: typing.SupportsFloat | typing.SupportsIndex,
    mode: SweepMode,
) -> Schedule: ...
def timm_cycle(
    *,
    curve: TimmCurve,
    base: typing.SupportsFloat | typing.SupportsIndex,
    lr_min: typing.SupportsFloat | typing.SupportsIndex,
    t_initial: typing.SupportsFloat | typing.SupportsIndex,
    cycle_mul: typing.SupportsFloat | typing.SupportsIndex,
    cycle_decay: typing.SupportsFloat | typing.SupportsIndex,
    cycle_limit: typing.SupportsFloat | typing.SupportsIndex,
    k_decay: typing.SupportsFloat | typing.SupportsIndex,
    power: typing.SupportsFloat | typing.SupportsIndex,
    lb: typing.SupportsFloat | typing.SupportsIndex,
    ub: typing.SupportsFloat | typing.SupportsIndex,
    warmup_t: typing.SupportsFloat | typing.SupportsIndex,
    warmup_lr_init: typing.SupportsFloat | typing.SupportsIndex,
    warmup_step: typing.SupportsFloat | typing.SupportsIndex,
    warmup_prefix: bool,
) -> Schedule:
    """
    A timm cosine, tanh or poly leaf for one group; warmup_step nan: timm's (target - warmup_lr_init) / warmup_t.
    """

def timm_error(schedule: Schedule, t: typing.SupportsFloat | typing.SupportsIndex) -> int:
    """
    What timm's Python does at step t: 0 a float lr, else the TimmError code.
    """

def timm_step(
    *,
    base: typing.SupportsFloat | typing.SupportsIndex,
    decay_t: typing.SupportsFloat | typing.SupportsIndex,
    decay_rate: typing.SupportsFloat | typing.SupportsIndex,
    milestones: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex],
    multi: bool,
    warmup_t: typing.SupportsFloat | typing.SupportsIndex,
    warmup_lr_init: typing.SupportsFloat | typing.SupportsIndex,
    warmup_step: typing.SupportsFloat | typing.SupportsIndex,
    warmup_prefix: bool,
) -> Schedule:
    """
    A timm step (decay_t) or multistep (milestones) leaf for one group.
    """

def timm_values(
    schedules: collections.abc.Sequence[Schedule], t: typing.SupportsFloat | typing.SupportsIndex
) -> list[float]:
    """
    Each one-leaf timm schedule's lr at step t, or the exception timm's Python raises there.
    """

def timm_wsd(
    *,
    base: typing.SupportsFloat | typing.SupportsIndex,
    t_initial: typing.SupportsFloat | typing.SupportsIndex,
    decay_t: typing.SupportsFloat | typing.SupportsIndex,
    lr_min: typing.SupportsFloat | typing.SupportsIndex,
    stable_fn: TimmStable,
    stable_timescale: typing.SupportsFloat | typing.SupportsIndex,
    stable_power: typing.SupportsFloat | typing.SupportsIndex,
    decay_fn: TimmDecay,
    decay_power: typing.SupportsFloat | typing.SupportsIndex,
    decay_ratio: typing.SupportsFloat | typing.SupportsIndex,
    warmup_t: typing.SupportsFloat | typing.SupportsIndex,
    warmup_lr_init: typing.SupportsFloat | typing.SupportsIndex,
    warmup_step: typing.SupportsFloat | typing.SupportsIndex,
) -> Schedule:
    """
    A timm warmup-stable-decay leaf for one group.
    """

def warmup_decay(
    *,
    kind: Kind,
    peak: typing.SupportsFloat | typing.SupportsIndex,
    warmup: typing.SupportsFloat | typing.SupportsIndex,
    stable: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    decay: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    num_cycles: typing.SupportsFloat | typing.SupportsIndex = 0.5,
    min_ratio: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    power: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    lr_end: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    lr_init: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    timescale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    warmup_shape: Ramp = ...,
    decay_shape: Ramp = ...,
) -> Schedule:
    """
    A warmup-decay leaf: lr = peak * factor(t), factor the transformers lambda of `kind`.
    """

cuda_built: bool = True
cuda_geometry: dict = {"threads": 256, "chunk": 4096, "max_blocks": 1048576, "row_threads": 256}
dtype_codes: dict = {"float32": 0, "float64": 1, "bfloat16": 2, "float16": 3}
rules: dict = {
    "sgd": {
        "slots": ("momentum_buffer"),
        "scalars": ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"),
        "cols": {"p": 0, "g": 1, "momentum_buffer": 2, "n": 3, "dtype": 4, "step": 5, "step_dtype": 6, "fresh": 7},
        "width": 8,
        "step": False,
        "root": False,
        "grad_out": False,
        "fresh": True,
    },
    "adam": {
        "slots": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        "scalars": (
            "lr",
            "beta1",
            "beta2",
            "eps",
            "weight_decay",
            "decoupled",
            "amsgrad",
            "maximize",
            "lr_dtype",
            "vec_bytes",
        ),
        "cols": {
            "p": 0,
            "g": 1,
            "exp_avg": 2,
            "exp_avg_sq": 3,
            "max_exp_avg_sq": 4,
            "n": 5,
            "dtype": 6,
            "step": 7,
            "step_dtype": 8,
            "fresh": 9,
        },
        "width": 10,
        "step": True,
        "root": True,
        "grad_out": False,
        "fresh": False,
    },
    "rmsprop": {
        "slots": ("square_avg", "momentum_buffer", "grad_avg"),
        "scalars": ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
        "cols": {
            "p": 0,
            "g": 1,
            "square_avg": 2,
            "momentum_buffer": 3,
            "grad_avg": 4,
            "n": 5,
            "dtype": 6,
            "step": 7,
            "step_dtype": 8,
            "fresh": 9,
        },
        "width": 10,
        "step": True,
        "root": True,
        "grad_out": False,
        "fresh": False,
    },
    "lion": {
        "slots": ("exp_avg"),
        "scalars": ("lr", "beta1", "beta2", "weight_decay"),
        "cols": {"p": 0, "g": 1, "exp_avg": 2, "n": 3, "dtype": 4, "step": 5, "step_dtype": 6, "fresh": 7},
        "width": 8,
        "step": False,
        "root": False,
        "grad_out": False,
        "fresh": False,
    },
    "schedulefree_adamw": {
        "slots": ("z", "exp_avg_sq"),
        "scalars": ("lr", "beta1", "beta2", "eps", "weight_decay", "ckp1", "bias_correction2"),
        "cols": {"p": 0, "g": 1, "z": 2, "exp_avg_sq": 3, "n": 4, "dtype": 5, "step": 6, "step_dtype": 7, "fresh": 8},
        "width": 9,
        "step": False,
        "root": True,
        "grad_out": True,
        "fresh": False,
    },
    "schedulefree_sgd": {
        "slots": ("z"),
        "scalars": ("lr", "momentum", "weight_decay", "ckp1"),
        "cols": {"p": 0, "g": 1, "z": 2, "n": 3, "dtype": 4, "step": 5, "step_dtype": 6, "fresh": 7},
        "width": 8,
        "step": False,
        "root": False,
        "grad_out": True,
        "fresh": False,
    },
}
