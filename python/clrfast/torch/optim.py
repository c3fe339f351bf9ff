"""``CLRSGD``: SGD with a clrfast schedule, applied by one fused C++ (or CUDA) call per step."""

from __future__ import annotations

import numpy as np
import torch

from .. import _core
from .. import _validate as check
from ..schedules import Schedule, from_dict

__all__ = ["CLRSGD"]

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
_COLS = _core.sgd_segment_cols  # p, g, buf, n, dtype, first
_GROUP_KEYS = ("schedule", "step", "base_momentum", "flat")


def _layout_ok(p: torch.Tensor, g: torch.Tensor) -> bool:
    """p and g can be walked as the same flat run of memory."""
    if p.is_contiguous() and g.is_contiguous():
        return True
    return p.dim() == 4 and p.stride() == g.stride() and p.is_contiguous(memory_format=torch.channels_last)


def _use_counts(flat) -> tuple | None:
    """Reference counts of the flat parameter and gradient storages (None where torch lacks the probe)."""
    probe = getattr(torch._C, "_storage_Use_Count", None)
    if probe is None:
        return None
    return (probe(flat["param"].untyped_storage()._cdata), probe(flat["grad"].untyped_storage()._cdata))


class _Plan:
    """Cached segment table of one param group.

    Valid while every parameter keeps the ``.grad`` object and the ``.data`` address it was
    built from (``ptrs``; 0 where a parameter has no gradient); rebuilt otherwise.
    """

    __slots__ = ("params", "grads", "ptrs", "table", "first", "cuda")

    def __init__(self, params, grads, ptrs, table, first, cuda=None):
        self.params, self.grads, self.ptrs, self.table, self.first, self.cuda = params, grads, ptrs, table, first, cuda


