"""The fused-optimizer engine shared by clrfast's optimizers.

A rule (SGD, the Adam family) supplies its hyperparameters, its per-parameter state,
the kernel row of a parameter and its kernel; the engine owns everything around them,
so every rule gets the same guarantees:

- **Nothing reaches the kernel unchecked.** A *plan* per param group lists, for every
  parameter with a gradient, the raw pointers the kernel will touch. It is built only
  after every tensor was checked (device, dtype, layout, element counts of parameter,
  gradient and state, memory overlap). Each later step revalidates it exactly in C++
  (``_core.StepCheck``: each gradient's dtype, device, shape, layout and overlap, the
  addresses and layouts of the parameters, the state tensors), a few attribute reads per
  tensor; a gradient that passes (autograd's new one after ``zero_grad()`` included) goes
  straight into the table, anything else takes the full check again. Tensors the kernel
  cannot walk as one flat run (transposed parameters, a state buffer left in another
  dtype by ``model.to()``) take torch's own single-tensor code, so they still match torch.
- **All or nothing.** ``step`` validates every group before it mutates anything, and the
  constructor, ``add_param_group`` and ``load_state_dict`` validate all input first. A step
  checks every value it reads (clock, schedule, hyperparameters, flags, state) whoever put it
  there: a value written to a group after construction fails the step with an error naming
  it (``param_groups[0]['step']``) and leaves parameters, gradients, state and clock as they
  were. A clock that comes back as an integral float (``3.0``, ``np.float64(3)``, from JSON or
  NumPy) counts as that integer and is an ``int`` again after the step; ``2.5`` is refused.
- **torch's conventions.** After k applied updates a group shows the lr and momentum of
  update k (as after ``scheduler.step()``). A group without a schedule applies what it
  holds, as torch's optimizers do. A group with one is never silently overridden: a torch
  ``LRScheduler`` attached to the optimizer (``ReduceLROnPlateau`` included) is refused at the
  next step (``_check_followed``); ``scheduler()`` is the scheduler object to hand to trainers.
- **torch.compile.** A compiled step is one custom op whose inputs are the parameters with
  a gradient, their gradients and a handle tensor; it honours functionalization by writing
  the updated values into the tensors it was handed (see the op below).
- **The clock** (``group["step"]``) counts applied updates; a step skipped by GradScaler
  does not advance it.
"""

from __future__ import annotations

import gc
import itertools
import math
import numbers
import sys
import types
import warnings
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch.optim.optimizer import _get_scalar_dtype

from .. import _core
from .. import _validate as check
from ..schedules import Schedule, from_dict

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

# The storage dtype codes of every kernel table (DType in cpp/include/clrfast/sgd_update.hpp).
DTYPE_CODES = {getattr(torch, name): code for name, code in _core.dtype_codes.items()}
_DEVICES = ("cpu", "cuda")
# The per-parameter spec of a StepCheck (cpp/bindings/step_check.cpp): p address, numel, row,
# flags, hash(p), element size, then the state tensors' addresses; row codes; flags.
_SPEC = _core.step_check_spec
_SPEC_BUFS = _SPEC["bufs"]
_NO_GRAD, _SLOW = _SPEC["no_grad"], _SPEC["slow"]
_CONTIGUOUS, _STRIDED, _HAS_STATE, _EXACT = (_SPEC[k] for k in ("contiguous", "strided", "has_state", "exact"))
_FRESH = "fresh_state"  # state-dict key: indices of a group's parameters whose state holds no history yet


def _data_ptr_fn() -> int:
    """torch's C function returning a tensor's data address (exported for inductor), or 0."""
    try:
        from torch._C._dynamo import guards
    except ImportError:
        return 0
    return int(getattr(guards, "_torchinductor_pyobject_tensor_data_ptr", 0) or 0)


_core.set_tensor_api(torch.Tensor, _data_ptr_fn())


# --------------------------------------------------------------------------- tensors
def _dtensor_type():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return None
    return DTensor


def is_dtensor(t) -> bool:
    if type(t) in (torch.Tensor, torch.nn.Parameter):
        return False
    dt = _dtensor_type()
    return dt is not None and isinstance(t, dt)


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor whose memory the kernel touches: a DTensor's local shard, else ``t``."""
    return cast("DTensor", t)._local_tensor if is_dtensor(t) else t


def dense_like(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``b`` lays its elements out in memory exactly as ``a`` and both are one dense run."""
    if a.shape != b.shape:
        return False
    if a.is_contiguous() and b.is_contiguous():
        return True
    for fmt in (torch.channels_last, torch.channels_last_3d):
        try:
            if a.is_contiguous(memory_format=fmt) and b.is_contiguous(memory_format=fmt) and a.stride() == b.stride():
                return True
        except RuntimeError:  # the format does not apply to this rank
            pass
    return False


def extent(t: torch.Tensor) -> tuple[int, int]:
    """The byte range [start, end) that the elements of ``t`` span in memory."""
    if t.numel() == 0:
        return (0, 0)
    start = t.data_ptr()
    span = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
    low = sum((n - 1) * s for n, s in zip(t.shape, t.stride()) if s < 0)
    return (start + low * t.element_size(), start + (low + span) * t.element_size())


def check_no_overlap(named, read=()) -> None:
    """Raise when a tensor the step writes (``named``) shares memory with another tensor it touches.

    ``read`` lists tensors the step only reads (gradients): they may share memory with each
    other, not with a written one.
    """
    spans = sorted(
        [(*extent(t), name, True) for name, t in named if t.numel()]
        + [(*extent(t), name, False) for name, t in read if t.numel()]
    )
    end, owner, owner_writes = -1, None, False
    for a, b, name, writes in spans:
        if a < end and (writes or owner_writes):
            raise ValueError(
                f"{owner} and {name} share memory (tied weights, one tensor listed twice, or a gradient viewing "
                "memory the step writes); the fused step would touch that memory in an order torch does not "
                "use. Pass each shared parameter once, and give each parameter its own gradient."
            )
        if b > end or (b == end and writes):
            end, owner, owner_writes = b, name, writes


def where(gi: int, pi: int) -> str:
    return f"param_groups[{gi}] parameter {pi}"


def check_param(gi: int, pi: int, p, name: str) -> torch.Tensor:
    """Checks what a parameter must be whether or not it has a gradient; returns its local tensor."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(
            f"{where(gi, pi)}: optimizer can only optimize Tensors, but one of the params is {torch.typename(p)}"
        )
    lp = local(p)
    if lp.layout != torch.strided:
        raise ValueError(f"{where(gi, pi)}: {name} supports dense (strided) parameters, got layout {lp.layout}")
    if lp.device.type not in _DEVICES:
        raise ValueError(f"{where(gi, pi)}: {name} runs on CPU and CUDA tensors, got a parameter on {lp.device}")
    if lp.dtype not in DTYPE_CODES:
        raise TypeError(
            f"{where(gi, pi)}: {name} supports float32, float64, bfloat16 and float16 parameters, got {lp.dtype}"
        )
    if lp.device.type == "cuda" and not getattr(_core, "cuda_built", False):
        raise ValueError(f"{where(gi, pi)}: this clrfast build has no CUDA kernels; CUDA parameters need a CUDA build")
    if torch._debug_has_internal_overlap(lp) == 1:
        raise ValueError(f"{where(gi, pi)}: the parameter has overlapping elements (an expanded tensor)")
    return lp


def check_grad(gi: int, pi: int, p, lp: torch.Tensor, g) -> torch.Tensor:
    """Checks a gradient against its parameter; returns its local tensor."""
    if is_dtensor(p) != is_dtensor(g):
        raise ValueError(f"{where(gi, pi)}: a DTensor parameter needs a DTensor gradient and a plain one a plain one")
    lg = local(g)
    if lg.layout != torch.strided:
        raise ValueError(f"{where(gi, pi)}: sparse gradients are not supported (layout {lg.layout})")
    if lg.dtype != lp.dtype or lg.device != lp.device:
        raise ValueError(
            f"{where(gi, pi)}: gradient dtype/device ({lg.dtype}, {lg.device}) differs from the parameter's "
            f"({lp.dtype}, {lp.device})"
        )
    if lg.shape != lp.shape:
        raise ValueError(
            f"{where(gi, pi)}: gradient shape {tuple(lg.shape)} differs from the parameter's {tuple(lp.shape)}"
        )
    return lg


