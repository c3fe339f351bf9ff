"""Type stub of the compiled core (cpp/bindings/): schedules, tables, param-group writer, fused SGD step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

class Anneal:
    """One-cycle annealing."""

    cos: ClassVar[Anneal]
    linear: ClassVar[Anneal]
    __members__: ClassVar[dict[str, Anneal]]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...

class Kind:
    """Kind of a leaf schedule."""

    constant: ClassVar[Kind]
    linear: ClassVar[Kind]
    sweep: ClassVar[Kind]
    cyclic: ClassVar[Kind]
    onecycle: ClassVar[Kind]
    cosine_restarts: ClassVar[Kind]
    warmup_stable_decay: ClassVar[Kind]
    warmup_linear: ClassVar[Kind]
    warmup_cosine: ClassVar[Kind]
    warmup_hard_restarts: ClassVar[Kind]
    warmup_polynomial: ClassVar[Kind]
    inverse_sqrt: ClassVar[Kind]
    __members__: ClassVar[dict[str, Kind]]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...

class MomentumKey:
    """Which param-group entry a scheduler's momentum goes to."""

    none: ClassVar[MomentumKey]
    momentum: ClassVar[MomentumKey]
    betas: ClassVar[MomentumKey]
    __members__: ClassVar[dict[str, MomentumKey]]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...

class Quantity:
    """What a table holds."""

    lr: ClassVar[Quantity]
    momentum: ClassVar[Quantity]
    __members__: ClassVar[dict[str, Quantity]]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...

class Ramp:
    """Shape of a warmup-stable-decay ramp."""

    linear: ClassVar[Ramp]
    cosine: ClassVar[Ramp]
    one_minus_sqrt: ClassVar[Ramp]
    __members__: ClassVar[dict[str, Ramp]]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...

class ScaleKind:
    """Amplitude scale of a cyclical schedule."""

    triangular: ClassVar[ScaleKind]
    triangular2: ClassVar[ScaleKind]
    exp_range: ClassVar[ScaleKind]
    geometric: ClassVar[ScaleKind]
    external: ClassVar[ScaleKind]
    __members__: ClassVar[dict[str, ScaleKind]]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...

class ScaleMode:
    """What the scale is evaluated at."""

    cycle: ClassVar[ScaleMode]
    iterations: ClassVar[ScaleMode]
    __members__: ClassVar[dict[str, ScaleMode]]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...

class Status:
    """Whether a schedule has finite values at some steps."""

    ok: ClassVar[Status]
    overflow: ClassVar[Status]
    zero_division: ClassVar[Status]
    __members__: ClassVar[dict[str, Status]]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...

class SweepMode:
    """Range-test sweep."""

    linear: ClassVar[SweepMode]
    exp: ClassVar[SweepMode]
    __members__: ClassVar[dict[str, SweepMode]]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...

class Window:
    """Shape of one cycle."""

    triangular: ClassVar[Window]
    welch: ClassVar[Window]
    hann: ClassVar[Window]
    __members__: ClassVar[dict[str, Window]]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...

class Schedule:
    """A compiled schedule: leaf pieces and join boundaries."""

    def at(self, t: float) -> tuple[float, float]:
        """(lr, momentum) at step t; momentum is NaN where undefined."""
    def lr(self, t: float) -> float:
        ...
    def momentum(self, t: float) -> float:
        """Momentum at step t; NaN where undefined."""
    @property
    def has_momentum(self) -> bool: ...
    def status_between(self, first: float, last: float) -> Status:
        """Whether every step first..last has finite values (checked at both ends; overflow is monotone)."""
    def table_range(self, quantity: Quantity, first: int, n: int, out: np.ndarray, threads: int = 0) -> None:
        """Values at steps first..first+n-1 into out (float32 or float64), GIL released."""
    def table_steps(self, quantity: Quantity, steps: np.ndarray, out: np.ndarray, threads: int = 0) -> None:
        """Values at each int64 step into out, GIL released."""

class GroupWriter:
    """Writes one step's lr and momentum, from one compiled schedule per param group."""

    def __init__(self, *, schedules: Sequence[Schedule], momentum_key: MomentumKey, fallback_momentum: Sequence[float] = ..., as_torch: bool = True) -> None:
        ...
    def write(self, t: float, groups: list) -> list:
        """Values at step t into the groups; returns the lrs. Raises before writing anything."""
    def write_scaled(self, t: float, lr_scales: Sequence[float], momentum_scales: Sequence[float], groups: list) -> list:
        """Cyclic values with scales from a Python scale_fn."""
    def write_restarts(self, T_cur: float, T_i: float, groups: list) -> list:
        ...
    def cycle(self, t: float) -> float:
        ...
    def values(self, t: float) -> list:
        ...
    def values_restarts(self, T_cur: float, T_i: float) -> list:
        ...

