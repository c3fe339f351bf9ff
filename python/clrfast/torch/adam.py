"""``CLRAdamW`` and ``CLRAdam``: the Adam family with a clrfast schedule, applied by one fused call per step."""

from __future__ import annotations

import functools

import torch
from torch.optim.adam import adam as _torch_adam

from .. import _validate as check
from ._checks import DTYPE_CODES, holds_values, non_negative, one_run, step_clock, step_flag, step_lr, step_real
from ._sqrt import torch_sqrt_routines
from .rule import RuleOptimizer

__all__ = ["CLRAdamW", "CLRAdam"]

_LR_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
REFERENCES = (None, "fused", "foreach")


@functools.lru_cache(maxsize=1)
def fused_vector_bytes() -> int:
    """The vector width (bytes) of torch's fused CPU Adam kernel where clrfast reproduces it, else 0.

    The kernel rounds the last ``numel % (width / element size)`` elements of each parameter in
    scalar code. It is registered with ``REGISTER_DISPATCH``, which leaves the AVX-512 slot
    empty, so an AVX-512 machine runs the AVX2 build as well: 32 bytes on both (measured).
    """
    return 32 if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") else 0


def check_reference(name: str, value) -> str | None:
    """A group's ``reference``: None, ``"fused"`` or ``"foreach"``; "fused" needs a reproduced torch build."""
    if not (value is None or isinstance(value, str)) or value not in REFERENCES:
        raise ValueError(f"{name} must be None, 'fused' or 'foreach', got {value!r}")
    if value == "fused" and not fused_vector_bytes():
        raise ValueError(
            f"{name}='fused': torch's fused CPU Adam kernel is reproduced for its AVX2 and AVX-512 builds, and this "
            f"torch runs its {torch.backends.cpu.get_cpu_capability()!r} kernels; use reference='foreach'"
        )
    return value


def _values(t: torch.Tensor) -> torch.Tensor:
    """A dense tensor holding ``t``'s values (a negative view's or a zero tensor's materialised)."""
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)


