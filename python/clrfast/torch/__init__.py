"""PyTorch front end: drop-in schedulers (torch's, transformers' and timm's), ScheduleLR, fused optimizers, lr_find.

Importing this module imports torch; ``import clrfast`` alone does not.
"""

from __future__ import annotations

import importlib

try:
    import torch
except ModuleNotFoundError as e:  # only torch itself missing, not a module torch fails to import
    if e.name != "torch":
        raise
    raise ModuleNotFoundError(
        "clrfast.torch needs PyTorch, which is not installed; install it with: pip install 'clrfast[torch]'",
        name="torch",
    ) from None

_LAZY = {
    "CyclicLR": "schedulers",
    "OneCycleLR": "schedulers",
    "CosineAnnealingWarmRestarts": "schedulers",
    "ScheduleLR": "schedulers",
    "ReduceLROnPlateau": "plateau",
    "FactoryLR": "factories",
    "get_constant_schedule_with_warmup": "factories",
    "get_linear_schedule_with_warmup": "factories",
    "get_cosine_schedule_with_warmup": "factories",
    "get_cosine_with_hard_restarts_schedule_with_warmup": "factories",
    "get_polynomial_decay_schedule_with_warmup": "factories",
    "get_inverse_sqrt_schedule": "factories",
    "get_cosine_with_min_lr_schedule_with_warmup": "factories",
    "get_wsd_schedule": "factories",
    "CosineLRScheduler": "timm_schedulers",
    "StepLRScheduler": "timm_schedulers",
    "MultiStepLRScheduler": "timm_schedulers",
    "PlateauLRScheduler": "timm_schedulers",
    "PolyLRScheduler": "timm_schedulers",
    "TanhLRScheduler": "timm_schedulers",
    "WSDLRScheduler": "timm_schedulers",
    "create_scheduler_v2": "timm_schedulers",
    "CLRSGD": "optim",
    "CLRAdamW": "adam",
    "CLRAdam": "adam",
    "CLRRMSprop": "rmsprop",
    "CLRLion": "lion",
    "CLRScheduleFreeAdamW": "schedulefree",
    "CLRScheduleFreeSGD": "schedulefree",
    "lr_find": "lr_find",
    "LRFindResult": "lr_find",
    "layer_decay_groups": "layer_decay",
}


def _allow_schedules_in_torch_load() -> None:
    """Schedules stored in optimizer groups (e.g. by ZeroRedundancyOptimizer) load with ``torch.load``'s defaults.

    They rebuild through their validating constructors from plain numbers, so they are as
    safe to unpickle as the tensors around them: a pickle can only call a constructor (REDUCE)
    or ``__new__`` (NEWOBJ), which builds and checks the value too, and one that sets a
    state (BUILD) is refused. Only the concrete classes are allowed, not their bases.
    """
    from .. import scales, schedules

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([*schedules._TYPES.values(), *scales._TYPES.values()])


_allow_schedules_in_torch_load()

# Bound eagerly: the function shares its module's name, and importing the module
# (clrfast.torch.lr_find) would otherwise leave the module as this attribute.
from .lr_find import LRFindResult, lr_find  # noqa: E402, F401


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clrfast.torch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = list(_LAZY)