def constant(*, lr: float) -> Schedule:
    ...
def cosine_restarts(*, base_lr: float, eta_min: float, T_0: float, T_mult: float, peak_decay: float, warmup_steps: float) -> Schedule:
    ...
cuda_built: bool
def cyclic(*, base_lr: float, max_lr: float, total_size: float, step_ratio: float, scale: ScaleKind, gamma: float, scale_mode: ScaleMode, window: Window, cycle_momentum: bool, base_momentum: float, max_momentum: float) -> Schedule:
    ...
def cyclic_geometry(step_size_up: float, step_size_down: float) -> tuple[float, float]:
    """(total_size, step_ratio) as torch's CyclicLR computes them."""
def cyclic_scale(kind: ScaleKind, gamma: float, x: float) -> float:
    """The amplitude scale at x; OverflowError where its power overflows."""
def hardware_threads() -> int:
    ...
def join(*, schedules: Sequence[Schedule], boundaries: Sequence[float]) -> Schedule:
    """Schedules joined at step boundaries (nested joins flattened; at most 16 pieces)."""
def linear(*, start_lr: float, end_lr: float, steps: float) -> Schedule:
    ...
def onecycle(*, max_lr: float, total_steps: float, pct_start: float, anneal: Anneal, three_phase: bool, div_factor: float, final_div_factor: float, cycle_momentum: bool, base_momentum: float, max_momentum: float) -> Schedule:
    ...
def onecycle_phase_ends(total_steps: float, pct_start: float, three_phase: bool) -> list[float]:
    """The phase end steps of torch's OneCycleLR."""
def onecycle_phases(*, phases: Sequence[tuple[float, float, float, float, float]], total_steps: float, anneal: Anneal, cycle_momentum: bool) -> Schedule:
    """One-cycle from explicit phases (end_step, start_lr, end_lr, start_momentum, end_momentum)."""
def plan_bound(params: list, grads: list, data_ptrs: np.ndarray) -> bool:
    """True when no parameter's .grad object or .data storage changed since the plan was built."""
def restart_pos_torch_epoch(T_0: float, T_mult: float, epoch: float) -> tuple[float, float]:
    """(T_cur, T_i) from torch's closed form for step(epoch)."""
def schedule_bytes(arg0: Schedule) -> bytes:
    """The compiled schedule's raw bytes (copied to device memory for the CUDA kernel)."""
def sgd_cpu_isa() -> str:
    """Instruction set the CPU kernels dispatch to."""
def sgd_hyper(arg0: Schedule, arg1: int, arg2: float) -> tuple[float, float]:
    ...
sgd_segment_cols: int
def sgd_step(schedule: Schedule, step: int, segments: np.ndarray, momentum: float, dampening: float, weight_decay: float, nesterov: bool, maximize: bool, inv_scale: float, store_grad: bool, threads: int) -> tuple:
    """Fused SGD step over an int64 segment table (rows p, g, buf, n, dtype, first) on the CPU; lr and momentum come from the schedule at `step`. Returns (lr, momentum)."""
def sgd_step_cuda(arg0: int, arg1: int, arg2: int, arg3: int, arg4: int, arg5: float, arg6: float, arg7: float, arg8: bool, arg9: bool, arg10: int, arg11: int, arg12: int, arg13: int) -> None:
    """Fused SGD step on the caller's CUDA stream; lr/momentum computed on the device from *step, which the kernel advances unless *found_inf is nonzero. No host synchronization."""
def sweep(*, start_lr: float, end_lr: float, num_steps: float, mode: SweepMode) -> Schedule:
    ...
def warmup_decay(*, kind: Kind, peak: float, warmup: float, stable: float = 0.0, decay: float = 0.0, num_cycles: float = 0.5, min_ratio: float = 0.0, power: float = 1.0, lr_end: float = 0.0, lr_init: float = 1.0, timescale: float = 1.0, warmup_shape: Ramp = ..., decay_shape: Ramp = ...) -> Schedule:
    """A warmup-decay leaf: lr = peak * factor(t), factor the transformers lambda of `kind`."""
