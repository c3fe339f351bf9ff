"""Every rule of the registry beside its reference through random operation sequences.

One hypothesis state machine per rule and mode (list, flat): twin parameter sets, one optimised
by the clrfast optimizer, one by the rule's reference (``optim_registry.Rule.reference``, with
torch's ``CyclicLR`` cycling the momentum when the run is scheduled). Rules do what a training
loop, a checkpointing library or a careless user does: steps with gradients that come, go,
accumulate or are signed zeros, GradScaler steps with and without overflow, ``zero_grad`` both
ways, writes of lr, momentum and the other group values, ``add_param_group``, state dicts loaded
into a fresh optimizer in both formats (and clrfast's into the reference), deep copies, pickle
and ``torch.save``. After every rule the parameters, gradients, state and the groups' values
are bit for bit the reference's (a NaN matching a NaN: an inf gradient kept after a skipped
GradScaler step makes them) and each group's clock counts the updates applied to it. An
operation the optimizer refuses (a gradient of the wrong size, a sparse one, a bad value
written to a group) raises and leaves parameters, gradients, state and ``param_groups`` as
they were. What only one rule has stays in that rule's file.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hypothesis")
pytest.importorskip("lion_pytorch")

import clrfast as clr  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule  # noqa: E402
from optim_registry import RULES, Rule  # noqa: E402
from twins import assert_unchanged, same, same_but_nan_payloads, snapshot  # noqa: E402

BASE, TOP, UP, DOWN = 1e-3, 6e-3, 3, 2
MOMENTA = dict(base_momentum=0.85, max_momentum=0.95)
# (shape, transposed): a transposed view is not one dense run (torch's path in list mode; flat mode lays it
# out anew); (0,) and () are the empty and the scalar parameter
SPECS = [((3,), False), ((2, 5), False), ((17,), False), ((1,), False), ((), False), ((0,), False), ((3, 4), True)]
# group values every rule may be given at any time, when it has them (momentum and lr are drawn apart)
WRITES = {
    "weight_decay": st.one_of(st.sampled_from([0.0, 1e-2, 0.5]), st.floats(0.0, 1.0)),
    "eps": st.sampled_from([1e-8, 1e-6, 1e-3]),
    "alpha": st.sampled_from([0.99, 0.9, 0.3, 0.5, 0.1]),  # 0.3, 0.1: the lerp weight >= 0.5 (ATen's other branch)
    "maximize": st.booleans(),
    "centered": st.booleans(),
}
# a flag that makes the reference read state it creates only at a parameter's first step
NEEDS_STATE = {"centered": "grad_avg"}
MAX_GROUPS = 3
# keys only clrfast's groups hold; a torch user's reference keeps its own
OWN_KEYS = ("schedule", "step", "flat")
# (key, value) written into a group before a step that must fail and change nothing
BAD_WRITES = [("lr", "x"), ("lr", None), ("weight_decay", "x"), ("weight_decay", -1.0), ("step", 2.5), ("step", None)]


# Cases the machine leaves out, each a bug recorded below as a strict xfail
def _adam_zero_beta1(rule: Rule) -> bool:  # test_adam_beta1_zero_keeps_torchs_signed_zero_in_exp_avg
    return rule.name in ("CLRAdam", "CLRAdamW")


def _adamw_f64_lr_on_a_scalar(rule: Rule, params) -> bool:  # test_adamw_f64_tensor_lr_on_a_0d_parameter
    return rule.name == "CLRAdamW" and any(p.dim() == 0 for p in params)


def _tensors(specs, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape, transposed in specs:
        t = torch.randn(shape[::-1] if transposed else shape, generator=gen, dtype=torch.float64).to(dtype)
        out.append(t.t() if transposed else t)
    return out


def _param(t):
    return torch.nn.Parameter(t.detach().clone(memory_format=torch.preserve_format))


def _round_trip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


class RuleMachine(RuleBasedStateMachine):
    """``self.opt`` over ``self.a`` (per group) beside ``self.ref`` over ``self.b``."""

    rule: Rule
    flat: bool

    @initialize(
        scheduled=st.booleans(),
        option=st.integers(0, 2),
        two_groups=st.booleans(),
        dtype=st.sampled_from([torch.float32, torch.float64]),
        specs=st.lists(st.sampled_from(SPECS), min_size=1, max_size=3),
        seed=st.integers(0, 2**16),
        fused_unscale=st.booleans(),
    )
    def setup(self, scheduled, option, two_groups, dtype, specs, seed, fused_unscale):
        self.base = self.rule.options[option % len(self.rule.options)]
        self.dtype, self.seed, self.scheduled, self.t = dtype, seed, scheduled, 0
        values = _tensors(specs, dtype, seed)
        split = len(values) - 1 if two_groups and len(values) > 1 else len(values)
        self.a = [[_param(v) for v in vs] for vs in (values[:split], values[split:]) if vs]
        schedule = clr.Cyclic(BASE, TOP, step_size_up=UP, step_size_down=DOWN, **MOMENTA) if scheduled else None
        self.opt = self._ours(self.a, schedule)
        self.opt.fused_unscale = fused_unscale
        # copied after flat mode laid the parameters out (contiguously): a fused reference's scalar
        # tail is the last elements in memory, so it needs the same layout
        self.b = [[_param(p) for p in ps] for ps in self.a]
        self.ref = self.rule.make_reference(self._groups(self.b), BASE, base=self.base)
        # torch's fused kernels walk memory and pair a parameter's elements with its gradient's by
        # address: an oracle only for gradients laid out as their parameter (autograd's), which
        # both sides then get; they also take GradScaler's scale themselves
        self.ref_fused = bool(self.ref.defaults.get("fused"))
        self.sched = (
            torch.optim.lr_scheduler.CyclicLR(
                self.ref, BASE, TOP, step_size_up=UP, step_size_down=DOWN, cycle_momentum=True, **MOMENTA
            )
            if scheduled
            else None
        )
        self.applied = [0] * len(self.a)
        self.scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2) for _ in range(2)]
        for s in self.scalers:
            s.scale(torch.ones(()))  # initialises the scale, as scaling the first loss does

    # ------------------------------------------------------------------ both sides
    @staticmethod
    def _groups(params):
        groups = [{"params": params[0]}]
        if len(params) > 1:  # a group of its own weight decay
            groups.append({"params": params[1], "weight_decay": 0.3})
        return groups

    def _ours(self, params, schedule):
        lr = None if schedule is not None else BASE
        return self.rule.make(self._groups(params), schedule, lr=lr, flat=self.flat, base=self.base)

    def pairs(self):
        for ps, qs in zip(self.a, self.b):
            yield from zip(ps, qs)

    def _ref_step(self, stepped=True):
        if stepped:
            self.ref.step()
        self.applied = [n + 1 for n in self.applied]
        if self.sched is not None:
            self.sched.step()

    def _grads(self, data, label, actions=("new", "new", "none", "keep", "accumulate", "zeros")):
        """Gives both sides the same gradients; returns the indices (in ``pairs``) of those with elements."""
        pairs = list(self.pairs())
        acts = data.draw(st.lists(st.sampled_from(actions), min_size=len(pairs), max_size=len(pairs)), label=label)
        gen = torch.Generator().manual_seed(self.seed + 7919 * (self.t + 1))
        self.t += 1
        for (p, q), act in zip(pairs, acts):
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(self.dtype)
            if act == "zeros":  # signed zeros: sign() and maximize see them
                g.view(-1)[::2] = 0.0
                g.view(-1)[1::2] = -0.0
            if act == "none":
                p.grad = q.grad = None
            elif act == "accumulate" and p.grad is not None:
                p.grad.add_(g)
                q.grad.add_(g)
            elif act != "keep":
                p.grad, q.grad = (
                    (torch.empty_like(x).copy_(g) for x in (p, q)) if self.ref_fused else (g.clone(), g.clone())
                )
        return [i for i, (p, _) in enumerate(pairs) if p.grad is not None and p.grad.numel()]

    # ------------------------------------------------------------------ the invariant
    @precondition(lambda self: hasattr(self, "opt"))
    @invariant()
    def bit_identical_to_the_reference(self):
        assert len(self.opt.param_groups) == len(self.ref.param_groups) == len(self.a)
        for gi, (cg, tg) in enumerate(zip(self.opt.param_groups, self.ref.param_groups)):
            assert all(x is y for x, y in zip(cg["params"], self.a[gi])) and len(cg["params"]) == len(self.a[gi])
            assert cg["step"] == self.applied[gi], (gi, cg["step"], self.applied[gi])
            assert self.rule.shown(cg) == self.rule.shown(tg), (gi, self.rule.shown(cg), self.rule.shown(tg))
            for k in self.rule.hypers:
                if k in tg:
                    assert cg[k] == tg[k], (gi, k, cg[k], tg[k])
        for i, (p, q) in enumerate(self.pairs()):
            assert same_but_nan_payloads(p, q), f"parameter {i}"
            assert same_but_nan_payloads(p.grad, q.grad), f"gradient {i}"
            mine, theirs = self.opt.state.get(p, {}), self.ref.state.get(q, {})
            assert mine.keys() == theirs.keys(), (i, sorted(mine), sorted(theirs))
            for key, value in theirs.items():
                if key == "step":  # torch keeps a float32 tensor, clrfast the same or a number
                    assert float(mine[key]) == float(value), (i, key)
                else:
                    assert same_but_nan_payloads(mine[key], value), (i, key)

    # ------------------------------------------------------------------ rules: steps
    @rule(data=st.data())
    def step(self, data):
        self._grads(data, "grads")
        self.opt.step()  # with no gradient at all: no update, but the clock (and schedule) move, as torch's
        self._ref_step()

    @rule(data=st.data(), overflow=st.booleans(), unscale_first=st.booleans())
    def gradscaler_step(self, data, overflow, unscale_first):
        sc, sr = self.scalers
        scale = sc.get_scale()
        for p, q in self.pairs():
            p.grad = q.grad = None
        present = self._grads(data, "scaled grads", actions=("new", "none"))
        if not present:
            return  # GradScaler needs a gradient (it asserts otherwise); an inf needs an element
        pairs = list(self.pairs())
        for p, q in pairs:
            if p.grad is not None:
                p.grad.mul_(scale)
                q.grad.mul_(scale)
        if overflow:
            p, q = pairs[present[0]]
            first = (0,) * p.grad.dim()  # the gradients may be laid out as their (transposed) parameters
            p.grad[first] = q.grad[first] = float("inf")
        steps = [g["step"] for g in self.opt.param_groups]
        stateless = [q for _, q in pairs if not self.ref.state.get(q)]
        if unscale_first:  # as for gradient clipping
            sc.unscale_(self.opt)
            sr.unscale_(self.ref)
        sc.step(self.opt)
        sc.update()
        sr.step(self.ref)  # a for-loop reference has no fused contract: GradScaler unscales and skips it
        sr.update()
        assert [g["step"] for g in self.opt.param_groups] == [n + (not overflow) for n in steps]
        if not overflow:
            self._ref_step(stepped=False)  # torch's scheduler would move on at a skipped step; the clock does not
        else:
            if (
                self.ref_fused
            ):  # torch's fused step makes its zero state before it sees the inf; clrfast's skip does not
                for q in stateless:
                    self.ref.state.pop(q, None)
            if not unscale_first and self.opt.fused_unscale != self.ref_fused:
                # a skipped fused step leaves its gradients scaled; GradScaler unscaled the other side's
                for p, q in pairs:
                    g = q.grad if self.opt.fused_unscale else p.grad
                    if g is not None:
                        g.mul_(scale)
        assert sc.get_scale() == sr.get_scale()

    @rule(set_to_none=st.booleans())
    def zero_grad(self, set_to_none):
        self.opt.zero_grad(set_to_none=set_to_none)
        self.ref.zero_grad(set_to_none=set_to_none)

    # ------------------------------------------------------------------ rules: param_groups
    @rule(data=st.data())
    def write_group_values(self, data):
        """Other code (a scheduler, an lr finder) writes into a group: the next update applies it."""
        gi = data.draw(st.integers(0, len(self.a) - 1), label="group")
        cg, tg = self.opt.param_groups[gi], self.ref.param_groups[gi]
        if data.draw(st.booleans(), label="write lr"):
            lr = data.draw(st.one_of(st.sampled_from([0.0, 1e-4, 2e-2]), st.floats(0.0, 0.1)), label="lr")
            if self.rule.tensor_lr and data.draw(st.booleans(), label="as a tensor"):
                # float64 under a schedule: torch's schedulers fill a tensor lr in place, so a float32 one
                # would round their values
                wide = self.scheduled or data.draw(st.booleans(), label="float64")
                if wide and _adamw_f64_lr_on_a_scalar(self.rule, [p for p, _ in self.pairs()]):
                    return
                dtype = torch.float64 if wide else torch.float32
                cg["lr"], tg["lr"] = torch.tensor(lr, dtype=dtype), torch.tensor(lr, dtype=dtype)
            else:
                cg["lr"] = tg["lr"] = lr
        # a momentum turned on after the first step would need state the reference makes only then
        if self.rule.momentum_of(cg) > 0 and data.draw(st.booleans(), label="write momentum"):
            zero = "betas" in cg and not _adam_zero_beta1(self.rule)  # SGD's nesterov needs a momentum
            m = data.draw(
                st.sampled_from([0.0, 0.5, 0.9] if zero else [0.5, 0.9]) | st.floats(0.01, 0.99), label="momentum"
            )
            if isinstance(self.rule.momentum, tuple):
                key, _ = self.rule.momentum
                cg[key] = tg[key] = (m, *cg[key][1:])
            else:
                cg[self.rule.momentum] = tg[self.rule.momentum] = m
        for key, values in WRITES.items():
            if key not in self.rule.hypers or not data.draw(st.booleans(), label=f"write {key}"):
                continue
            value = data.draw(values, label=key)
            slot = NEEDS_STATE.get(key)
            if value and slot and not all(slot in self.ref.state[q] for q in self.b[gi] if q in self.ref.state):
                continue
            cg[key] = tg[key] = value

    @precondition(lambda self: not self.scheduled and len(self.a) < MAX_GROUPS)
    @rule(data=st.data())
    def add_param_group(self, data):
        # torch's CyclicLR cannot take a group added after it was built: unscheduled runs only
        specs = data.draw(st.lists(st.sampled_from(SPECS), min_size=1, max_size=2), label="specs")
        ps = [_param(t) for t in _tensors(specs, self.dtype, data.draw(st.integers(0, 2**16), label="seed"))]
        extra = data.draw(st.sampled_from([{}, {"lr": 2e-2}, {"lr": 2e-3, "weight_decay": 0.0}]), label="values")
        self.opt.add_param_group({"params": ps, **extra})
        qs = [_param(p) for p in ps]  # as laid out by flat mode, as in setup
        self.ref.add_param_group({"params": qs, **extra})
        self.a.append(ps)
        self.b.append(qs)
        self.applied.append(0)
        assert self.opt.param_groups[-1]["flat"] == self.flat

    # ------------------------------------------------------------------ rules: state dicts, copies
    def _fresh(self, keep_grads):
        a = [[_param(p) for p in ps] for ps in self.a]
        for p, q in zip([p for ps in a for p in ps], [p for ps in self.a for p in ps]):
            p.grad = q.grad.clone() if keep_grads and q.grad is not None else None
        # built as the run was (a state dict holds no defaults for later groups), but at another lr
        # and schedule: the load must bring the groups' values
        opt = self._ours(a, clr.Constant(1.0) if self.scheduled else None)
        for g in opt.param_groups:
            g["lr"] = 1.0
        for ps in a[len(opt.param_groups) :]:
            opt.add_param_group({"params": ps, "lr": 1.0})
        return a, opt

    @rule(how=st.sampled_from(["state_dict", "reference state_dict"]), keep_grads=st.booleans())
    def resume(self, how, keep_grads):
        """A fresh optimizer over new parameters loads a save of either side."""
        saved = _round_trip(self.opt.state_dict() if how == "state_dict" else self.ref.state_dict())
        a, opt = self._fresh(keep_grads)
        if how == "reference state_dict":  # the reference's groups carry no schedule or clock: give them this run's
            for g, old in zip(opt.param_groups, self.opt.param_groups):
                g["schedule"], g["step"] = old["schedule"], old["step"]
        opt.load_state_dict(saved)
        opt.fused_unscale = self.opt.fused_unscale
        if not keep_grads:
            for q in (q for qs in self.b for q in qs):
                q.grad = None
        self.a, self.opt = a, opt

    @rule()
    def reference_loads_our_state_dict(self):
        """clrfast's state dict is the reference's checkpoint: the reference loads it and carries on."""
        sd = copy.deepcopy(self.opt.state_dict())
        sd["param_groups"] = [{k: v for k, v in g.items() if k not in OWN_KEYS} for g in sd["param_groups"]]
        self.ref.load_state_dict(sd)

    @rule(how=st.sampled_from(["deepcopy", "torch.save", "pickle"]))
    def copy_optimizer_with_parameters(self, how):
        """The optimizer is copied together with its parameters and the copy replaces the live pair."""
        pair = (self.a, self.opt)
        if how == "deepcopy":
            a, self.opt = copy.deepcopy(pair)
        elif how == "torch.save":
            a, self.opt = _round_trip(pair)
        else:
            a, self.opt = pickle.loads(pickle.dumps(pair))
        for p, q in zip([p for ps in a for p in ps], [p for ps in self.a for p in ps]):
            # a copied nn.Parameter has no gradient: the training loop's next backward gives it one
            p.grad = None if q.grad is None else q.grad.clone()
        self.a = a

    # ------------------------------------------------------------------ rules: refused operations
    def _expect_failure(self, what, action, errors, match=None):
        snap = snapshot(self.opt)
        with pytest.raises(errors, match=match):
            action()
        assert_unchanged(self.opt, snap, what)

    def _with_grad(self, data):
        ps = [p for p, _ in self.pairs() if p.grad is not None]
        return ps[data.draw(st.integers(0, len(ps) - 1), label="parameter")] if ps else None

    @rule(data=st.data(), extra=st.sampled_from([1, 5]))
    def wrong_size_gradient(self, data, extra):
        p = self._with_grad(data)
        if p is None:
            return
        alias = p.grad.detach()
        p.grad.set_(torch.ones(p.numel() + extra, dtype=p.dtype))
        self._expect_failure("step with a wrong-size gradient", self.opt.step, ValueError)
        p.grad.set_(alias)

    @rule(data=st.data())
    def sparse_gradient(self, data):
        p = self._with_grad(data)
        if p is None or p.dim() == 0:
            return
        old = p.grad
        p.grad = old.to_sparse()
        self._expect_failure("step with a sparse gradient", self.opt.step, ValueError, match="sparse")
        p.grad = old

    @rule(data=st.data(), bad=st.sampled_from(BAD_WRITES))
    def bad_value_written_to_a_group(self, data, bad):
        gi = data.draw(st.integers(0, len(self.a) - 1), label="group")
        group = self.opt.param_groups[gi]
        key, value = bad
        saved = group[key]
        group[key] = value
        self._expect_failure(f"step with param_groups[{gi}] {bad}", self.opt.step, (ValueError, TypeError))
        group[key] = saved


SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _machine(name: str, flat: bool):
    r = RULES[name]
    machine = type(f"{name}{'Flat' if flat else 'List'}Machine", (RuleMachine,), {"rule": r, "flat": flat})
    case = machine.TestCase
    case.settings = SETTINGS
    for mark in r.marks:
        case = mark(case)
    return case


for _name in RULES:
    for _flat in (False, True):
        globals()[f"Test{_name}{'Flat' if _flat else 'List'}"] = _machine(_name, _flat)


# --------------------------------------------------------------------------- bugs the machine found
FOREACH = {"reference": "foreach"}  # the for-loop path, where the two differences below are


@pytest.mark.xfail(
    strict=True, reason="CLRAdam/CLRAdamW: beta1=0 and a -0.0 gradient give exp_avg -0.0; torch's lerp gives +0.0"
)
@pytest.mark.parametrize("name", ["CLRAdam", "CLRAdamW"])
def test_adam_beta1_zero_keeps_torchs_signed_zero_in_exp_avg(name):
    r = RULES[name]
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    oa, ob = r.make([a], None, lr=1e-3, base=FOREACH), r.make_reference([b], 1e-3, base=FOREACH)
    for o in (oa, ob):
        o.param_groups[0]["betas"] = (0.0, 0.999)
    a.grad, b.grad = torch.tensor([0.0, -0.0]), torch.tensor([0.0, -0.0])
    oa.step()
    ob.step()
    assert same(oa.state[a]["exp_avg"], ob.state[b]["exp_avg"])


@pytest.mark.parametrize("name", ["CLRAdam", "CLRAdamW"])
def test_adam_beta1_zero_signed_zeros_match_torchs_fused_body_and_tail(name):
    # torch's fused kernel: -0.0 in its vector body, +0.0 in its scalar tail (g - (g - m) * 0)
    r = RULES[name]
    grad = torch.tensor([0.0, -0.0] * 10)  # 16 in the vector body, 4 in the tail
    a, b = torch.nn.Parameter(torch.ones(20)), torch.nn.Parameter(torch.ones(20))
    oa, ob = r.make([a], None, lr=1e-3, base={}), r.make_reference([b], 1e-3, base={})
    for o in (oa, ob):
        o.param_groups[0]["betas"] = (0.0, 0.999)
    a.grad, b.grad = grad.clone(), grad.clone()
    oa.step()
    ob.step()
    assert same(oa.state[a]["exp_avg"], ob.state[b]["exp_avg"])
    assert torch.equal(torch.signbit(ob.state[b]["exp_avg"][1::2]), torch.tensor([True] * 8 + [False] * 2))


@pytest.mark.xfail(
    strict=True, reason="CLRAdamW: a float64 tensor lr on a 0-d float32 parameter with weight decay is 1 ulp off torch"
)
def test_adamw_f64_tensor_lr_on_a_0d_parameter():
    # torch's param.mul_(1 - lr*wd) promotes a 0-d float32 parameter with the 0-d float64 factor to float64
    r = RULES["CLRAdamW"]
    a, b = torch.nn.Parameter(torch.tensor(1.5)), torch.nn.Parameter(torch.tensor(1.5))
    oa, ob = (
        r.make([a], None, lr=1e-3, base={"weight_decay": 1e-2, **FOREACH}),
        r.make_reference([b], 1e-3, base={"weight_decay": 1e-2, **FOREACH}),
    )
    for o in (oa, ob):
        o.param_groups[0]["lr"] = torch.tensor(0.02, dtype=torch.float64)
    a.grad, b.grad = torch.tensor(0.3), torch.tensor(0.3)
    oa.step()
    ob.step()
    assert same(a, b), (a.item(), b.item())
