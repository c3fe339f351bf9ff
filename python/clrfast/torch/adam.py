"""``CLRAdamW`` and ``CLRAdam``: the Adam family with a clrfast schedule, applied by one fused call per step."""

from __future__ import annotations

import torch
from torch.optim.adam import adam as _torch_adam
from torch.optim.optimizer import _get_scalar_dtype

from .. import _core
from .. import _validate as check
from ._fused import DTYPE_CODES, FusedOptimizer, as_real
from ._sqrt import torch_sqrt_routines

__all__ = ["CLRAdamW", "CLRAdam"]

_STEP_DTYPES = {torch.float32: 0, torch.float64: 1}


class _CLRAdamBase(FusedOptimizer):
    r"""The Adam update with lr(t) and beta1(t) from a clrfast schedule (see :class:`CLRAdamW`)."""

    _decoupled = True
    _rule = "CLRAdamW"
    _state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _scalar_keys = ("step",)
    _cols = 9  # p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, n, dtype, step address, step dtype
    _published_keys = ("lr", "betas")

    def __init__(
        self,
        params,
        schedule=None,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        maximize: bool = False,
        *,
        lr: float | None = None,
        flat: bool = False,
        match_torch: bool = True,
        threads: int | None = None,
    ):
        schedule, lr = self._lr_source(schedule, lr)
        defaults = dict(schedule=schedule, lr=lr if lr is not None else 0.0, betas=betas, eps=eps,
                        weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, step=0, flat=flat,
                        match_torch=match_torch)
        self._check_hyper(self._rule, defaults)
        super().__init__(params, defaults, threads=threads)

    # ------------------------------------------------------------------ hyperparameters
    def _check_hyper(self, label: str, group: dict) -> None:
        self._check_lr(label, group)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{label}['betas'] must be a pair of floats, got {betas!r}")
        b1 = check.real(f"{label}['betas'][0]", betas[0], min=0.0, max=1.0)
        b2 = check.real(f"{label}['betas'][1]", betas[1], min=0.0, max=1.0)
        if b1 >= 1.0 or b2 >= 1.0:
            raise ValueError(f"{label}['betas'] must lie in [0, 1), got {betas!r}")
        group["betas"] = (b1, b2)
        group["eps"] = check.real(f"{label}['eps']", group["eps"], min=0.0)
        group["weight_decay"] = check.real(f"{label}['weight_decay']", group["weight_decay"], min=0.0)
        group.setdefault("match_torch", True)  # absent from torch's groups
        self._check_flags_and_clock(label, group, ("amsgrad", "maximize", "flat", "match_torch"))

    def _publish_schedule(self, group) -> None:
        b1, b2 = group["betas"]
        lr, beta1 = _core.sgd_hyper(group["schedule"]._core, group["step"], b1)
        group["lr"] = lr
        group["betas"] = (beta1, b2)

    def _step_hyper(self, gi: int, group) -> dict:
        sched = group["schedule"]
        if sched is not None:
            sched._check_max(group["step"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"param_groups[{gi}]['betas'] must be a pair of floats, got {betas!r}")
        h = dict(
            lr=as_real(gi, "lr", group["lr"]),
            beta1=as_real(gi, "betas", betas[0]),
            beta2=as_real(gi, "betas", betas[1]),
            eps=as_real(gi, "eps", group["eps"]),
            weight_decay=as_real(gi, "weight_decay", group["weight_decay"]),
            amsgrad=bool(group["amsgrad"]),
            maximize=bool(group["maximize"]),
            match_torch=bool(group.get("match_torch", True)),
        )
        if not (0.0 <= h["beta1"] < 1.0 and 0.0 <= h["beta2"] < 1.0):
            raise ValueError(f"param_groups[{gi}]['betas'] must lie in [0, 1), got {betas!r}")
        return h

    # ------------------------------------------------------------------ state
    @staticmethod
    def _required(hyper) -> tuple:
        keys = ("step", "exp_avg", "exp_avg_sq")
        return keys + ("max_exp_avg_sq",) if hyper["amsgrad"] else keys

    @staticmethod
    def _new_state(p, keys) -> dict:
        """torch's initial state: a 0-d step counter and zero moments."""
        st = {}
        for k in keys:
            if k == "step":
                st[k] = (torch.tensor(0.0, dtype=_get_scalar_dtype()) if p.device.type == "cpu"
                         else torch.zeros((), dtype=_get_scalar_dtype(), device=p.device))
            else:
                st[k] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return st

    def _check_state(self, gi: int, pi: int, p, st: dict) -> None:
        step = st.get("step")
        if step is not None and not (isinstance(step, torch.Tensor) and step.numel() == 1
                                     and step.is_floating_point()):
            raise TypeError(f"param_groups[{gi}] parameter {pi}: state['step'] must be a one-element floating tensor, "
                            f"got {step!r}")

    def _row(self, p, lp, lg, locs, first) -> list | None:
        step = self._state_of(p, "step")
        if step is not None and (step.device.type != "cpu" or step.dtype not in _STEP_DTYPES):
            return None  # torch's code handles steps kept elsewhere
        m, v, vmax = (locs.get(k) for k in self._state_keys)
        return [lp.data_ptr(), lg.data_ptr(), m.data_ptr() if m is not None else 0,
                v.data_ptr() if v is not None else 0, vmax.data_ptr() if vmax is not None else 0, lp.numel(),
                DTYPE_CODES[lp.dtype], step.data_ptr() if step is not None else 0,
                _STEP_DTYPES[step.dtype] if step is not None else 0]

    # ------------------------------------------------------------------ CPU
    def _kernel(self, table, h, inv_scale) -> None:
        _core.adam_step(
            table, h["lr"], h["beta1"], h["beta2"], h["eps"], h["weight_decay"], self._decoupled, h["amsgrad"],
            h["maximize"], 1.0 if inv_scale is None else inv_scale, inv_scale is not None, self._num_threads(),
            *(torch_sqrt_routines() if h["match_torch"] else (0, 0, 0)),
        )

    def _reference(self, group, slow, h, inv_scale) -> None:
        """torch's single-tensor Adam, for tensors the kernel cannot walk as one dense run."""
        ps, gs, ms, vs, vmaxs, steps = [], [], [], [], [], []
        for _, p in slow:
            g = p.grad
            if inv_scale is not None:
                g.mul_(inv_scale)  # GradScaler's fused contract: the optimizer unscales, in place
            st = self.state[p]
            ps.append(p)
            gs.append(g)
            ms.append(st["exp_avg"])
            vs.append(st["exp_avg_sq"])
            steps.append(st["step"])
            if h["amsgrad"]:
                vmaxs.append(st["max_exp_avg_sq"])
        _torch_adam(ps, gs, ms, vs, vmaxs, steps, foreach=False, decoupled_weight_decay=self._decoupled,
                    amsgrad=h["amsgrad"], beta1=h["beta1"], beta2=h["beta2"], lr=h["lr"],
                    weight_decay=h["weight_decay"], eps=h["eps"], maximize=h["maximize"])

    # ------------------------------------------------------------------ CUDA
    def _check_cuda_group(self, gi: int, group) -> None:
        raise ValueError(f"param_groups[{gi}] is on CUDA: {self._rule}'s CUDA kernel is not wired to the front end "
                         "yet; use torch.optim.AdamW(fused=True) with clrfast's drop-in schedulers on GPUs")


class CLRAdamW(_CLRAdamBase):
    r"""AdamW whose lr (and beta1) follow a clrfast schedule, fused into one step.

    Replaces ``torch.optim.AdamW`` + a scheduler. After k applied updates a group shows
    ``lr = schedule.lr(k)`` and ``betas = (schedule.momentum(k), beta2)`` when the schedule
    defines a momentum (else ``betas[0]`` stays): the values update k uses, as torch's
    groups show after ``CyclicLR``/``OneCycleLR`` cycle ``betas[0]``. Per element, with
    torch's order of operations and the per-parameter ``state['step']`` s (after increment)::

        g = -grad if maximize else grad
        p = p * (1 - lr * weight_decay)
        m = m.lerp(g, 1 - beta1)
        v = v * beta2 + (1 - beta2) * g * g
        vmax = max(vmax, v)                                      (amsgrad)
        denom = sqrt(v or vmax) / sqrt(1 - beta2**s) + eps
        p = p - lr / (1 - beta1**s) * m / denom

    The bias correction uses the current beta1, as torch's does under a cycling
    scheduler. float32 and float64 trajectories are bit-identical to
    ``torch.optim.AdamW`` with ``foreach=False`` and ``foreach=True`` (which agree on the
    CPU) where torch is built with MKL: its CPU ``sqrt`` is MKL's vector root, which is not
    IEEE-rounded, and the kernel calls that same routine. ``match_torch=False`` takes the
    IEEE root instead (what torch's ``fused=True`` uses): about a quarter faster on large
    models, with last-ulp differences in the root. ``fused=True`` is not the reference: it
    rounds the update differently. bfloat16/float16 parameters are updated in float32 and
    rounded once on store. The state layout (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``,
    ``step``), ``flat``, ``threads``, written values, GradScaler and the all-or-nothing
    checks are those of :class:`~clrfast.torch.CLRSGD`; state dicts load into and from
    ``torch.optim.AdamW``.
    """

    _decoupled = True
    _rule = "CLRAdamW"


class CLRAdam(_CLRAdamBase):
    r"""Adam (L2 weight decay: ``g = g + weight_decay * p``) with a clrfast schedule; see :class:`CLRAdamW`."""

    _decoupled = False
    _rule = "CLRAdam"

    def __init__(self, params, schedule=None, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, maximize: bool = False, **kw):
        super().__init__(params, schedule, betas, eps, weight_decay, amsgrad, maximize, **kw)