def check_state_tensor(gi: int, pi: int, key: str, p, value) -> None:
    """A state tensor loaded or found for parameter p must have p's shape and a floating dtype."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where(gi, pi)}: state[{key!r}] must be a tensor, got {type(value).__name__}")
    if value.layout != torch.strided or not value.is_floating_point():
        raise TypeError(f"{where(gi, pi)}: state[{key!r}] must be a dense floating tensor, got {value.dtype}")
    if value.shape != p.shape:
        raise ValueError(
            f"{where(gi, pi)}: state[{key!r}] has shape {tuple(value.shape)}, the parameter {tuple(p.shape)}"
        )


def as_real(gi: int, key: str, value) -> float:
    """A group hyperparameter as a float (0-d tensors, as DCP writes them, included)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"param_groups[{gi}][{key!r}] must be a real number, got {value!r}")
    return float(value)


def check_schedule(name: str, schedule) -> None:
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"{name} must be a clrfast schedule (clr.Cyclic, clr.OneCycle, ...), a float lr or None, got {schedule!r}"
        )


def real_or_tensor(name: str, value):
    """An lr as torch's optimizers take it: a real number or a one-element floating tensor.

    A tensor's value is checked as torch checks it (``ValueError("Invalid learning rate: ...")``
    for a negative or NaN one), and an infinite one is refused as an infinite float is.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.is_floating_point() or value.dtype not in DTYPE_CODES:
            raise TypeError(
                f"{name} must be a real number or a one-element float32, float64, bfloat16 or float16 "
                f"tensor, got {value!r}"
            )
        v = float(value)
        if not (math.isfinite(v) and v >= 0.0):
            raise ValueError(f"Invalid learning rate: {value} ({name} must be finite and >= 0)")
        return value
    return check.real(name, value, min=0.0)


def non_negative(name: str, value, invalid: str) -> float:
    """A finite real >= 0 as a float; a negative or NaN one is refused with torch's message (``"{invalid}: {value}"``).

    torch's check is ``not 0.0 <= value``, so NaN and -inf get its message too; +inf, which torch
    accepts, is refused here as every infinite hyperparameter is.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            below = not 0.0 <= float(value)
        except OverflowError:  # an int beyond a double: check.real says so
            below = value < 0
        if below:
            raise ValueError(f"{invalid}: {value} ({name} must be >= 0.0, got {value!r})")
    return check.real(name, value)


_F64 = DTYPE_CODES[torch.float64]


def step_lr(gi: int, value) -> tuple[float, int]:
    """The lr a step applies and the dtype code of the scalars torch derives from it.

    torch computes ``1 - lr * weight_decay`` and ``lr / bias_correction`` as 0-d tensor ops
    when lr is a tensor (in its dtype), and in double when it is a number.
    """
    name = f"param_groups[{gi}]['lr']"
    if isinstance(value, torch.Tensor):
        real_or_tensor(name, value)
        return float(value), DTYPE_CODES[value.dtype]
    return check.real(name, value, min=0.0), _F64


def step_real(gi: int, key: str, value, *, min: float | None = None) -> float:
    """A hyperparameter a step applies, as a finite float (0-d tensors included), at least ``min``."""
    v = as_real(gi, key, value)
    if not math.isfinite(v) or (min is not None and v < min):
        bound = "finite" if min is None else f"finite and >= {min}"
        raise ValueError(f"param_groups[{gi}][{key!r}] must be {bound}, got {value!r}")
    return v


def step_flag(gi: int, key: str, value) -> bool:
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise TypeError(f"param_groups[{gi}][{key!r}] must be a bool, got {value!r}")
    return bool(value)


def clock(name: str, value) -> int:
    """A group's step count: a whole number (an integral float such as ``np.float64(3)`` reads as 3) below 2**53."""
    step = check.whole(name, value, min=0)
    if step >= 2**53:
        raise ValueError(f"{name} must be < 2**53, got {step}")
    return step


def step_clock(gi: int, group) -> int:
    """The validated clock of a group about to step; its schedule (if any) is checked at that step too."""
    step = clock(f"param_groups[{gi}]['step']", group["step"])
    sched = group["schedule"]
    if sched is not None:
        check_schedule(f"param_groups[{gi}]['schedule']", sched)
        sched._check_max(step)  # torch-style ValueError before anything changes
    return step


class IdSet:
    """A set of tensors by identity that keeps none alive (a WeakSet compares tensors with ``==``)."""

    __slots__ = ("_refs",)

    def __init__(self):
        self._refs: dict = {}

    def add(self, t) -> None:
        self._refs[id(t)] = weakref.ref(t)

    def discard(self, t) -> None:
        ref = self._refs.get(id(t))
        if ref is not None and ref() is t:
            del self._refs[id(t)]

    def __contains__(self, t) -> bool:
        ref = self._refs.get(id(t))
        return t is not None and ref is not None and ref() is t


# --------------------------------------------------------------------------- torch.compile
# Under torch.compile a step is one opaque custom op: Dynamo traces neither the plans nor the
# param_groups (whose lr and step change every step and would be guarded on, recompiling each
# time), only the parameters that have a gradient, their gradients and a handle, which are
# stable. The op runs the optimizer's eager step at run time; lr and momentum are computed
# there from the clock, so nothing the graph sees changes while the schedule moves.
#
# The handle is a 0-d tensor, a graph input: a constant would make each optimizer's graph its
# own (a recompilation per optimizer) and would be baked into graphs that inductor caches on
# disk and hands to other processes.
#
# AOTAutograd's functionalization (backends "aot_eager", "inductor") may call the op on clones
# of the tensors it declares mutated and copy the clones back over the originals afterwards.
# The eager step updates the live parameters (and reads their live gradients), so the op then
# writes their new values into whatever it was handed: the copy-back restores them. Where it
# was handed the live tensors themselves (no functionalization, or inductor's re-inplacing)
# nothing is copied.
_OPTIMIZERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_HANDLES = itertools.count(1)


@torch.library.custom_op("clrfast::fused_step", mutates_args=("params", "grads"))
def _fused_step(params: list[torch.Tensor], grads: list[torch.Tensor], handle: torch.Tensor) -> None:
    # grads are mutated only by GradScaler's unscale-in-place; listing them keeps the order right
    opt = _OPTIMIZERS[int(handle)]
    live = opt._stepped_params()
    if len(live) != len(params):
        raise RuntimeError(
            f"clrfast::fused_step got {len(params)} parameters with a gradient, the optimizer has {len(live)} now; "
            "a gradient was set or cleared between the traced step and its execution"
        )
    live_grads = [p.grad for p in live]
    opt._eager_step()
    for given, p in zip(params, live):
        if given.data_ptr() != p.data_ptr():
            given.copy_(p)
    for given, g in zip(grads, live_grads):
        if given.data_ptr() != g.data_ptr():
            given.copy_(g)


@_fused_step.register_fake
def _(params, grads, handle) -> None:
    return None


def _called_from_dcp_init(depth: int = 12) -> bool:
    frame: types.FrameType | None = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code.co_name == "_init_optim_state" and frame.f_globals.get("__name__", "").startswith(
            "torch.distributed.checkpoint"
        ):
            return True
        frame = frame.f_back
    return False


def _same_value(a, b) -> bool:
    """True when two hyperparameter values (numbers, 0-d tensors, tuples of them) are equal."""
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (
            isinstance(a, (tuple, list))
            and isinstance(b, (tuple, list))
            and len(a) == len(b)
            and all(_same_value(x, y) for x, y in zip(a, b))
        )
    try:
        return float(a) == float(b)
    except (TypeError, ValueError, RuntimeError):
        return False


