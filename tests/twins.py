"""Bit comparisons and the all-or-nothing check shared by the side-by-side state machines."""

from __future__ import annotations

import math

import torch

_BITS = {
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit pattern of a floating tensor (NaN payloads and signed zeros included)."""
    t = t.detach()
    it = _BITS.get(t.dtype)
    return t if it is None or t.layout != torch.strided else t.view(it)


def same(a, b) -> bool:
    """Both None, or the same dtype, shape and bits."""
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and a.layout == b.layout and torch.equal(bits(a), bits(b))


def same_but_nan_payloads(a, b) -> bool:
    """``same``, but a NaN matches a NaN whatever its sign and payload (which x86 and torch's
    code order leave unspecified once an inf meets an inf)."""
    if a is None or b is None or a.dtype != b.dtype or a.shape != b.shape:
        return same(a, b)
    nan = torch.isnan(a.detach())
    if not torch.equal(nan, torch.isnan(b.detach())):
        return False
    return same(a.detach().masked_fill(nan, 0.0), b.detach().masked_fill(nan, 0.0))


def same_value(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and same(a, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def snapshot(opt):
    """What a refused operation must leave as it was: groups, parameters, gradients, state (objects and bits)."""
    groups = [dict(g) for g in opt.param_groups]
    for g in groups:
        g["params"] = list(g["params"])
    tensors = []
    for p in (p for g in opt.param_groups for p in g["params"]):
        g = p.grad
        dense = g is not None and g.layout == torch.strided
        meta = None if g is None else (g.data_ptr() if dense else None, g.dtype, g.shape, g.layout)
        tensors.append(
            (p, p.data_ptr(), p.dtype, p.shape, p.stride(), bits(p).clone(), g, meta, dense and bits(g).clone())
        )
    state = {
        p: {k: (v, bits(v).clone() if isinstance(v, torch.Tensor) else None) for k, v in s.items()}
        for p, s in opt.state.items()
    }
    return opt, groups, tensors, state


def assert_unchanged(now, snap, what: str) -> None:
    """``now`` is the optimizer ``snap`` was taken of, and nothing in it changed."""
    opt, groups, tensors, state = snap
    assert now is opt
    assert len(opt.param_groups) == len(groups), f"{what}: param_groups {len(groups)} -> {len(opt.param_groups)}"
    for gi, (g, before) in enumerate(zip(opt.param_groups, groups)):
        assert set(g) == set(before), f"{what}: group {gi} keys {sorted(before)} -> {sorted(g)}"
        for k, v in before.items():
            if k == "params":
                assert len(g[k]) == len(v) and all(a is b for a, b in zip(g[k], v)), f"{what}: group {gi} params"
            elif k == "schedule":
                assert g[k] is v, f"{what}: group {gi} schedule replaced"
            else:
                assert same_value(g[k], v), f"{what}: group {gi}[{k!r}] {v!r} -> {g[k]!r}"
    for i, (p, ptr, dtype, shape, stride, pb, g, meta, gb) in enumerate(tensors):
        assert (p.data_ptr(), p.dtype, p.shape, p.stride()) == (ptr, dtype, shape, stride), f"{what}: param {i}"
        assert torch.equal(bits(p), pb), f"{what}: param {i} values changed"
        assert p.grad is g, f"{what}: param {i} gradient object replaced"
        if g is not None:
            dense = g.layout == torch.strided
            assert (g.data_ptr() if dense else None, g.dtype, g.shape, g.layout) == meta, f"{what}: gradient {i}"
            if gb is not False:
                assert torch.equal(bits(g), gb), f"{what}: gradient {i} values changed"
    assert set(opt.state) == set(state), f"{what}: state entries changed"
    for p, entry in state.items():
        now_entry = opt.state[p]
        assert set(now_entry) == set(entry), f"{what}: state keys {sorted(entry)} -> {sorted(now_entry)}"
        for k, (v, vb) in entry.items():
            assert now_entry[k] is v, f"{what}: state[{k!r}] replaced"
            if vb is not None:
                assert torch.equal(bits(now_entry[k]), vb), f"{what}: state[{k!r}] values changed"
