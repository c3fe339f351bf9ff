"""Layer-wise lr decay: param groups with timm's ``lr_scale`` key, for any model.

The fused optimizers and :class:`~clrfast.torch.ScheduleLR` multiply a group's scheduled lr
by its ``lr_scale``, as timm's schedulers do, so one schedule drives every layer.
"""

from __future__ import annotations

import collections.abc
import fnmatch
import re
from collections import defaultdict
from itertools import chain
from typing import Any, Callable

from torch import nn

from .. import _validate as check
from ..schedules import Schedule

__all__ = ["layer_decay_groups"]

_MATCH_PREV_GROUP = 99999.0  # timm's ordinal for "the group before this one" (a final norm with the last block)


def _matcher_layers(model: nn.Module, matcher) -> dict[str, int]:
    """Each parameter's layer from a timm ``group_matcher`` (a dict of regexes or a callable), as timm numbers them.

    A regex's captured numbers order the parameters (``blocks.3`` after ``blocks.2``); unmatched
    ones (the head) come last; an ordinal ending in 99999 joins the group before it.
    """
    if isinstance(matcher, dict):
        compiled = []
        for ordinal, spec in enumerate(matcher.values()):
            if spec is None:
                continue
            for rx, suffix in spec if isinstance(spec, (tuple, list)) else [(spec, None)]:
                compiled.append((re.compile(rx), (ordinal,), suffix))

        def key(name: str) -> tuple:
            for rx, prefix, suffix in compiled:
                m = rx.match(name)
                if m:
                    return tuple(map(float, chain.from_iterable(filter(None, (prefix, m.groups(), suffix)))))
            return (float("inf"),)
    else:

        def key(name: str) -> tuple:
            k = matcher(name)
            return tuple(k) if isinstance(k, collections.abc.Iterable) else (k,)

    grouping: dict[tuple, list[str]] = defaultdict(list)
    for name, _ in model.named_parameters():
        grouping[key(name)].append(name)
    layers, lid = {}, -1
    for k in sorted(grouping):
        if lid < 0 or k[-1] != _MATCH_PREV_GROUP:
            lid += 1
        for name in grouping[k]:
            layers[name] = lid
    return layers


def _child_layers(model: nn.Module) -> dict[str, int]:
    """Layers in module order: the model's own parameters first, then each top-level child, a
    top-level ``nn.Sequential``/``nn.ModuleList``/``nn.ModuleDict`` counting one layer per child."""
    layers: dict[str, int] = {name: 0 for name, _ in model.named_parameters(recurse=False)}
    lid = 1 if layers else 0
    for cname, child in model.named_children():
        parts = (
            [(f"{cname}.{n}", c) for n, c in child.named_children()]
            if isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
            else [(cname, child)]
        )
        for prefix, module in parts:
            names = [f"{prefix}.{n}" for n, _ in module.named_parameters()]
            if not names:
                continue
            for n in names:
                layers.setdefault(n, lid)
            lid += 1
    return layers


def layer_decay_groups(
    model: nn.Module,
    layer_decay: float = 0.75,
    *,
    weight_decay: float | Schedule = 0.05,
    no_weight_decay: collections.abc.Collection[str] = (),
    weight_decay_exclude_1d: bool = True,
    min_scale: float = 0.0,
    layers: dict[str, int] | Callable[[str], int] | None = None,
) -> list[dict[str, Any]]:
    """Param groups for layer-wise lr decay (BEiT's, as timm's ``param_groups_layer_decay`` builds them).

    With ``L`` layers, a parameter of layer ``i`` gets ``lr_scale = max(min_scale,
    layer_decay ** (L - 1 - i))`` (the last layer, the head, 1), and ``weight_decay`` unless it
    is 1-d (biases, norms; with ``weight_decay_exclude_1d``) or its name matches a pattern of
    ``no_weight_decay`` (fnmatch wildcards), which get 0. One group per (layer, decay), in the
    order of ``model.named_parameters()``; parameters that do not require grad are left out.

    ``layers`` maps a parameter name to its layer (a dict, unlisted names going to the last
    layer, or a callable). By default a model's ``group_matcher(coarse=False)`` (timm's models)
    numbers them as timm does, and otherwise module order does: the model's own parameters,
    then each top-level child, one layer per child of a top-level ``Sequential``,
    ``ModuleList`` or ``ModuleDict``. ``weight_decay`` may be a schedule (wd(t), applied by the
    fused optimizers).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {model!r}")
    layer_decay = check.real("layer_decay", layer_decay, min=0.0)
    min_scale = check.real("min_scale", min_scale, min=0.0)
    if not isinstance(weight_decay, Schedule):
        weight_decay = check.real("weight_decay", weight_decay, min=0.0)
    weight_decay_exclude_1d = check.boolean("weight_decay_exclude_1d", weight_decay_exclude_1d)
    if isinstance(no_weight_decay, str):
        raise TypeError(f"no_weight_decay must be a collection of name patterns, got the string {no_weight_decay!r}")
    patterns = list(no_weight_decay)
    if layers is None:
        matcher = getattr(model, "group_matcher", None)
        layer_of = _matcher_layers(model, matcher(coarse=False)) if callable(matcher) else _child_layers(model)
    elif isinstance(layers, dict):
        layer_of = {k: check.integer(f"layers[{k!r}]", v, min=0) for k, v in layers.items()}
    elif callable(layers):
        layer_of = {
            n: check.integer(f"layers({n!r})", layers(n), min=0) for n, p in model.named_parameters() if p.requires_grad
        }
    else:
        raise TypeError(f"layers must be a dict, a callable or None, got {layers!r}")
    last = max(layer_of.values(), default=0)
    scales = [max(min_scale, layer_decay ** (last - i)) for i in range(last + 1)]
    groups: dict[tuple, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = (weight_decay_exclude_1d and p.ndim <= 1) or any(fnmatch.fnmatch(name, pat) for pat in patterns)
        lid = layer_of.get(name, last)
        group = groups.setdefault(
            (lid, exempt),
            {"lr_scale": scales[lid], "weight_decay": 0.0 if exempt else weight_decay, "params": []},
        )
        group["params"].append(p)
    return list(groups.values())
