"""One record per fused optimizer, for the tests that every rule must pass.

In the style of torch's ``OptimizerInfo`` (``torch.testing._internal.common_optimizers``): a
test parametrised over ``RULES`` builds each clrfast optimizer and its reference (torch's
for-loop implementation, ``foreach=False``; for Adam its ``fused=True`` kernel, or its for-loop
where an option set says ``reference="foreach"``; or ``lion_pytorch.Lion``) from the same option set
and compares them bit for bit. A rule's record says what differs between rules (state keys,
where a schedule's momentum shows, whether the reference takes a tensor lr as clrfast does);
what a test needs beyond that belongs in the test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from clrfast.torch import CLRSGD, CLRAdam, CLRAdamW, CLRLion, CLRRMSprop
from clrfast.torch._sqrt import torch_sqrt_routines
from clrfast.torch.adam import fused_vector_bytes


@dataclass(frozen=True)
class Rule:
    """A fused optimizer, its reference and the option sets that exercise its branches.

    ``options[0]`` is the one a test uses when it needs a single set: it takes the rule's
    widest path (momentum, weight decay, the extra state). ``hypers`` names each group value
    a step checks and its kind: ``"nonneg"`` (a finite real >= 0), ``"real"`` (a finite real),
    ``"flag"`` (a bool) or ``"betas"`` (a pair in [0, 1]).
    """

    name: str
    cls: type
    reference: Callable[..., torch.optim.Optimizer]  # (params, lr, **options)
    options: tuple[dict, ...]
    state_keys: tuple[str, ...]  # every per-element state tensor options[0] creates, in torch's names
    momentum: str | tuple[str, int]  # where a schedule's momentum shows in a group
    hypers: dict[str, str]
    torch_name: str | None = None  # the reference's class in torch.optim (and its OptimizerInfo), if any
    tensor_lr: bool = True  # the reference applies a tensor lr bit for bit as clrfast does
    step_state: bool = False  # a per-parameter 0-d state['step'], as torch keeps it
    marks: tuple = field(default=(), compare=False)  # e.g. a skip where parity needs torch's MKL sqrt

    def kwargs(self, over: dict | None = None, base: dict | None = None) -> dict:
        """``base`` (default ``options[0]``; ``{}`` for the class defaults) with ``over`` on top."""
        return {**(self.options[0] if base is None else base), **(over or {})}

    def make(self, params, schedule=None, lr=None, flat: bool = False, over=None, base=None, **kw):
        """The clrfast optimizer; ``kw`` (``threads``, ``match_torch``) goes to it alone."""
        return self.cls(params, schedule, lr=lr, flat=flat, **self.kwargs(over, base), **kw)

    def make_reference(self, params, lr, over=None, base=None):
        """The reference optimizer with the same options."""
        return self.reference(params, lr, **self.kwargs(over, base))

    def momentum_of(self, group) -> float:
        """The momentum (beta1) a group shows."""
        if isinstance(self.momentum, tuple):
            key, index = self.momentum
            return group[key][index]
        return group[self.momentum]

    def shown(self, group) -> tuple:
        """(lr, momentum) as a group shows them."""
        return (float(group["lr"]), float(self.momentum_of(group)))


def _torch(cls):
    return lambda params, lr, **kw: cls(params, lr=lr, foreach=False, **kw)


def _torch_adam(cls):
    """torch's Adam path that a CLRAdam option set's ``reference`` names: fused by default."""

    def make(params, lr, reference=None, **kw):
        path = dict(foreach=False) if reference == "foreach" else dict(fused=True)
        return cls(params, lr=lr, **path, **kw)

    return make


def _lion(params, lr, **kw):
    import lion_pytorch

    return lion_pytorch.Lion(params, lr=lr, **kw)


_NO_MKL = pytest.mark.skipif(torch_sqrt_routines()[0] == 0, reason="torch without MKL: its sqrt is not reproduced")
_NO_FUSED = pytest.mark.skipif(
    fused_vector_bytes() == 0, reason="torch's fused Adam kernel is reproduced on its x86 AVX2/AVX-512 builds"
)
_ADAM_HYPERS = dict(betas="betas", eps="nonneg", weight_decay="nonneg", amsgrad="flag", maximize="flag")

RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "CLRSGD",
            CLRSGD,
            _torch(torch.optim.SGD),
            (
                dict(momentum=0.9, weight_decay=1e-3, nesterov=True),
                dict(momentum=0.5, dampening=0.3, maximize=True),
                dict(weight_decay=1e-3),
            ),
            ("momentum_buffer",),
            "momentum",
            dict(momentum="nonneg", dampening="real", weight_decay="nonneg", nesterov="flag", maximize="flag"),
            torch_name="SGD",
        ),
        Rule(
            "CLRAdamW",
            CLRAdamW,
            _torch_adam(torch.optim.AdamW),
            (
                dict(weight_decay=1e-2, amsgrad=True),
                dict(maximize=True, eps=1e-6),
                dict(weight_decay=0.0, eps=0.0),
                dict(weight_decay=1e-2, amsgrad=True, reference="foreach"),
                dict(maximize=True, eps=1e-6, reference="foreach"),
            ),
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
            ("betas", 0),
            _ADAM_HYPERS,
            step_state=True,
            marks=(_NO_FUSED, _NO_MKL),
            torch_name="AdamW",
        ),
        Rule(
            "CLRAdam",
            CLRAdam,
            _torch_adam(torch.optim.Adam),
            (
                dict(weight_decay=1e-2, amsgrad=True),
                dict(maximize=True, betas=(0.8, 0.99)),
                dict(weight_decay=1e-2, amsgrad=True, reference="foreach"),
                dict(maximize=True, betas=(0.8, 0.99), reference="foreach"),
            ),
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
            ("betas", 0),
            _ADAM_HYPERS,
            step_state=True,
            marks=(_NO_FUSED, _NO_MKL),
            torch_name="Adam",
        ),
        Rule(
            "CLRRMSprop",
            CLRRMSprop,
            _torch(torch.optim.RMSprop),
            (
                dict(momentum=0.9, centered=True, weight_decay=1e-3),
                dict(alpha=0.9, maximize=True),
                dict(momentum=0.5, eps=1e-6),
            ),
            ("square_avg", "momentum_buffer", "grad_avg"),
            "momentum",
            dict(
                alpha="nonneg",
                eps="nonneg",
                weight_decay="nonneg",
                momentum="nonneg",
                centered="flag",
                maximize="flag",
                match_torch="flag",
            ),
            step_state=True,
            marks=(_NO_MKL,),
            torch_name="RMSprop",
        ),
        # lion-pytorch computes 1 - lr*wd and -lr as tensor ops for a tensor lr; CLRLion applies
        # its value, as for a float: the package is the oracle for float lrs only
        Rule(
            "CLRLion",
            CLRLion,
            _lion,
            (dict(weight_decay=1e-2), dict(betas=(0.95, 0.98)), dict(betas=(0.0, 1.0), weight_decay=0.5)),
            ("exp_avg",),
            ("betas", 0),
            dict(betas="betas", weight_decay="nonneg"),
            tensor_lr=False,
        ),
    )
}

NAMES = list(RULES)
# fused optimizers in clrfast.torch without a record, and why; a new fused optimizer goes into RULES or here.
# The schedule-free rules step only in train() mode, keep their parameters at y (x after eval()), and no
# schedule moves their beta1 (the averaging weight): tests/test_schedulefree.py compares them with the package.
UNLISTED = {
    "CLRScheduleFreeSGD": "train()/eval() protocol, no scheduled momentum",
    "CLRScheduleFreeAdamW": "train()/eval() protocol, no scheduled momentum",
}
NEW = ("CLRRMSprop", "CLRLion")  # the registry's rules on the generic rule engine (clrfast/torch/rule.py)


def device_twin(rule: Rule) -> dict:
    """Options under which a CPU step rounds as the CUDA step does: torch's for-loop rounding, and the
    IEEE root (Adam's for-loop path takes the IEEE root only with ``ieee_roots`` in effect)."""
    if rule.cls in (CLRAdamW, CLRAdam):
        return {"reference": "foreach"}
    return {"match_torch": False} if "match_torch" in rule.hypers else {}


def ieee_roots(monkeypatch) -> None:
    """Makes the for-loop path of the Adam kernels take the IEEE root, as the CUDA kernels do."""
    monkeypatch.setattr("clrfast.torch.adam.torch_sqrt_routines", lambda: (0, 0, 0))


def params(names=NAMES):
    """``pytest.param`` per rule (with its marks), for ``@pytest.mark.parametrize("rule", ...)``."""
    return [pytest.param(RULES[n], id=n, marks=RULES[n].marks) for n in names]


def where(predicate: Callable[[Rule], Any]) -> list:
    """The rules for which ``predicate`` holds, as ``params``."""
    return params([n for n in NAMES if predicate(RULES[n])])


def options(names=NAMES) -> list:
    """``pytest.param(rule, option set)`` for every option set of every rule."""
    return [
        pytest.param(RULES[n], o, id=f"{n}-{i}", marks=RULES[n].marks)
        for n in names
        for i, o in enumerate(RULES[n].options)
    ]