def _plateau_refs() -> int:
    """The references to ReduceLROnPlateau and its subclasses: each live scheduler holds one to its class."""
    todo, n = [torch.optim.lr_scheduler.ReduceLROnPlateau], 0
    while todo:
        cls = todo.pop()
        n += sys.getrefcount(cls)
        todo += cls.__subclasses__()
    return n


def _lowered(now, ours) -> bool:
    """True when other code wrote an lr below the published one (all a ReduceLROnPlateau writes)."""
    try:
        return float(now) < float(ours)
    except (TypeError, ValueError, RuntimeError):
        return False  # not a number: the step's own check names it


class FollowGroups(torch.optim.lr_scheduler.LRScheduler):
    """The scheduler of ``FusedOptimizer.scheduler()``: its lr is whatever the optimizer's groups show."""

    def __init__(self, optimizer):
        had = ["initial_lr" in g for g in optimizer.param_groups]
        super().__init__(optimizer)
        # torch's base class leaves 'initial_lr' in each group, the mark of an attached scheduler
        for group, kept in zip(optimizer.param_groups, had):
            if not kept:
                group.pop("initial_lr", None)

    def get_lr(self) -> list:
        return [group["lr"] for group in self.optimizer.param_groups]


# --------------------------------------------------------------------------- plans
class Plan:
    """What one step of one param group touches, every tensor already checked.

    ``template`` has a kernel row per parameter the kernel updates (``owners[r]`` is the
    parameter of row r); ``table`` is what the kernel gets this step: the template on the
    step that built the plan, then the rows ``check`` yields (parameters without a gradient
    left out, adjacent runs merged). ``slow`` lists parameters that take torch's
    single-tensor code. ``deferred`` holds the state changes this step makes before the
    kernel runs: they run only once every group is validated. ``check`` (a
    ``_core.StepCheck``, made when the plan's first step has committed) revalidates the plan
    at each later step. No address in a table outlives its tensor: ``keep`` and ``grads`` hold
    the first step's tensors until the check exists; the check holds the parameters and state
    tensors, and each step's gradients from its refresh until ``release()`` after the kernel.
    """

    __slots__ = (
        "params",
        "grads",
        "template",
        "table",
        "owners",
        "slow",
        "deferred",
        "fresh",
        "missing",
        "cacheable",
        "device",
        "cuda",
        "check",
        "keep",
    )

    def __init__(self, device):
        self.params = self.grads = self.template = self.table = self.check = None
        self.owners: list = []
        self.slow: list = []  # (param index, param) for torch's reference code
        self.deferred: list = []
        self.fresh: list = []  # template rows whose state holds no history yet (the kernel initialises it)
        self.missing: set = set()  # state keys some row lacks (a step without momentum makes no buffer)
        self.cacheable = True
        self.device = device
        self.cuda = None  # device-side copy of the table (CUDA)
        self.keep: list = []


class Flat:
    """The contiguous storage of a ``flat=True`` group: parameters, gradients and state start as views of it.

    The layout is a locality optimisation, not a contract: the step treats each parameter,
    gradient and state tensor like list mode does (a tensor moved elsewhere is simply
    followed), and adjacent rows merge into one run of the kernel.
    """

    __slots__ = ("param", "grad", "state", "spans", "views")

    def __init__(self, param, grad, state, spans, views):
        self.param, self.grad = param, grad
        self.state = state  # {key: flat storage} for each per-element state tensor
        self.spans, self.views = spans, views  # views: {key: [view of each parameter]}

    def bound(self, i: int, g: torch.Tensor) -> bool:
        """True when gradient ``g`` of parameter ``i`` is its view of the flat gradient storage."""
        return self._in_slot(self.grad, i, g)

    def owns(self, i: int, p: torch.Tensor) -> bool:
        """True when parameter ``i`` still lives in its slot (its new state then goes next to it)."""
        return self._in_slot(self.param, i, p)

    def state_views(self, i: int, p: torch.Tensor) -> dict | None:
        """The flat state views of parameter ``i``, or None when it left its slot."""
        return {k: v[i] for k, v in self.views.items()} if self.owns(i, p) else None

    def _in_slot(self, storage: torch.Tensor, i: int, t: torch.Tensor) -> bool:
        if self.spans[i] is None:
            return False
        off, n = self.spans[i]
        return (
            t.dtype == storage.dtype
            and t.device == storage.device
            and t.numel() == n
            and t.is_contiguous()
            and t.data_ptr() == storage.data_ptr() + off * storage.element_size()
        )