class CLRSGD(torch.optim.Optimizer):
    r"""SGD whose learning rate (and momentum) follow a clrfast schedule, fused into one step.

    Replaces ``torch.optim.SGD`` + a scheduler. At the k-th applied update (k = 0
    first) a group uses ``lr = schedule.lr(k)`` and ``m = schedule.momentum(k)`` when
    the schedule defines a momentum, else the constant ``momentum``; then, per element,
    with torch's order of operations::

        g = -grad if maximize else grad
        g = g + weight_decay * p
        buf = g (first step)  or  buf = m * buf + (1 - dampening) * g
        g = g + m * buf if nesterov else buf
        p = p - lr * g

    Numerics: float32 and float64 trajectories are bit-identical to
    ``torch.optim.SGD(foreach=False)`` (torch's CPU default) and ``foreach=True``,
    which compute each ``a + alpha*b`` as one fused multiply-add. ``fused=True``
    differs from those two in the last bit of the momentum buffer on each tensor's
    scalar tail, so it is not the reference. bfloat16 and float16 parameters are
    loaded to float32, updated in float32 and rounded once on store (the precision
    rule of torch's fused kernel).

    ``flat=True`` copies each group's parameters, gradients and momentum buffers into
    three contiguous buffers (parameters become views), so a step is a single segment
    whatever the number of tensors. Replaced gradients (``zero_grad(set_to_none=True)``
    from a module, ``p.grad = t``) are detected and copied back into the flat buffer;
    :meth:`zero_grad` of the optimizer keeps them bound and zeroes them in place.

    Pointers are cached between steps and read again whenever a parameter's ``.grad``
    object or ``.data`` storage changes, so model conversions after construction
    (``model.half()``, ``model.to(...)``) are followed in list mode and are a clear error
    in flat mode.

    The step clock advances only when an update is applied, so a step skipped by
    ``torch.amp.GradScaler`` does not shift the schedule. ``threads`` defaults to
    ``torch.get_num_threads()``.
    """

    _step_supports_amp_scaling = True

    def __init__(
        self,
        params,
        schedule: Schedule,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
        *,
        flat: bool = False,
        threads: int | None = None,
    ):
        _check_schedule(schedule)
        momentum = check.real("momentum", momentum, min=0.0)
        dampening = check.real("dampening", dampening)
        weight_decay = check.real("weight_decay", weight_decay, min=0.0)
        if nesterov and (momentum <= 0 and not schedule.has_momentum or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if threads is not None:
            threads = check.integer("threads", threads, min=1)
        self._threads = threads
        defaults = dict(
            schedule=schedule,
            lr=schedule.lr(0),
            momentum=momentum,
            base_momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=bool(nesterov),
            maximize=bool(maximize),
            step=0,
            flat=bool(flat),
        )
        self._plans: dict = {}
        self._flat: dict = {}
        super().__init__(params, defaults)
        for group in self.param_groups:
            _check_schedule(group["schedule"])
            group["lr"] = group["schedule"].lr(group["step"])
            m = group["schedule"].momentum(group["step"])
            if m is not None:
                group["momentum"] = m
            if group["flat"]:
                self._flatten(group)

    # ------------------------------------------------------------------ public
    def get_last_lr(self) -> list:
        """The learning rate of each group at the last applied step (the first step's before any)."""
        return [group["lr"] for group in self.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch's; flat groups zero their gradient buffer in place and stay bound."""
        for i, group in enumerate(self.param_groups):
            flat = self._flat.get(i)
            if flat is not None:
                self._flat_sync(group, flat, fill_missing=True)
                flat["grad"].zero_()
        rest = [g for i, g in enumerate(self.param_groups) if i not in self._flat]
        for group in rest:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        if p.grad.grad_fn is not None:
                            p.grad.detach_()
                        else:
                            p.grad.requires_grad_(False)
                        p.grad.zero_()

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every group; returns the closure's loss when one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        cuda_groups = []
        cpu_skip = found_inf is not None and found_inf.device.type == "cpu" and float(found_inf) != 0.0
        if cpu_skip:
            return loss
        for group in self.param_groups:
            sched = group["schedule"]
            t = group["step"]
            sched._check_max(t)  # torch-style ValueError before anything changes
        for i, group in enumerate(self.param_groups):
            plan = self._plan(i, group)
            if plan is None:
                group["step"] += 1
                continue
            if plan.cuda is not None:
                cuda_groups.append((group, plan))
                continue
            inv_scale, store = 1.0, False
            if grad_scale is not None:
                inv_scale = float(grad_scale.double().reciprocal().float())
                store = True
            lr, mom = _core.sgd_step(
                group["schedule"]._core,
                group["step"],
                plan.table,
                group["base_momentum"],
                group["dampening"],
                group["weight_decay"],
                group["nesterov"],
                group["maximize"],
                inv_scale,
                store,
                self._num_threads(),
            )
            self._after_step(group, plan, lr, mom)
        for group, plan in cuda_groups:
            self._cuda_step(group, plan, grad_scale, found_inf)
        return loss

    # -------------------------------------------------------------- state dict
    def state_dict(self):
        """torch's layout (``momentum_buffer`` per parameter); schedules are stored as dicts."""
        self._sync_cuda_steps()
        sd = super().state_dict()
        for g in sd["param_groups"]:
            g.pop("_cuda", None)
            if isinstance(g.get("schedule"), Schedule):
                g["schedule"] = g["schedule"].to_dict()
        return sd

    def load_state_dict(self, state_dict) -> None:
        """Accepts CLRSGD's and ``torch.optim.SGD``'s state dicts (momentum buffers carry over).

        Keys a torch SGD group lacks (schedule, step) keep their current values.
        """
        state_dict = dict(state_dict)
        groups = []
        for saved, current in zip(state_dict["param_groups"], self.param_groups):
            saved = dict(saved)
            for key in _GROUP_KEYS:
                if key not in saved:
                    saved[key] = current[key]
            if "base_momentum" not in state_dict["param_groups"][0] and "momentum" in saved:
                saved["base_momentum"] = saved["momentum"]
            if isinstance(saved["schedule"], dict):
                saved["schedule"] = from_dict(saved["schedule"])
            _check_schedule(saved["schedule"])
            saved["step"] = check.integer("step", saved["step"], min=0)
            if saved["flat"] != current["flat"]:
                saved["flat"] = current["flat"]
            groups.append(saved)
        groups.extend(state_dict["param_groups"][len(groups):])
        state_dict["param_groups"] = groups
        super().load_state_dict(state_dict)
        self._plans.clear()
        for i, group in enumerate(self.param_groups):
            flat = self._flat.get(i)
            if flat is None:
                continue
            for p, v in zip(group["params"], flat["bviews"]):
                buf = self.state[p].get("momentum_buffer")
                if buf is not None and buf is not v:
                    v.copy_(buf)
                    self.state[p]["momentum_buffer"] = v
        for group in self.param_groups:
            group.pop("_cuda", None)

    # ---------------------------------------------------------------- internal
    def _num_threads(self) -> int:
        n = self._threads if self._threads is not None else torch.get_num_threads()
        # torch's pool sleeps while this call runs; never ask for more than the cores.
        return max(1, min(n, _core.hardware_threads()))

    def _after_step(self, group, plan, lr, mom) -> None:
        if plan.first:
            plan.table[:, 5] = 0
            plan.first = False
        group["step"] += 1
        group["lr"] = lr
        group["momentum"] = mom

    def _plan(self, index, group) -> _Plan | None:
        params = group["params"]
        flat = self._flat.get(index)
        if flat is not None:
            plan = self._flat_plan(index, group, flat)
            if plan is not None:
                return plan
        plan = self._plans.get(index)
        if plan is not None and plan.params is params and _core.plan_bound(params, plan.grads, plan.ptrs):
            return plan
        plan = self._build_plan(group)
        self._plans[index] = plan
        return plan

    def _flat_plan(self, index, group, flat) -> _Plan | None:
        params = group["params"]
        if not self._flat_sync(group, flat):
            return None  # a parameter without a gradient is skipped: per-tensor table
        plan = flat.get("plan")
        if plan is not None:
            return plan
        mom_needed = group["momentum"] != 0 or group["schedule"].has_momentum
        first = False
        if mom_needed:
            for p, v in zip(params, flat["bviews"]):
                st = self.state[p]
                if st.get("momentum_buffer") is not v:
                    first = True
            if first:
                # Buffers already present are kept; the first step initialises all
                # only when none exists, as torch does per parameter.
                have = [self.state[p].get("momentum_buffer") is not None for p in params]
                if any(have):
                    return None  # mixed: handled per tensor
                for p, v in zip(params, flat["bviews"]):
                    self.state[p]["momentum_buffer"] = v
        table = np.zeros((1, _COLS), dtype=np.int64)
        fp, fg, fb = flat["param"], flat["grad"], flat["buf"]
        table[0] = (fp.data_ptr(), fg.data_ptr(), fb.data_ptr() if mom_needed else 0, fp.numel(),
                    _DTYPE_CODES[fp.dtype], int(first))
        plan = _Plan(params, None, None, table, first)
        flat["plan"] = plan
        return plan

    def _flat_sync(self, group, flat, fill_missing: bool = False) -> bool:
        """Keep every parameter and gradient of a flat group inside the flat buffers.

        Returns False when some parameter has no gradient (and ``fill_missing`` is off).
        The common case costs O(1), whatever the number of tensors: the reference counts of
        the two buffers' storages are unchanged since the last full check, so no parameter's
        ``.data`` and no gradient left them (replacing either drops a reference: the flat
        group keeps no views of its own). Otherwise every tensor is checked: a gradient
        stored elsewhere (``zero_grad(set_to_none=True)`` then backward, ``p.grad = t``) is
        copied in and re-bound; a parameter stored elsewhere (``model.half()``, ``.to()``)
        is an error, since the flat buffer no longer holds it.
        """
        counts = _use_counts(flat)
        if counts is not None and counts == flat["counts"]:
            return True
        fp, fg = flat["param"], flat["grad"]
        base_p, base_g, es = fp.data_ptr(), fg.data_ptr(), fg.element_size()
        complete = True
        for i, (p, (off, n)) in enumerate(zip(group["params"], flat["spans"])):
            if n and p.data_ptr() != base_p + off * es:
                raise RuntimeError(
                    f"parameter {i} of a flat CLRSGD group no longer lives in the flat buffer (its .data was "
                    "replaced, e.g. by model.half() or model.to()); build the optimizer after converting the model"
                )
            g = p.grad
            if g is None:
                if fill_missing:
                    p.grad = fg[off:off + n].view(p.shape)
                else:
                    complete = False
                continue
            bound = (g.data_ptr() == base_g + off * es and g.dtype == fg.dtype and g.device == fg.device
                     and g.shape == p.shape and g.is_contiguous())
            if not bound or not n:
                if g.is_sparse:
                    raise ValueError("CLRSGD does not support sparse gradients")
                view = fg[off:off + n].view(p.shape)
                view.copy_(g)
                p.grad = view
        if complete:
            flat["counts"] = _use_counts(flat)
        return complete

    def _build_plan(self, group) -> _Plan | None:
        params = group["params"]
        mom_const = group["base_momentum"]
        sched = group["schedule"]
        _, mom = _core.sgd_hyper(sched._core, group["step"], mom_const)
        use_mom = mom != 0.0
        rows, grads, ptrs, devices = [], [], [], set()
        first_any = False
        for p in params:
            g = p.grad
            grads.append(g)
            ptrs.append(0 if g is None else p.data_ptr())
            if g is None:
                continue
            if g.is_sparse:
                raise ValueError("CLRSGD does not support sparse gradients")
            code = _DTYPE_CODES.get(p.dtype)
            if code is None:
                raise TypeError(f"CLRSGD supports float32, float64, bfloat16 and float16 parameters, got {p.dtype}")
            if g.dtype != p.dtype or g.device != p.device:
                raise ValueError(
                    f"gradient dtype/device ({g.dtype}, {g.device}) differs from its parameter's "
                    f"({p.dtype}, {p.device})"
                )
            if not _layout_ok(p, g):
                raise ValueError(
                    f"CLRSGD needs contiguous parameters and gradients with matching strides, got a parameter of "
                    f"shape {tuple(p.shape)} with strides {p.stride()} and gradient strides {g.stride()}"
                )
            devices.add(p.device)
            buf_ptr, first = 0, 0
            if use_mom:
                st = self.state[p]
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = torch.empty_like(p)
                    first = 1
                    first_any = True
                elif buf.dtype != p.dtype or buf.device != p.device or buf.stride() != p.stride():
                    fixed = torch.empty_like(p)
                    fixed.copy_(buf)
                    buf = fixed
                st["momentum_buffer"] = buf
                buf_ptr = buf.data_ptr()
            rows.append((p.data_ptr(), g.data_ptr(), buf_ptr, p.numel(), code, first))
        if not rows:
            return None
        if len(devices) > 1:
            raise ValueError(f"a CLRSGD param group must live on one device, got {sorted(map(str, devices))}")
        table = np.array(rows, dtype=np.int64).reshape(-1, _COLS)
        device = next(iter(devices))
        cuda = None
        if device.type == "cuda":
            cuda = self._cuda_plan(group, table, device)
        elif device.type != "cpu":
            raise ValueError(f"CLRSGD runs on CPU and CUDA tensors, got device {device}")
        return _Plan(params, grads, np.array(ptrs, dtype=np.int64), table, first_any, cuda)

    def _flatten(self, group) -> None:
        params = group["params"]
        if not params:
            return
        dtypes = {p.dtype for p in params}
        devices = {p.device for p in params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(
                f"flat=True needs one dtype and one device per param group, got {sorted(map(str, dtypes))} "
                f"on {sorted(map(str, devices))}"
            )
        p0 = params[0]
        if p0.dtype not in _DTYPE_CODES:
            raise TypeError(f"CLRSGD supports float32, float64, bfloat16 and float16 parameters, got {p0.dtype}")
        total = sum(p.numel() for p in params)
        fp = torch.empty(total, dtype=p0.dtype, device=p0.device)
        fg = torch.zeros_like(fp)
        fb = torch.zeros_like(fp)
        spans, bviews = [], []
        off = 0
        for p in params:
            n = p.numel()
            fp[off:off + n].copy_(p.detach().reshape(-1))
            gv = fg[off:off + n].view(p.shape)
            bv = fb[off:off + n].view(p.shape)
            if p.grad is not None:
                gv.copy_(p.grad)
            p.data = fp[off:off + n].view(p.shape)
            p.grad = gv
            spans.append((off, n))
            bviews.append(bv)
            buf = self.state[p].get("momentum_buffer") if p in self.state else None
            if buf is not None:
                bv.copy_(buf)
                self.state[p]["momentum_buffer"] = bv
            off += n
        self._flat[self.param_groups.index(group)] = {
            "param": fp, "grad": fg, "buf": fb, "spans": spans, "bviews": bviews,
            "counts": None,  # storage reference counts at the last full check (see _flat_sync)
        }

    # -------------------------------------------------------------------- CUDA
    def _cuda_plan(self, group, table, device):
        if not getattr(_core, "cuda_built", False):
            raise ValueError("this clrfast build has no CUDA kernels; parameters on CUDA need a CUDA build")
        state = group.get("_cuda")
        if state is None or state["device"] != device:
            sched_bytes = _core.schedule_bytes(group["schedule"]._core)
            state = {
                "device": device,
                "schedule": torch.frombuffer(bytearray(sched_bytes), dtype=torch.uint8).to(device),
                "step": torch.tensor([group["step"]], dtype=torch.int64, device=device),
                "lrmom": torch.tensor([group["lr"], group["momentum"]], dtype=torch.float64, device=device),
            }
            group["_cuda"] = state
        segs = torch.from_numpy(table).to(device)
        return {"segs": segs, "nseg": table.shape[0], "max_n": int(table[:, 3].max()), "state": state}

    def _cuda_step(self, group, plan, grad_scale, found_inf) -> None:
        c = plan.cuda
        st = c["state"]
        stream = torch.cuda.current_stream(st["device"]).cuda_stream
        _core.sgd_step_cuda(
            st["schedule"].data_ptr(), st["step"].data_ptr(), c["segs"].data_ptr(), c["nseg"], c["max_n"],
            group["base_momentum"], group["dampening"], group["weight_decay"], group["nesterov"], group["maximize"],
            grad_scale.data_ptr() if grad_scale is not None else 0,
            found_inf.data_ptr() if found_inf is not None else 0,
            st["lrmom"].data_ptr(), stream,
        )
        # The device owns the clock (a found_inf skip is decided there); the
        # host copies are refreshed lazily, without a synchronisation here.
        plan.first = False
        group["lr"] = st["lrmom"][0]
        group["momentum"] = st["lrmom"][1]

    def _sync_cuda_steps(self) -> None:
        for group in self.param_groups:
            st = group.get("_cuda")
            if st is not None:
                group["step"] = int(st["step"].item())
                group["lr"] = float(st["lrmom"][0])
                group["momentum"] = float(st["lrmom"][1])

    def __getstate__(self):
        self._sync_cuda_steps()
        return super().__getstate__()


def _check_schedule(schedule) -> None:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a clrfast schedule (clr.Cyclic, clr.OneCycle, ...), got {schedule!r}")