class _CLRAdamBase(RuleOptimizer):
    r"""The Adam update with lr(t) and beta1(t) from a clrfast schedule (see :class:`CLRAdamW`)."""

    _decoupled = True
    _rule = "CLRAdamW"
    _core_rule = "adam"
    _momentum_key = ("betas", 0)
    _later_flags = ("amsgrad", "maximize")

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
        reference: str | None = None,
        threads: int | None = None,
    ):
        schedule, lr = self._lr_source(schedule, lr)
        defaults = dict(
            schedule=schedule,
            lr=lr if lr is not None else 0.0,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            step=0,
            flat=flat,
            reference=reference,
        )
        self._check_hyper(self._rule, defaults)
        super().__init__(params, defaults, threads=threads)

    # ------------------------------------------------------------------ hyperparameters
    def _check_hyper(self, label: str, group: dict) -> None:
        """Checks (and normalises in place) a group's hyperparameters, in torch's order and with its messages."""
        self._check_lr(label, group)
        group["eps"] = non_negative(f"{label}['eps']", group["eps"], "Invalid epsilon value")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{label}['betas'] must be a pair of floats, got {betas!r}")
        for i, beta in enumerate(betas):
            value = float(beta) if isinstance(beta, torch.Tensor) and beta.numel() == 1 else beta
            try:
                inside = 0.0 <= value < 1.0
            except TypeError:
                continue  # not a number: refused below
            if not inside:
                raise ValueError(
                    f"Invalid beta parameter at index {i}: {beta} ({label}['betas'] must lie in [0, 1), got {betas!r})"
                )
        self._check_weight_decay(label, group)
        if isinstance(betas[0], torch.Tensor) != isinstance(betas[1], torch.Tensor):
            raise ValueError(f"betas must be either both floats or both Tensors ({label}['betas'] is {betas!r})")
        # tensor betas would round torch's bias corrections in float32, which the kernel does not
        group["betas"] = tuple(check.real(f"{label}['betas'][{i}]", b) for i, b in enumerate(betas))
        group["reference"] = check_reference(f"{label}['reference']", group.setdefault("reference", None))
        self._check_flags_and_clock(label, group, ("amsgrad", "maximize", "flat"))

    def _save_group(self, saved: dict) -> None:
        # torch's path keys, so that torch.optim.Adam(W) resumes the run on the path it matched
        fused = saved["reference"] != "foreach" and fused_vector_bytes() != 0
        saved["fused"], saved["foreach"] = (True, None) if fused else (None, False)

    def _upgrade_saved_group(self, gi: int, saved: dict) -> None:
        if "reference" in saved:
            saved.pop("fused", None)  # what _save_group wrote for torch
            saved.pop("foreach", None)
            return
        if "match_torch" in saved:
            # saved before `reference`: match_torch=True was the for-loop's rounding, False the IEEE root
            legacy = saved.pop("match_torch")
            if not isinstance(legacy, (bool, int)) or legacy not in (0, 1):
                raise TypeError(f"state_dict['param_groups'][{gi}]['match_torch'] must be a bool, got {legacy!r}")
            saved["reference"] = "foreach" if legacy else "fused"
        elif "fused" in saved:
            # torch's Adam(W): the run goes on with the path it took (for-loop and foreach agree on the CPU)
            saved["reference"] = ("fused" if fused_vector_bytes() else None) if saved["fused"] else "foreach"

    def _step_hyper(self, gi: int, group) -> dict:
        """Every group value the step reads, checked; raises before anything changes.

        ``lr_dtype`` is the dtype code torch's lr-derived scalars are computed in: a tensor
        lr's own, float64 for a number.
        """
        step = step_clock(gi, group)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"param_groups[{gi}]['betas'] must be a pair of floats, got {betas!r}")
        lr, lr_dtype = step_lr(gi, group["lr"])
        reference = check_reference(f"param_groups[{gi}]['reference']", group.get("reference"))
        vec_bytes = 0 if reference == "foreach" else fused_vector_bytes()
        if vec_bytes:
            lr_dtype = DTYPE_CODES[torch.float64]  # torch's fused kernel reads a CPU tensor lr as a double
        h: dict = dict(
            step=step,
            lr=lr,
            lr_dtype=lr_dtype,
            decoupled=self._decoupled,
            beta1=step_real(gi, "betas", betas[0]),
            beta2=step_real(gi, "betas", betas[1]),
            eps=step_real(gi, "eps", group["eps"], min=0.0),
            weight_decay=self._step_weight_decay(gi, group, step),
            amsgrad=step_flag(gi, "amsgrad", group["amsgrad"]),
            maximize=step_flag(gi, "maximize", group["maximize"]),
            reference=reference,
            vec_bytes=vec_bytes,
        )
        if not (0.0 <= h["beta1"] < 1.0 and 0.0 <= h["beta2"] < 1.0):
            raise ValueError(f"param_groups[{gi}]['betas'] must lie in [0, 1), got {betas!r}")
        return h

    # ------------------------------------------------------------------ state
    def _needs(self, h) -> tuple:
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if h["amsgrad"] else ("exp_avg", "exp_avg_sq")

    # ------------------------------------------------------------------ CPU
    def _roots(self, h) -> tuple:
        return (0, 0, 0) if h["vec_bytes"] else torch_sqrt_routines()  # the fused kernel's root is IEEE

    def _divides_scale(self, h) -> bool:
        return bool(h["vec_bytes"])

    def _torch_update(self, params, grads, states, h) -> None:
        """torch's Adam for tensors the kernel cannot walk as one dense run: its fused kernel (on dense
        copies: it walks a tensor's memory as one run) or its single-tensor code, as ``reference`` says."""
        if h["vec_bytes"]:
            self._torch_fused_update(params, grads, states, h)
            return
        ps, gs, ms, vs, vmaxs, steps = [], [], [], [], [], []
        for p, g, st in zip(params, grads, states):
            ps.append(p)
            gs.append(g)
            ms.append(st["exp_avg"])
            vs.append(st["exp_avg_sq"])
            steps.append(st["step"])
            if h["amsgrad"]:
                vmaxs.append(st["max_exp_avg_sq"])
        # a tensor lr as a CPU tensor of its dtype: torch's scalars then round as the kernel's do
        lr = (
            h["lr"]
            if h["lr_dtype"] == DTYPE_CODES[torch.float64]
            else torch.tensor(h["lr"], dtype=_LR_DTYPES[h["lr_dtype"]])
        )
        _torch_adam(
            ps,
            gs,
            ms,
            vs,
            vmaxs,
            steps,
            foreach=False,
            decoupled_weight_decay=self._decoupled,
            amsgrad=h["amsgrad"],
            beta1=h["beta1"],
            beta2=h["beta2"],
            lr=lr,
            weight_decay=h["weight_decay"],
            eps=h["eps"],
            maximize=h["maximize"],
        )

    def _torch_fused_update(self, params, grads, states, h) -> None:
        for p, g, st in zip(params, grads, states):
            live = [p, g, *(st[k] for k in self._needs(h))]
            # The kernel walks each tensor's memory for numel elements: right when all share one
            # gap-free layout (its scalar tail then is the last elements in memory) and hold their
            # values (its fallback refuses negative views); else on dense copies of the values
            alike = one_run(p) and all(
                t.shape == p.shape and t.stride() == p.stride() and holds_values(t) for t in live
            )
            dense = live if alike else [_values(t) for t in live]
            step = st["step"] if holds_values(st["step"]) else _values(st["step"])
            vmax = [dense[4]] if h["amsgrad"] else []
            _torch_adam(
                [dense[0]],
                [dense[1]],
                [dense[2]],
                [dense[3]],
                vmax,
                [step],
                fused=True,
                grad_scale=h.get("grad_scale"),
                found_inf=None,
                decoupled_weight_decay=self._decoupled,
                amsgrad=h["amsgrad"],
                beta1=h["beta1"],
                beta2=h["beta2"],
                lr=h["lr"],
                weight_decay=h["weight_decay"],
                eps=h["eps"],
                maximize=h["maximize"],
            )
            unscaled = h.get("grad_scale") is not None  # the kernel wrote the gradient back, unscaled
            for k, (t, d) in enumerate(zip(live, dense)):
                if d is not t and (k != 1 or unscaled):
                    t.copy_(d)
            if step is not st["step"]:
                st["step"].copy_(step)

    # ------------------------------------------------------------------ CUDA
    def _check_cuda_group(self, gi: int, group) -> None:
        if group.get("reference") == "fused":
            raise ValueError(
                f"param_groups[{gi}] is on CUDA with reference='fused': torch's CUDA fused Adam kernel rounds "
                "otherwise than its CPU one, and the CUDA step reproduces torch's CUDA for-loop and foreach paths; "
                "use reference=None or 'foreach'"
            )
        super()._check_cuda_group(gi, group)

    def _cuda_step(self, gi: int, group, plan, hyper, grad_scale, found_inf) -> None:
        super()._cuda_step(gi, group, plan, dict(hyper, vec_bytes=0), grad_scale, found_inf)


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
    scheduler. ``reference`` names the torch path whose numbers the step reproduces, bit for bit:

    - ``"fused"``: ``torch.optim.AdamW(fused=True)`` on the CPU, every dtype (the sign bits of
      NaNs aside, which that kernel's compiler sets): the IEEE square root; the rounding of its
      scalar tail in the last ``numel % (32 / element size)`` elements of each parameter;
      GradScaler's gradients divided by the scale; a tensor lr read as its value. Where torch's
      kernel would misread memory (a strided parameter, or a gradient laid out otherwise than
      its parameter) the step is that kernel's on dense copies. Refused on CUDA, whose fused
      kernel rounds otherwise.
    - ``"foreach"``: ``foreach=False`` and ``foreach=True``, which agree on the CPU (torch's CPU
      default is the for-loop), in float32 and float64. Where torch has MKL (the x86 wheels) its
      CPU ``sqrt`` is MKL's vector root, which is not IEEE-rounded, and the kernel calls that same
      routine: about 0.6x the speed of ``"fused"`` on large models. bfloat16/float16 parameters
      are updated in float32 and rounded once on store, as torch's fused kernel does.
    - ``None`` (the default): ``"fused"`` where clrfast reproduces that kernel (torch's x86 AVX2
      and AVX-512 builds), else ``"foreach"``; on CUDA, ``"foreach"``.

    The state layout (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``step``), ``flat``,
    ``threads``, written values, GradScaler and the all-or-nothing checks are those of
    :class:`~clrfast.torch.CLRSGD`; state dicts load into and from ``torch.optim.AdamW``. They
    carry torch's ``fused``/``foreach`` keys of the path matched, so torch resumes on it, and a
    torch state dict's ``fused`` flag sets ``reference`` when it is loaded.

    With ``reference="foreach"``, a tensor lr (``schedule=None, lr=torch.tensor(1e-3)``, or one
    written to the group) is applied as torch's ``foreach=False`` code applies it: ``1 - lr * weight_decay`` and
    ``lr / (1 - beta1**s)`` are 0-d ops in the lr's dtype (float32 for
    ``torch.tensor(1e-3)``), not double arithmetic on ``float(lr)``, for float32, float64,
    bfloat16 and float16 lr tensors. torch's ``foreach=True`` refuses a tensor lr on the
    CPU (it needs ``capturable=True``); given ``lr.item()`` instead it computes in double,
    which after 5 AdamW steps (weight_decay 0.3, lr ``torch.tensor(1e-3)``) differs from the
    for-loop in every element of a float64 model (up to 1.5e-7), and in some last bits of a
    float32 one after 100 steps. A negative or NaN tensor lr is torch's ``ValueError("Invalid
    learning rate: ...")`` at construction, load and step.

    Each parameter needs a ``step`` counter of its own: a state whose parameters share one
    step tensor (torch would add one to it per parameter, 10 after 3 steps from 1 with three
    parameters) is refused at ``load_state_dict`` and, for a direct write, at ``step``. A
    step counter must hold a whole number >= 0.
    """

    _decoupled = True
    _rule = "CLRAdamW"


class CLRAdam(_CLRAdamBase):
    r"""Adam (L2 weight decay: ``g = g + weight_decay * p``) with a clrfast schedule; see :class:`CLRAdamW`."""

    _decoupled = False
    _rule = "CLRAdam"

    def __init__(
        self,
        params,
        schedule=None,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        maximize: bool = False,
        **kw,
    ):
        super().__init__(params, schedule, betas, eps, weight_decay, amsgrad, maximize, **kw)