# --------------------------------------------------------------------------- the base class
class FusedOptimizer(torch.optim.Optimizer):
    """Base of clrfast's fused optimizers (see the module docstring for the guarantees).

    A rule declares its per-element state tensors (``_state_keys``, in table order), its
    table width (``_cols``), the column of the "state holds no history yet" flag
    (``_first_col``, SGD's first-step momentum; None when new state is simply zeros) and
    whether adjacent flat rows may merge (``_merge_runs``). It implements
    ``_check_hyper`` (group validation), ``_publish_schedule`` (the scheduled
    hyperparameters of an update), ``_step_hyper`` (the values one update applies),
    ``_required`` (the state keys an update needs), ``_new_state`` (fresh state of a
    parameter), ``_row`` (the kernel row of a parameter), ``_kernel`` and ``_reference``
    (torch's single-tensor code, for tensors the kernel cannot walk).
    """

    _rule = "optimizer"
    _state_keys: tuple[str, ...] = ()
    _all_params: list  # every parameter, in group order: what a compiled step sees
    _cols = 0
    _first_col: int | None = None
    _merge_runs = False
    _scalar_keys: tuple = ()  # per-parameter state that is not per element (the Adam family's step)
    _ptr_cols: tuple = ()  # columns holding addresses (for merging flat runs)
    _n_col = 0  # the column of the element count
    _grad_col = 1  # the column of the gradient's address
    _writes_grads = False  # the kernel stores into the gradients (not only GradScaler's unscaling)
    # With fused_unscale, torch.amp.GradScaler hands the step its scale and inf flag and the kernel
    # unscales as it reads (one pass less over the gradients). Off by default: trainers refuse
    # gradient clipping with an optimizer that unscales internally (Lightning's precision
    # plugins ask ``_step_supports_amp_scaling``), and GradScaler's own unscale_ then skips
    # the step on inf, which leaves the clock alone all the same.
    fused_unscale = False
    # Whether a step checked for a ReduceLROnPlateau holding this optimizer (see _check_followed)
    _plateau_looked = False

    @property
    def _step_supports_amp_scaling(self) -> bool:
        return bool(self.fused_unscale)

    def __init__(self, params, defaults: dict, *, threads: int | None = None):
        if threads is not None:
            threads = check.integer("threads", threads, min=1)
        self._threads = threads
        self._plans: dict = {}
        self._flat: dict = {}
        self._published: list = []
        self._fresh = IdSet()
        groups = self._normalise(params)
        # Every group is checked before torch's constructor adds (and flattens) the first.
        checked = []
        for gi, g in enumerate(groups):
            checked.append(self._checked_group(gi, g, defaults))
            self._check_joins(gi, checked[gi], checked[:gi])
        check_no_overlap(
            [(where(gi, pi), local(p)) for gi, g in enumerate(checked) for pi, p in enumerate(g["params"])]
        )
        self._constructing = True
        self._register()
        try:
            super().__init__(checked, defaults)
        finally:
            self._constructing = False

    # ------------------------------------------------------------------ hyperparameters
    def _lr_source(self, schedule, lr) -> tuple:
        """The (schedule, lr) a constructor was given; a number as the schedule is the lr (schedule=None)."""
        if schedule is not None and not isinstance(schedule, Schedule):
            if isinstance(schedule, numbers.Real) and not isinstance(schedule, bool):
                if lr is not None:
                    raise TypeError(f"give the lr once: schedule={schedule!r} and lr={lr!r}")
                schedule, lr = None, schedule
            else:
                check_schedule("schedule", schedule)
        if schedule is None and lr is None:
            raise TypeError(
                f"{self._rule} needs a schedule (clr.Cyclic, clr.OneCycle, ...) or, with schedule=None, an lr"
            )
        if schedule is not None and lr is not None:
            raise ValueError(f"lr={lr!r} and a schedule were both given; the schedule sets the lr")
        return schedule, lr

    @staticmethod
    def _check_lr(label: str, group: dict) -> None:
        """A group's schedule, or (schedule=None) its lr, normalised in place."""
        if group["schedule"] is not None:
            check_schedule(f"{label}['schedule']", group["schedule"])
        else:
            lr = group["lr"]
            if not isinstance(lr, torch.Tensor):
                group["lr"] = non_negative(f"{label}['lr']", lr, "Invalid learning rate")
                return
            if lr.numel() != 1:  # torch's constructor check, before its value is read
                raise ValueError(f"Tensor lr must be 1-element ({label}['lr'] has {lr.numel()} elements)")
            group["lr"] = real_or_tensor(f"{label}['lr']", lr)

    @staticmethod
    def _check_flags_and_clock(label: str, group: dict, flags) -> None:
        """A group's boolean hyperparameters and its step clock, normalised in place."""
        for key in flags:
            if not isinstance(group[key], (bool, int)) or group[key] not in (0, 1):
                raise TypeError(f"{label}['{key}'] must be a bool, got {group[key]!r}")
            group[key] = bool(group[key])
        group["step"] = clock(f"{label}['step']", group["step"])

    # ------------------------------------------------------------------ groups
    @staticmethod
    def _normalise(params) -> list:
        if isinstance(params, torch.Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, but "
                f"got {torch.typename(params)}"
            )
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        return groups

    def _checked_group(self, gi: int, group, defaults: dict) -> dict:
        """The group as it will be stored, defaults filled in; raises on anything invalid.

        As torch's ``add_param_group``: ``(name, tensor)`` pairs give the group ``param_names``,
        and a tensor listed twice is kept once, with torch's warning.
        """
        if not isinstance(group, dict):
            raise TypeError(f"param_groups[{gi}]: param_group must be a dict, but got {type(group)}")
        given = set(group)
        group = dict(group)
        params = group.get("params")
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the ordering "
                "of tensors in sets will change between runs. Please use a list instead."
            )
        elif params is None:
            raise ValueError(f"param_groups[{gi}] has no 'params'")
        else:
            params = list(params)
        pairs = [pi for pi, p in enumerate(params) if isinstance(p, tuple)]
        if pairs:
            if len(pairs) != len(params):
                raise ValueError(
                    "all optimizer params should be with/without names. Some param names are missing "
                    f"(param_groups[{gi}] parameter {min(set(range(len(params))) - set(pairs))})"
                )
            for pi, p in enumerate(params):
                if len(p) != 2:
                    raise TypeError(
                        f"{where(gi, pi)}: a named parameter is a (name, tensor) pair, got a tuple of {len(p)}"
                    )
            group["param_names"] = [name for name, _ in params]
            params = [p for _, p in params]
        group["params"] = params
        for k, v in defaults.items():
            group.setdefault(k, v)
        if group.get("schedule") is not None and "lr" in given:
            raise ValueError(
                f"param_groups[{gi}] sets lr={group['lr']!r} but follows a schedule, which sets the lr; give the "
                "group its own schedule (e.g. 'schedule': clr.Constant(lr)) or 'schedule': None"
            )
        if group.get("schedule") is None and "lr" not in given and defaults.get("schedule") is not None:
            raise ValueError(f"param_groups[{gi}] has 'schedule': None and needs its own 'lr'")
        self._check_hyper(f"param_groups[{gi}]", group)
        for pi, p in enumerate(params):
            check_param(gi, pi, p, self._rule)
            if not p.is_leaf:
                raise ValueError(f"{where(gi, pi)}: can't optimize a non-leaf Tensor")
        first: dict[int, int] = {}
        for pi, p in enumerate(params):
            first.setdefault(id(p), pi)
        if len(first) != len(params):
            # torch warns and keeps both, so the step would update the tensor twice: the
            # kernel refuses memory written twice, and one update per step is what was meant
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; in future, this will "
                "cause an error; see github.com/pytorch/pytorch/issues/40967 for more information "
                f"({self._rule} keeps the first of each in param_groups[{gi}], updated once per step)",
                UserWarning,
                stacklevel=3,
            )
            keep = sorted(first.values())
            names = group.get("param_names")
            if isinstance(names, list) and len(names) == len(params):
                group["param_names"] = [names[i] for i in keep]
            group["params"] = params = [params[i] for i in keep]
        if group["flat"]:
            self._check_flattenable(gi, params)
        return group

    @staticmethod
    def _check_joins(gi: int, group: dict, before) -> None:
        """torch's checks of a group against the groups before it: names in all or none, no parameter in two."""
        named = "param_names" in group
        if any(("param_names" in g) != named for g in before):
            raise ValueError(
                "all optimizer param groups should be with/without names. cannot add param group "
                f"{'with' if named else 'without'} names to the optimizer (param_groups[{gi}])"
            )
        seen = {id(p): where(gj, pj) for gj, g in enumerate(before) for pj, p in enumerate(g["params"])}
        for pi, p in enumerate(group["params"]):
            if id(p) in seen:
                raise ValueError(
                    f"some parameters appear in more than one parameter group ({where(gi, pi)} is {seen[id(p)]})"
                )

    def add_param_group(self, param_group: dict) -> None:
        """As torch's; the group is checked in full (and flattened when ``flat``) before it is added."""
        gi = len(self.param_groups)
        if self._constructing:
            group = param_group  # __init__ checked every group already
        else:
            group = self._checked_group(gi, param_group, self.defaults)
            self._check_joins(gi, group, self.param_groups)
            named = [
                (where(gj, pi), local(p)) for gj, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"])
            ]
            check_no_overlap(named + [(where(gi, pi), local(p)) for pi, p in enumerate(group["params"])])
        super().add_param_group(group)
        group = self.param_groups[-1]
        self._all_params = self._all_params + list(group["params"])
        if group["schedule"] is not None:
            self._publish_schedule(group)
        self._published.append(self._current(group))
        if group["flat"]:
            self._flatten(gi, group)

    def _register(self) -> None:
        handle = next(_HANDLES)
        self._handle = torch.tensor(handle, dtype=torch.int64)  # a graph input under torch.compile
        _OPTIMIZERS[handle] = self
        self._all_params = []
        self._plateaus_at = _plateau_refs()  # a ReduceLROnPlateau made after this adds one

    def _check_flattenable(self, gi: int, params) -> None:
        if not params:
            return
        if any(is_dtensor(p) for p in params):
            raise ValueError(
                f"param_groups[{gi}]: flat=True does not support DTensor (FSDP2) parameters; use flat=False"
            )
        dtypes = {p.dtype for p in params}
        devices = {p.device for p in params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(
                f"param_groups[{gi}]: flat=True needs one dtype and one device per param group, got "
                f"{sorted(map(str, dtypes))} on {sorted(map(str, devices))}"
            )

    # ------------------------------------------------------------------ what the groups show
    _published_keys: tuple[str, ...] = ("lr",)
    # Flags older torch versions did not save; torch's __setstate__ reads a missing one as False.
    _later_flags: tuple = ()

    def _current(self, group) -> tuple:
        return tuple(group.get(k) for k in self._published_keys)

    def _external(self, gi: int, group) -> bool:
        """True when other code wrote a published hyperparameter since this optimizer did."""
        return any(a is not b for a, b in zip(self._current(group), self._published[gi]))

    def _advance(self, gi: int, group, values: tuple | None = None) -> None:
        """After an applied update: the clock moves and the group shows the next update's values.

        ``values``: the next update's (lr, momentum), when the kernel call computed them.
        """
        group["step"] += 1
        if values is not None:
            self._publish_values(group, *values)
        elif self._next_values(group, group["step"]) is not None:
            self._publish_schedule(group)
        self._published[gi] = self._current(group)

    def _next_values(self, group, step: int) -> tuple | None:
        """What a kernel call needs to compute the values a scheduled group shows at ``step``, or None."""
        sched = group["schedule"]
        if sched is None or (sched.max_step is not None and step > sched.max_step):
            return None
        return (sched._core, step, self._held_momentum(group))

    def _publish_schedule(self, group) -> None:
        """Writes the scheduled values (lr, momentum or betas) of the group's next update into it."""
        self._publish_values(
            group, *_core.sgd_hyper(group["schedule"]._core, group["step"], self._held_momentum(group))
        )

    def _check_followed(self, gi: int, group) -> None:
        """Refuses a step of a scheduled group whose values other code took over.

        The rule: a group with a schedule gets its lr (and momentum or betas, when the schedule
        defines a momentum) from it alone. A
        torch ``LRScheduler`` attached to the optimizer (it leaves ``initial_lr`` in every group:
        transformers' default ``LambdaLR``, the chainable schedulers, Lightning's lr finder)
        would override it, so the step refuses before it changes anything. So does a
        ``ReduceLROnPlateau`` holding the optimizer (each reduction would hold for one update,
        then the schedule would override it). It leaves no mark in the groups; ``_plateau``
        looks for it at the first step when one was made since this optimizer was, and at
        every step whose lr other code lowered, so no reduction is ever applied. A single value
        written into the group (a hook, ZeRO's group sync, a loaded state dict) is applied to
        the next update, as torch applies it; the schedule then sets the update after.
        """
        sched = group["schedule"]
        if sched is None:
            return
        check_schedule(f"param_groups[{gi}]['schedule']", sched)
        fix = (
            "Pass opt.scheduler() where a trainer wants a scheduler (transformers: "
            "Trainer(optimizers=(opt, opt.scheduler())); Lightning: {'optimizer': opt, 'lr_scheduler': "
            "opt.scheduler()}), or build the optimizer with schedule=None and an lr to let a torch scheduler "
            "set the lr."
        )
        if "initial_lr" in group:
            raise RuntimeError(
                f"param_groups[{gi}] follows the schedule {sched!r}, but a torch LRScheduler was attached to this "
                f"{self._rule} (the group has 'initial_lr'); its writes would override the schedule. {fix}"
            )
        lr, ours = group["lr"], self._published[gi][0]
        if (
            (not self._plateau_looked and _plateau_refs() != self._plateaus_at)
            or (lr is not ours and _lowered(lr, ours))
        ) and self._plateau():
            raise RuntimeError(
                f"param_groups[{gi}] follows the schedule {sched!r}, but a torch ReduceLROnPlateau holds this "
                f"{self._rule}; the schedule would override each lr it reduces after one update. {fix}"
            )
        self._plateau_looked = True
        self._published[gi] = self._current(group)

    def _plateau(self) -> bool:
        """True when a ``ReduceLROnPlateau`` holds this optimizer.

        It sets no ``initial_lr`` and wraps no ``step``, so only the objects that refer to the
        optimizer show it: the scheduler, or its attribute dict once Python made one
        (``state_dict()`` reads ``__dict__``). A look scans the collector's objects (tens of
        milliseconds in a large process), so ``_check_followed`` looks only when one may be
        there. A scheduler left in uncollected garbage by an earlier run does not count.
        """
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau

        def holds(r) -> bool:
            if isinstance(r, plateau):
                return getattr(r, "optimizer", None) is self
            return type(r) is dict and r.get("optimizer") is self and "min_lrs" in r and "num_bad_epochs" in r

        if not any(holds(r) for r in gc.get_referrers(self)):
            return False
        gc.collect()
        return any(holds(r) for r in gc.get_referrers(self))

    def get_last_lr(self) -> list:
        """Each group's current lr: the one its next update uses (torch's scheduler convention)."""
        return [group["lr"] for group in self.param_groups]

    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        """A torch ``LRScheduler`` that leaves the lr to this optimizer's schedules.

        For APIs that insist on a scheduler object next to the optimizer (transformers'
        ``Trainer(optimizers=(opt, opt.scheduler()))``, Lightning's ``lr_scheduler``): its
        ``step()`` writes back the values the groups already show, and ``get_last_lr()``
        reports them, so loggers see the lr that is applied. Any other torch scheduler on a
        group with a schedule is refused at the next step (see ``_check_followed``).
        """
        return FollowGroups(self)

    # ------------------------------------------------------------------ zero_grad
    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch's. A flat group zeroes its bound gradients in one call."""
        if torch.compiler.is_compiling():
            # The traced form touches no param_groups (see the custom op above).
            for p in self._all_params:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.zero_()
            return
        for gi, group in enumerate(self.param_groups):
            flat = self._flat.get(gi)
            if flat is not None and not set_to_none:
                flat.grad.zero_()
            for pi, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                if set_to_none:
                    p.grad = None
                elif flat is None or not flat.bound(pi, g):
                    if g.grad_fn is not None:
                        g.detach_()
                    else:
                        g.requires_grad_(False)
                    g.zero_()

    # ------------------------------------------------------------------ the step
    def step(self, closure=None):
        """One update of every group; returns the closure's loss when one is given.

        Under ``torch.compile`` the update is one opaque call (``clrfast::fused_step``), so a
        moving schedule never recompiles the graph around it.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if torch.compiler.is_compiling():
            params = self._stepped_params()
            torch.ops.clrfast.fused_step(params, [p.grad for p in params], self._handle)
        else:
            self._eager_step()
        return loss

    def _stepped_params(self) -> list:
        """The parameters a step reads, in group order: those with a gradient (a compiled step's inputs)."""
        return [p for p in self._all_params if p.grad is not None]

    @torch.no_grad()
    def _eager_step(self) -> None:
        if self._is_state_init_step():
            self._init_state_only()
            return
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and found_inf.device.type == "cpu" and float(found_inf) != 0.0:
            return
        # Validate every group, then mutate: nothing after the plans raises on input.
        try:
            for gi, g in enumerate(self.param_groups):
                self._check_followed(gi, g)
            hypers = [self._step_hyper(gi, g) for gi, g in enumerate(self.param_groups)]
            # GradScaler's fused path writes the unscaled gradients back, and so do rules that leave
            # their final gradient in p.grad: then they are written memory
            written = grad_scale is not None or self._writes_grads
            plans = [self._plan(gi, g, h, written) for gi, (g, h) in enumerate(zip(self.param_groups, hypers))]
            for gi, (group, plan) in enumerate(zip(self.param_groups, plans)):
                if plan is not None and plan.device.type == "cuda":
                    self._check_cuda_group(gi, group)
                    if plan.slow:
                        pi = plan.slow[0][0]
                        raise ValueError(
                            f"{where(gi, pi)} is a CUDA tensor the kernel cannot walk as one dense run (transposed, "
                            "or a state tensor of another dtype or layout); the CUDA step has no per-tensor "
                            "fallback: make it contiguous (p.data = p.data.contiguous()) before the step"
                        )
        except Exception:
            self._forget_plans()  # plans built for this step carry changes it never made
            raise
        inv_scale = None
        if grad_scale is not None and any(p is not None and p.device.type == "cpu" for p in plans):
            inv_scale = float(grad_scale.double().reciprocal().float())
        try:
            for gi, (group, hyper, plan) in enumerate(zip(self.param_groups, hypers, plans)):
                self._commit(gi, group, hyper, plan, inv_scale, grad_scale, found_inf)
        finally:
            for plan in plans:
                if plan is not None and plan.check is not None:
                    plan.check.release()  # this step's gradients are the caller's again

    def _commit(self, gi: int, group, hyper, plan: Plan | None, inv_scale, grad_scale, found_inf) -> None:
        """Applies one validated group's update and advances its clock."""
        group["step"] = hyper["step"]  # the validated count: a clock read back as 3.0 advances as 3
        if plan is None:
            self._advance(gi, group)
            return
        for action in plan.deferred:
            action()
        plan.deferred = []
        if plan.device.type == "cuda":
            self._cuda_step(gi, group, plan, grad_scale, found_inf)
            if plan.check is None and plan.cacheable:
                self._arm(plan)
            return
        values = None
        if len(plan.table):
            values = self._kernel(plan.table, hyper, inv_scale, self._next_values(group, hyper["step"] + 1))
        if plan.slow:
            self._reference(group, plan.slow, hyper, inv_scale)
        if self._required(hyper):
            self._initialised(plan)
        if plan.check is None and plan.cacheable:
            self._arm(plan)
        self._advance(gi, group, values)

    def _initialised(self, plan: Plan) -> None:
        """The kernel wrote the state of the rows that had none: they hold history from now on."""
        if not plan.fresh:
            return
        ran = plan.fresh if plan.check is None else [r for r in plan.fresh if plan.check.emitted[r]]
        for r in ran:
            plan.template[r, self._first_col] = 0
            if plan.check is not None:
                plan.check.set(r, self._first_col, 0)
            self._fresh.discard(self._state_of(plan.owners[r], self._state_keys[0]))
        plan.fresh = [r for r in plan.fresh if r not in set(ran)]

    def _forget_plans(self) -> None:
        self._plans.clear()

    def _num_threads(self) -> int:
        n = self._threads if self._threads is not None else torch.get_num_threads()
        # torch's pool sleeps while this call runs; never ask for more than the cores.
        return max(1, min(n, _core.hardware_threads()))

    # ------------------------------------------------------------------ the rule's hooks
    # What every rule implements (RuleOptimizer implements them from a declaration).
    def _check_hyper(self, label: str, group: dict) -> None:
        """Checks (and normalises in place) a group's hyperparameters; ``label`` names the group in errors."""
        raise NotImplementedError

    def _held_momentum(self, group) -> float:
        """The group's constant momentum (or beta1), which it keeps where its schedule defines none."""
        raise NotImplementedError

    def _publish_values(self, group, lr: float, momentum: float) -> None:
        """Writes the values of the group's next update (lr, momentum or beta1) into it."""
        raise NotImplementedError

    def _step_hyper(self, gi: int, group) -> dict:
        """Every value one update of the group applies, checked; raises before anything changes."""
        raise NotImplementedError

    def _required(self, hyper: dict) -> tuple:
        """The state keys an update with these values reads and writes."""
        raise NotImplementedError

    def _new_state(self, p, keys) -> dict:
        """The fresh state of parameter ``p`` for ``keys`` (torch's initial values)."""
        raise NotImplementedError

    def _row(self, p, lp, lg, locs: dict, first: int) -> list | None:
        """The kernel row of a parameter (local tensors ``lp``, ``lg``, state ``locs``); None: torch's code."""
        raise NotImplementedError

    def _kernel(self, table, hyper: dict, inv_scale, publish: tuple | None) -> tuple | None:
        """Runs the CPU kernel over ``table`` (``inv_scale``: GradScaler's, None without it).

        ``publish`` (from ``_next_values``): the same call returns the values of the next update.
        """
        raise NotImplementedError

    def _reference(self, group, slow: list, hyper: dict, inv_scale) -> None:
        """The reference implementation's update of the ``(index, parameter)`` pairs the kernel cannot take."""
        raise NotImplementedError

    def _check_cuda_group(self, gi: int, group) -> None:
        """Raises unless this rule can step the CUDA group ``gi``."""
        raise ValueError(f"param_groups[{gi}] is on CUDA: {self._rule} has no CUDA step")

    def _cuda_step(self, gi: int, group, plan: Plan, grad_scale, found_inf) -> None:
        raise NotImplementedError  # only rules whose _check_cuda_group lets a CUDA group through

    # ------------------------------------------------------------------ state
    def _check_state(self, gi: int, pi: int, p, st: dict) -> None:
        """Checks a parameter's state beyond its per-element tensors (a rule's scalars); raises when invalid."""

    def _state_of(self, p, key: str):
        st = self.state.get(p)
        return None if st is None else st.get(key)

    def _is_fresh(self, p) -> bool:
        return self._first_col is not None and self._state_of(p, self._state_keys[0]) in self._fresh

    def _missing(self, p, required) -> list:
        st = self.state.get(p)
        return [k for k in required if st is None or st.get(k) is None]

    def _create_state(self, p, keys, views=None) -> None:
        """Gives ``p`` its missing state (flat groups: views of the flat storage, zeroed)."""
        new = self._new_state(p, keys)
        if views is not None:
            for k in self._state_keys:
                if k in new:
                    views[k].copy_(new[k])  # the rule's initial values (zeros, or a copy of p)
                    new[k] = views[k]
        self.state[p].update(new)

    # ------------------------------------------------------------------ DCP's initialisation step
    def _is_state_init_step(self) -> bool:
        """torch.distributed.checkpoint's ``_init_optim_state`` is calling.

        On an optimizer without state it gives every parameter a zero gradient, sets every
        group's lr to 0 and calls ``step()`` to make the state exist, expecting no weight to
        move. Recognised by that caller on the stack (a warm-up from lr 0 on an all-zero first
        batch looks the same otherwise, and must be torch's first update), the call creates the
        state, marked as holding no history, and changes nothing else.
        """
        if self.state or not self.param_groups or not _called_from_dcp_init():
            return False
        for gi, group in enumerate(self.param_groups):
            lr = group.get("lr")
            if lr is self._published[gi][0] or not isinstance(lr, (float, int, torch.Tensor)) or float(lr) != 0.0:
                return False
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.requires_grad]
        return all(g is not None and not local(g).any() for g in grads)

    def _init_state_only(self) -> None:
        for gi, group in enumerate(self.param_groups):
            required = self._required(self._step_hyper(gi, group))
            flat = self._flat.get(gi)
            for pi, p in enumerate(group["params"]):
                if p.grad is None or not required:
                    continue
                views = flat.state_views(pi, p) if flat is not None else None
                self._create_state(p, self._missing(p, required), views)
                if self._first_col is not None:
                    self._fresh.add(self._state_of(p, self._state_keys[0]))
        self._plans.clear()

    # ------------------------------------------------------------------ plans
    def _plan(self, gi: int, group, hyper, grads_written: bool = False) -> Plan | None:
        """The checked plan of this step: the cached one when its check passes, else a new one."""
        required = self._required(hyper)
        params = group["params"]
        plan = self._plans.get(gi)
        if plan is not None and plan.check is not None and not plan.missing.intersection(required):
            n = plan.check.refresh(self.state, params, grads_written)
            if n >= 0 and plan.device.type == "cpu":
                plan.table = plan.check.out[:n]
                return plan
            # A CUDA table lives on the device, where the kernel also clears the first-update
            # flags: the plan is kept only while the table it uploaded is still the right one.
            if n >= 0 and plan.cuda is not None and np.array_equal(plan.check.out[:n], plan.table):
                return plan
        plan = self._build_plan(gi, group, required, grads_written)
        self._plans[gi] = plan
        return plan

    def _checked_state(self, gi: int, pi: int, p, lp) -> tuple[dict, bool, list]:
        """The local state tensors of p (checked), whether the kernel can take them, and their names."""
        st = self.state.get(p) or {}
        self._check_state(gi, pi, p, st)
        locs, named, fused = {}, [], True
        for k in self._state_keys:
            v = st.get(k)
            if v is None:
                continue
            check_state_tensor(gi, pi, k, p, v)
            lv = local(v)
            locs[k] = lv
            named.append((f"state[{k!r}] of {where(gi, pi)}", lv))
            fused = fused and dense_like(lp, lv) and lv.dtype == lp.dtype and lv.device == lp.device
        return locs, fused, named

    def _build_plan(self, gi: int, group, required, grads_written: bool = False) -> Plan | None:
        """Checks every tensor of the group and lays out the kernel rows (the full check)."""
        params = group["params"]
        grads: list = []
        rows: list = []
        owners: list = []
        slow: list = []
        named: list = []
        read: list = []
        keep: list = []
        missing: list = []
        devices = set()
        cacheable = True
        key = self._state_keys[0]
        for pi, p in enumerate(params):
            g = p.grad
            grads.append(g)
            if g is None:
                continue
            lp = check_param(gi, pi, p, self._rule)
            lg = check_grad(gi, pi, p, lp, g)
            cacheable = cacheable and not is_dtensor(p)  # FSDP2 hands over new gradient objects each step anyway
            devices.add(lp.device)
            named.append((where(gi, pi), lp))
            read.append((f"the gradient of {where(gi, pi)}", lg))
            locs, fused, named_state = self._checked_state(gi, pi, p, lp)
            named += named_state
            first = self._state_of(p, key)
            fused = fused and dense_like(lp, lg)
            row = self._row(p, lp, lg, locs, int(first is None or self._is_fresh(p))) if fused else None
            need = self._missing(p, required)
            if need:
                missing.append((None if row is None else len(rows), pi, p, lp, lg, need))
            if row is None:
                slow.append((pi, p))
                continue
            rows.append(row)
            owners.append(p)
            keep += [lp, lg, *locs.values()]
        if not rows and not slow:
            return None
        if len(devices) > 1:
            raise ValueError(
                f"param_groups[{gi}]: a {self._rule} param group must live on one device, got "
                f"{sorted(map(str, devices))}"
            )
        # gradients are only read, so two parameters may share one, unless the step writes them back
        if grads_written:
            named, read = named + read, []
        check_no_overlap(named, read)
        plan = Plan(next(iter(devices)))
        plan.params, plan.grads, plan.owners, plan.slow, plan.keep = params, grads, owners, slow, keep
        plan.template = np.array(rows, dtype=np.int64).reshape(-1, self._cols)
        plan.table = plan.template
        plan.cacheable = cacheable
        if self._first_col is not None:
            plan.fresh = [r for r, row in enumerate(rows) if row[self._first_col]]
        plan.missing = self._lacking(owners)
        if missing:
            plan.deferred.append(lambda: self._make_missing(gi, plan, missing))
        return plan

    def _make_missing(self, gi: int, plan: Plan, missing) -> None:
        """Creates the state the rows lack and points their rows at it (runs when the step commits)."""
        flat = self._flat.get(gi)
        for row, pi, p, lp, lg, keys in missing:
            views = flat.state_views(pi, p) if flat is not None and row is not None else None
            self._create_state(p, keys, views)
            if row is None:  # torch's code updates it: mark a first-update buffer as holding no history
                if self._first_col is not None:
                    self._fresh.add(self._state_of(p, self._state_keys[0]))
                continue
            locs = {k: local(v) for k, v in self.state[p].items() if k in self._state_keys}
            plan.template[row] = self._row(
                p, lp, lg, locs, int(plan.template[row, self._first_col]) if (self._first_col is not None) else 0
            )
            plan.keep += list(locs.values())
        plan.missing = self._lacking(plan.owners)

    def _lacking(self, owners) -> set:
        """The state keys that some parameter of the rows lacks."""
        keys = self._state_keys + self._scalar_keys
        return {k for p in owners for k in self._missing(p, keys)}

    def _arm(self, plan: Plan) -> None:
        """Gives a plan whose first step committed its per-step check (``_core.StepCheck``).

        Everything the check compares is read here, after the step: the state the step
        made, the gradients it used, the parameters' addresses and layouts.
        """
        keys = self._state_keys + self._scalar_keys
        params = list(plan.params)
        row_of = {id(p): r for r, p in enumerate(plan.owners)}
        slow = {id(p) for _, p in plan.slow}
        spec = np.zeros((len(params), _SPEC_BUFS + len(keys)), dtype=np.int64)
        shapes, strides, grad_strides, dtypes, sdicts, bufs, written = [], [], [], [], [], [], []
        for pi, p in enumerate(params):
            g = plan.grads[pi]
            st = self.state.get(p)
            row = row_of.get(id(p), _SLOW if id(p) in slow else _NO_GRAD)
            flags = _EXACT
            if row >= 0:
                flags = _CONTIGUOUS if p.is_contiguous() else _STRIDED
            if st is not None:
                flags |= _HAS_STATE
            spec[pi, :_SPEC_BUFS] = (p.data_ptr(), p.numel(), row, flags, hash(p), p.element_size())
            shapes.append(p.shape)
            strides.append(tuple(p.stride()))
            grad_strides.append(tuple(local(g).stride()) if g is not None else None)
            dtypes.append(p.dtype)
            sdicts.append(st)
            for k, key in enumerate(keys):
                v = None if st is None else st.get(key)
                bufs.append(v)
                if isinstance(v, torch.Tensor):
                    spec[pi, _SPEC_BUFS + k] = v.data_ptr()
                    if row != _NO_GRAD:
                        written.append(extent(v))
            if row != _NO_GRAD:
                written.append(extent(p))
        extents = np.array([w for w in written if w[1] > w[0]], dtype=np.int64).reshape(-1, 2)
        plan.check = _core.StepCheck(
            params,
            spec,
            shapes,
            strides,
            grad_strides,
            dtypes,
            sdicts,
            bufs,
            keys,
            extents,
            plan.template,
            self._grad_col,
            self._n_col,
            list(self._ptr_cols),
            self._merge_runs,
            plan.device.index if plan.device.type == "cuda" else -1,
        )
        plan.keep, plan.grads = [], None  # the check holds what it needs, and no gradient

    # ------------------------------------------------------------------ flat mode
    def _flatten(self, gi: int, group) -> None:
        """Lays the group's parameters, gradients and state out in one storage per kind.

        Parameters of another dtype or device than the first (converted since the group was
        made, as a copy or a resume may find them) keep their own memory: the step follows
        them like list mode, so nothing is cast.
        """
        params = group["params"]
        if not params:
            return
        p0 = params[0]
        fits = [p.dtype == p0.dtype and p.device == p0.device and not is_dtensor(p) for p in params]
        total = sum(p.numel() for p, ok in zip(params, fits) if ok)
        fp = torch.empty(total, dtype=p0.dtype, device=p0.device)
        fg = torch.zeros_like(fp)
        fstate = {k: torch.zeros_like(fp) for k in self._state_keys}
        spans: list[tuple[int, int] | None] = []
        views: dict[str, list] = {k: [] for k in self._state_keys}
        off = 0
        for p, ok in zip(params, fits):
            if not ok:
                spans.append(None)
                for k in self._state_keys:
                    views[k].append(None)
                continue
            n = p.numel()
            fp[off : off + n].copy_(p.detach().reshape(-1))
            g = p.grad
            if g is not None and g.dtype == p.dtype and g.device == p.device and g.shape == p.shape:
                gv = fg[off : off + n].view(p.shape)
                gv.copy_(g)
                p.grad = gv
            p.data = fp[off : off + n].view(p.shape)
            spans.append((off, n))
            for k in self._state_keys:
                v = fstate[k][off : off + n].view(p.shape)
                views[k].append(v)
                old = self._state_of(p, k)
                if (
                    isinstance(old, torch.Tensor)
                    and old.dtype == v.dtype
                    and old.device == v.device
                    and (old.shape == v.shape)
                ):
                    v.copy_(old)
                    self.state[p][k] = v
            off += n
        self._flat[gi] = Flat(fp, fg, fstate, spans, views)

    # ------------------------------------------------------------------ state dict
    def _torch_call(self, hooks, method, *args):
        """Calls one of torch's methods with this optimizer's ``hooks`` set aside: clrfast runs them around
        its own work, so that they see (and may replace) what the caller gets, as with torch."""
        names = [f"_optimizer_{kind}_hooks" for kind in hooks]
        saved = [getattr(self, name) for name in names]
        for name in names:
            setattr(self, name, OrderedDict())
        try:
            return method(*args)
        finally:
            for name, value in zip(names, saved):
                setattr(self, name, value)

    def state_dict(self):
        """torch's layout; schedules are stored as dicts (JSON-safe), so torch and clrfast can load it.

        The state-dict hooks run as torch runs them: the pre-hooks first, the post-hooks on the
        finished dict (what one returns is what the caller gets).
        """
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        self._sync_cuda()
        sd = self._torch_call(("state_dict_pre", "state_dict_post"), super().state_dict)
        for g, live in zip(sd["param_groups"], self.param_groups):
            g.pop("_cuda", None)
            if isinstance(g.get("schedule"), Schedule):
                g["schedule"] = g["schedule"].to_dict()
            if self._first_col is not None:
                # Buffers made by a state-initialising step hold no history; saved with the state so a
                # resume from such a checkpoint still makes the first update torch's first update.
                g[_FRESH] = [pi for pi, p in enumerate(live["params"]) if self._is_fresh(p)]
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, sd)
            if result is not None:
                sd = result
        return sd

    def load_state_dict(self, state_dict) -> None:
        """Loads clrfast's or torch's state dicts, all checked before anything changes.

        Keys a torch group lacks (``schedule``, ``step``) keep their current values; flags an
        older torch did not save (``maximize``, ...) read as False, as torch reads them. The saved
        lr (and momentum or betas) is what the next update applies, as with torch; a schedule
        takes over from the update after.

        The load hooks run as torch runs them: the pre-hooks on a shallow copy of the dict (what
        one returns is what is checked and loaded), the post-hooks once everything is in place.
        A per-parameter scalar saved as a number (older torch saved Adam's ``step`` so) becomes
        the tensor torch's ``__setstate__`` makes of it.
        """
        if not isinstance(state_dict, dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)):
            raise ValueError(f"state_dict['param_groups'] must be a list of groups, got {type(saved_groups).__name__}")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has a different number of parameter groups ({len(saved_groups)} "
                f"saved, {len(self.param_groups)} in the optimizer)"
            )
        groups: list = []
        id_map: dict = {}
        for gi, (saved, current) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, dict) or "params" not in saved:
                raise ValueError(f"state_dict['param_groups'][{gi}] must be a dict with 'params'")
            if len(saved["params"]) != len(current["params"]):
                raise ValueError(
                    f"loaded state dict contains a parameter group that doesn't match the size of optimizer's group "
                    f"(group {gi}: {len(saved['params'])} vs {len(current['params'])} parameters)"
                )
            groups.append(self._loaded_group(gi, dict(saved), current))
            id_map.update(zip(saved["params"], current["params"]))
        state = state_dict["state"]
        if not isinstance(state, dict):
            raise ValueError("state_dict['state'] must be a dict")
        state = {k: self._upgraded(v) for k, v in state.items()}
        for k, v in state.items():
            if k not in id_map:
                raise ValueError(f"state_dict['state'] has an entry for unknown parameter id {k!r}")
            p = id_map[k]
            gi, pi = next(
                (gi, pi) for gi, g in enumerate(self.param_groups) for pi, q in enumerate(g["params"]) if q is p
            )
            if not isinstance(v, dict):
                raise ValueError(f"state_dict['state'][{k!r}] must be a dict, got {type(v).__name__}")
            self._check_state(gi, pi, p, v)
            for key in self._state_keys:
                if v.get(key) is not None:
                    check_state_tensor(gi, pi, key, p, v[key])
        self._sync_cuda()
        sd = dict(state_dict)
        sd["param_groups"] = groups
        sd["state"] = state
        self._torch_call(("load_state_dict_pre", "load_state_dict_post"), super().load_state_dict, sd)
        self._plans.clear()
        self._fresh = IdSet()
        for gi, group in enumerate(self.param_groups):
            group.pop("_cuda", None)
            fresh = group.pop(_FRESH, [])
            flat = self._flat.get(gi)
            if flat is not None:
                for key in self._state_keys:  # loaded state goes back into the flat storage
                    for pi, (p, view) in enumerate(zip(group["params"], flat.views[key])):
                        value = self._state_of(p, key)
                        if (
                            isinstance(value, torch.Tensor)
                            and value is not view
                            and flat.owns(pi, p)
                            and value.dtype == view.dtype
                            and value.shape == view.shape
                        ):
                            view.copy_(value)
                            self.state[p][key] = view
            for pi in fresh:
                value = self._state_of(group["params"][pi], self._state_keys[0])
                if value is not None:
                    self._fresh.add(value)
        # The saved lr/momentum are what the next update uses (a value written before saving
        # included), as torch's load keeps them; the schedule takes over after that update.
        self._published = [self._current(g) for g in self.param_groups]
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _upgraded(self, saved):
        """A parameter's saved state, each scalar saved as a number made the tensor torch's Adam makes of it."""
        if not isinstance(saved, dict):
            return saved
        old = [
            k
            for k in self._scalar_keys
            if isinstance(saved.get(k), numbers.Real) and not isinstance(saved.get(k), bool)
        ]
        if not old:
            return saved
        saved = dict(saved)  # the caller's dict stays as it was
        for k in old:
            saved[k] = torch.tensor(float(saved[k]), dtype=_get_scalar_dtype())
        return saved

    def _loaded_group(self, gi: int, saved: dict, current: dict) -> dict:
        """A saved group as it will be stored, checked; keys it lacks (torch's groups) keep their values."""
        saved.pop("_cuda", None)
        for key in self._later_flags:
            saved.setdefault(key, False)
        for key, value in current.items():
            if key != "params":
                saved.setdefault(key, value)
        saved["flat"] = current["flat"]  # a storage layout of this optimizer, not state
        fresh = saved.get(_FRESH, [])
        if not isinstance(fresh, (list, tuple)) or any(
            isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(current["params"]) for i in fresh
        ):
            raise ValueError(f"state_dict['param_groups'][{gi}][{_FRESH!r}] must list parameter indices, got {fresh!r}")
        saved[_FRESH] = list(fresh)
        if isinstance(saved["schedule"], dict):
            try:
                saved["schedule"] = from_dict(saved["schedule"])
            except (TypeError, ValueError, KeyError) as e:
                raise ValueError(f"state_dict['param_groups'][{gi}]['schedule']: {e}") from None
        if saved["schedule"] is not None and "initial_lr" not in current:
            # a torch scheduler's bookkeeping from the saving optimizer: the schedule sets the lr here
            saved.pop("initial_lr", None)
        legacy = saved.pop("base_momentum", None)  # clrfast 0.1 kept the constant momentum apart
        if legacy is not None and saved["schedule"] is not None and not saved["schedule"].has_momentum:
            saved["momentum"] = legacy
        saved["step"] = clock(f"state_dict['param_groups'][{gi}]['step']", saved["step"])
        self._check_hyper(f"state_dict['param_groups'][{gi}]", saved)
        return saved

    # ------------------------------------------------------------------ copy and pickle
    def __getstate__(self):
        self._sync_cuda()
        state = super().__getstate__()
        state["_threads"] = self._threads  # torch keeps only defaults, state and param_groups
        state["_fused_unscale"] = self.fused_unscale
        state["_flat_groups"] = sorted(self._flat)
        state["_fresh_ids"] = [
            (gi, pi) for gi, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"]) if self._is_fresh(p)
        ]
        return state

    def __setstate__(self, state):
        if "defaults" not in state:
            # torch's load_state_dict hands over the new state and param_groups only: the layout
            # (flat storage, threads, handle) stays this optimizer's
            super().__setstate__(state)
            return
        flat = state.pop("_flat_groups", [])
        fresh = state.pop("_fresh_ids", [])
        self._threads = state.pop("_threads", None)
        if state.pop("_fused_unscale", False):
            self.fused_unscale = True
        self._constructing = False
        super().__setstate__(state)
        self._register()
        self._all_params = [p for g in self.param_groups for p in g["params"]]
        self._plans = {}
        self._flat = {}
        self._fresh = IdSet()
        # A copied Parameter owns a copy of its values, not a view of the copied flat storage:
        # lay the group out again (values, gradients and state move with it).
        for gi in flat:
            self._flatten(gi, self.param_groups[gi])
        for gi, pi in fresh:
            p = self.param_groups[gi]["params"][pi]
            self._fresh.add(self.state[p][self._state_keys[0]])
        for group in self.param_groups:
            group.pop("_cuda", None)
        self._published = [self._current(g) for g in self.param_groups]

    # ------------------------------------------------------------------ CUDA (subclass hooks)
    def _sync_cuda(self) -> None:
        pass
