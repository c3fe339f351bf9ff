"""The front end's CUDA branch run on the CPU: plan, device table, clock and one launch per group.

The launcher is injected: ``HostLauncher`` runs the CUDA kernels' code through
``_core.rule_step_emulated`` over host memory (the "device" tensors are CPU tensors), in a permuted
block order each step. Every rule of the registry is compared bit for bit with the same optimizer
taking its CPU path with torch's for-loop rounding and the IEEE root (``device_twin``), which
tests/test_rule_stateful.py ties to torch. tests/test_rule_cuda.py runs the same branch on a GPU where there is one.
"""

from __future__ import annotations

import contextlib
import copy

import clrfast as clr
import pytest
import torch
from clrfast import _core
from optim_registry import RULES, device_twin, ieee_roots, params


@pytest.fixture(autouse=True)
def _ieee_roots(monkeypatch):
    ieee_roots(monkeypatch)  # the CPU twins root as the CUDA kernels do


pytestmark = pytest.mark.cuda_emulated


class HostLauncher:
    """Runs each enqueued step at once with the emulator; records what each call received."""

    def __init__(self):
        self.calls: list[dict] = []

    def step(self, rule, table, clock, *, lr_index, momentum_index, grad_scale, found_inf, store_grad):
        self.calls.append(dict(rule=rule, rows=len(table.rows), lr_index=lr_index, momentum_index=momentum_index))
        _core.rule_step_emulated(
            rule,
            table.rows.numpy(),
            clock.scalars.numpy().tolist(),
            table.chunks.numpy(),
            schedule=clock.schedule._core,
            clock=clock.clock.data_ptr(),
            lr_index=lr_index,
            momentum_index=momentum_index,
            grad_scale=0 if grad_scale is None else grad_scale.data_ptr(),
            found_inf=0 if found_inf is None else found_inf.data_ptr(),
            store_grad=store_grad,
            hyper_out=clock.values.data_ptr(),
            seed=len(self.calls),
        )


def on_device(opt, launcher=None):
    """Sends ``opt``'s steps through the CUDA branch with a host launcher."""
    opt._device_step = lambda plan: True
    opt._cuda_launcher = launcher or HostLauncher()
    return opt._cuda_launcher


@contextlib.contextmanager
def no_host_reads():
    """Fails on any read of a tensor's value on the host: on a GPU each would be a synchronisation."""

    def refuse(*a, **k):
        raise AssertionError("the step read a tensor's value on the host")

    saved = {k: getattr(torch.Tensor, k) for k in ("item", "tolist", "__float__", "__bool__")}
    for k in saved:
        setattr(torch.Tensor, k, refuse)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(torch.Tensor, k, v)


def schedule():
    return clr.Cyclic(1e-3, 5e-3, step_size_up=3, base_momentum=0.8, max_momentum=0.9)


SHAPES = [(5000,), (3, 7), (4097,), (1,), (64, 65)]


def twins(rule, *, over=None, sched=None, **kw):
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]
    b = [p.detach().clone().requires_grad_() for p in a]
    over = {**(over or {}), **device_twin(rule)}
    oa = rule.make(a, sched or schedule(), over=over, **kw)
    ob = rule.make(b, sched or schedule(), over=over, **kw)
    return a, b, oa, ob


def grads(a, b, t, new=True):
    g = torch.Generator().manual_seed(100 + t)
    for p, q in zip(a, b):
        x = torch.randn(p.shape, generator=g)
        if new or p.grad is None:
            p.grad, q.grad = x.clone(), x.clone()
        else:
            p.grad.copy_(x)
            q.grad.copy_(x)


def bits(opt) -> list:
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            out.append(p.detach().clone())
            for v in opt.state.get(p, {}).values():
                if isinstance(v, torch.Tensor):
                    out.append(v.detach().clone())
    return out


def assert_same(oa, ob):
    xa, xb = bits(oa), bits(ob)
    assert len(xa) == len(xb)
    for x, y in zip(xa, xb):
        assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize("new_grads", [True, False], ids=["new-grads", "same-grads"])
@pytest.mark.parametrize("rule", params())
def test_every_rule_through_the_cuda_branch_equals_its_cpu_step(rule, new_grads):
    for over in rule.options:
        a, b, oa, ob = twins(rule, base=over)
        launcher = on_device(oa)
        for t in range(7):
            grads(a, b, t, new_grads)
            with no_host_reads():
                oa.step()
            ob.step()
            assert_same(oa, ob)
            # the group shows the device's values; read here, as a user would
            ga, gb = oa.param_groups[0], ob.param_groups[0]
            assert float(ga["lr"]) == gb["lr"] and float(rule.momentum_of(ga)) == rule.momentum_of(gb)
        assert len(launcher.calls) == 7 and {c["rule"] for c in launcher.calls} == {oa._core_rule}
        assert oa.state_dict()["param_groups"][0]["step"] == ob.state_dict()["param_groups"][0]["step"] == 7
        assert type(oa.param_groups[0]["lr"]) is float  # state_dict() brought the values to the host


@pytest.mark.parametrize("rule", params())
def test_a_swapped_schedule_and_a_loaded_state_continue_as_on_the_cpu(rule):
    a, b, oa, ob = twins(rule)
    on_device(oa)
    other = clr.OneCycle(4e-3, total_steps=40, cycle_momentum=True)
    for t in range(10):
        if t == 4:
            oa.param_groups[0]["schedule"] = ob.param_groups[0]["schedule"] = other
        if t == 7:
            oa.load_state_dict(copy.deepcopy(ob.state_dict()))  # torch's load keeps the tensors it is given
        grads(a, b, t)
        oa.step()
        ob.step()
        assert_same(oa, ob)


@pytest.mark.parametrize("rule", params())
def test_grad_scaler_scale_unscales_on_the_device(rule):
    a, b, oa, ob = twins(rule)
    on_device(oa)
    for opt in (oa, ob):
        opt.grad_scale = torch.tensor(64.0)
        opt.found_inf = torch.tensor(0.0)
    for t in range(4):
        grads(a, b, t)
        oa.step()
        ob.step()
        assert_same(oa, ob)
        for p, q in zip(a, b):
            assert torch.equal(p.grad, q.grad)  # the unscaled gradients written back, as torch's fused step


def test_a_group_without_a_schedule_is_refused_and_nothing_changes():
    rule = RULES["CLRSGD"]
    a, _, oa, _ = twins(rule)
    on_device(oa)
    oa.param_groups[0]["schedule"] = None
    grads(a, a, 0)
    before = bits(oa)
    with pytest.raises(ValueError, match="computes lr and momentum on the device"):
        oa.step()
    assert all(torch.equal(x, y) for x, y in zip(before, bits(oa)))
    assert oa.param_groups[0]["step"] == 0


def test_one_launch_per_group_with_the_rules_indices():
    rule = RULES["CLRAdamW"]
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]
    opt = CLRAdamW_groups(ps)
    launcher = on_device(opt)
    for _ in range(3):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    names = _core.rules["adam"]["scalars"]
    assert [c["rows"] for c in launcher.calls] == [2, 3] * 3
    assert {(c["lr_index"], c["momentum_index"]) for c in launcher.calls} == {(names.index("lr"), names.index("beta1"))}
    assert rule.cls is type(opt)


def CLRAdamW_groups(ps):
    from clrfast.torch import CLRAdamW

    return CLRAdamW([{"params": ps[:2]}, {"params": ps[2:]}], schedule())
