"""``CLRLion``: Lion (Chen et al. 2023) with lr and beta1 from a clrfast schedule, in one fused call per step."""

from __future__ import annotations

import torch

from ..schedules import Schedule
from .rule import Hyper, RuleOptimizer

__all__ = ["CLRLion"]

_LOW_PRECISION = (torch.bfloat16, torch.float16)


class CLRLion(RuleOptimizer):
    r"""Lion whose lr (and beta1) follow a clrfast schedule, fused into one step.

    The update of Chen et al., "Symbolic Discovery of Optimization Algorithms" (2023), as
    the ``lion-pytorch`` package's ``Lion`` applies it (its default path), per element::

        p = p * (1 - lr * weight_decay)
        p = p - lr * sign(beta1 * m + (1 - beta1) * g)
        m = beta2 * m + (1 - beta2) * g

    After k applied updates a group shows ``lr = schedule.lr(k)`` and ``betas =
    (schedule.momentum(k), beta2)`` when the schedule defines a momentum. float32 and
    float64 trajectories are bit-identical to ``lion_pytorch.Lion``; bfloat16/float16
    parameters are updated in float32 and rounded once on store (the package rounds after
    each op). The state is the package's (``exp_avg``, no step count). A tensor lr is applied
    as its value in double; the package would compute ``1 - lr*wd`` and ``-lr`` as tensor ops. Lion's updates are
    ``lr`` in size in every coordinate: its lr is typically 3-10x smaller than AdamW's and its
    weight decay 3-10x larger. ``flat``, ``threads``, GradScaler, written values and the
    all-or-nothing checks are those of :class:`~clrfast.torch.CLRSGD`.
    """

    _rule = "CLRLion"
    _core_rule = "lion"
    _hypers = (Hyper("betas", "betas"), Hyper("weight_decay", invalid="Invalid weight_decay value"))
    _momentum_key = ("betas", 0)

    def __init__(
        self,
        params,
        schedule: Schedule | float | None = None,
        betas=(0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        lr: float | None = None,
        flat: bool = False,
        threads: int | None = None,
    ):
        self._setup(params, schedule, lr, dict(betas=betas, weight_decay=weight_decay), flat=flat, threads=threads)

    def _torch_update(self, params, grads, states, h) -> None:
        # lion-pytorch's update_fn, op for op. A bfloat16/float16 parameter (and its state) is
        # updated in float32 and rounded once on store, as the kernel does for a dense one: a
        # transposed parameter follows the same precision rule as a contiguous one.
        lr, wd, beta1, beta2 = h["lr"], h["weight_decay"], h["beta1"], h["beta2"]
        for p, grad, st in zip(params, grads, states):
            exp_avg = st["exp_avg"]
            low = p.dtype in _LOW_PRECISION
            w = p.float() if low else p
            m = exp_avg.float() if low and exp_avg.dtype in _LOW_PRECISION else exp_avg
            g = grad.float() if low else grad
            w.mul_(1.0 - lr * wd)
            update = m.clone().mul_(beta1).add(g, alpha=1.0 - beta1).sgn_()
            w.add_(update, alpha=-lr)
            m.mul_(beta2).add_(g, alpha=1.0 - beta2)
            if w is not p:
                p.copy_(w)
            if m is not exp_avg:
                exp_avg.copy_(m)
