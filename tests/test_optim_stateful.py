"""CLRSGD and torch.optim.SGD + CyclicLR driven side by side through what only SGD has.

tests/test_rule_stateful.py runs every rule (CLRSGD among them) beside its reference; this
machine adds what is SGD's own: per-group schedules with groups added under their own CyclicLR,
momentum buffers reset, replaced or of another dtype, nesterov and dampening, model dtype
conversions and in-place transposes, and SGD's state-dict and param-group checks.

A hypothesis state machine keeps twin parameter sets: one optimised by ``CLRSGD`` (list or
flat mode), one by ``torch.optim.SGD(foreach=False)`` with ``CyclicLR`` (the reference). Each
rule does to both sides what a training loop, a checkpointing library or a careless user
does: steps with random, missing or non-finite gradients, ``zero_grad`` both ways,
``add_param_group``, state-dict save/load across both formats, deepcopy and pickle,
GradScaler steps and skips, model dtype conversions, writes to ``param_groups``. After
every rule the parameters, gradients and momentum buffers must be bit-identical (NaN
payloads included), the groups must show torch's lr and momentum, and each group's clock
must equal the number of updates applied to it. A rule that makes ``CLRSGD`` fail
(a wrong-size buffer, a gradient of another dtype, a bad state dict or group) must
raise a clear error and leave parameters, gradients, state and ``param_groups`` exactly as
they were.

A parameter group added after construction is modelled on the torch side by its own
SGD + CyclicLR pair: torch's CyclicLR cannot take a group added after it was built, and
groups are independent in SGD, so the pair gives the numbers the group must follow.
"""

from __future__ import annotations

import copy
import io
import math
import pickle
import warnings
from dataclasses import dataclass, field

import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRSGD  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule  # noqa: E402
from twins import assert_unchanged, bits, same, snapshot  # noqa: E402

# Built on the loaded profile (conftest: derandomized under CI).
SETTINGS = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NAN, INF = float("nan"), float("inf")
_OTHER = {torch.float32: torch.float64, torch.float64: torch.float32}
MAX_GROUPS = 4


# --------------------------------------------------------------------------- comparisons
def describe(t) -> str:
    return "None" if t is None else f"{t.dtype} {tuple(t.shape)} {t.detach().tolist()}"


def buffer(opt, p):
    st_ = opt.state.get(p)
    return None if st_ is None else st_.get("momentum_buffer")


# --------------------------------------------------------------------------- specifications
@dataclass
class GroupSpec:
    """One param group: its tensors, hyperparameters and CyclicLR bounds."""

    shapes: list
    dtypes: list
    transposed: list
    base_lr: float
    max_lr: float
    base_momentum: float
    max_momentum: float
    momentum: float  # the constant momentum (unused when the unit cycles momentum)
    dampening: float
    weight_decay: float
    nesterov: bool
    maximize: bool
    flat: bool | None = None  # an explicit 'flat' key for an added group (None: the default)


@dataclass
class UnitSpec:
    """Groups that share one torch SGD + CyclicLR (the constructor's groups, or one added group)."""

    up: int
    down: int | None
    cycle_momentum: bool
    groups: list
    scheduled: bool = True  # False: CLRSGD's schedule=None (plain SGD on group['lr']), torch's SGD alone


@dataclass(eq=False)
class Unit:
    spec: UnitSpec
    indices: list  # the CLRSGD param group index of each of the unit's groups
    opt: torch.optim.SGD = None
    sched: torch.optim.lr_scheduler.CyclicLR = None
    params: list = field(default_factory=list)  # per group, the torch-side parameters


SHAPES = [(3,), (2, 3), (4, 1, 2), (), (0,), (5,), (2, 2), (3, 3)]


@st.composite
def group_specs(draw, cycle_momentum: bool, n_tensors=(1, 3), dtype=None):
    n = draw(st.integers(*n_tensors))
    shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=n, max_size=n))
    base_dtype = dtype or draw(st.sampled_from([torch.float32, torch.float32, torch.float64]))
    dtypes = [draw(st.sampled_from([base_dtype, base_dtype, _OTHER[base_dtype]])) for _ in shapes]
    transposed = [len(s) == 2 and draw(st.booleans()) for s in shapes]
    momentum = 0.0 if cycle_momentum else draw(st.sampled_from([0.0, 0.5, 0.9]))
    has_momentum = cycle_momentum or momentum > 0
    nesterov = has_momentum and draw(st.booleans())
    dampening = 0.0 if nesterov else draw(st.sampled_from([0.0, 0.0, 0.3, 1.0]))
    return GroupSpec(
        shapes=shapes,
        dtypes=dtypes,
        transposed=transposed,
        base_lr=draw(st.sampled_from([0.01, 0.05, 0.1])),
        max_lr=draw(st.sampled_from([0.1, 0.5, 1.0])),
        base_momentum=draw(st.sampled_from([0.5, 0.8])),
        max_momentum=draw(st.sampled_from([0.9, 0.95])),
        momentum=momentum,
        dampening=dampening,
        weight_decay=draw(st.sampled_from([0.0, 0.0, 1e-2, 0.5])),
        nesterov=nesterov,
        maximize=draw(st.booleans()),
    )


@st.composite
def unit_specs(draw, max_groups=2):
    cycle = draw(st.booleans())
    n = draw(st.integers(1, max_groups))
    return UnitSpec(
        up=draw(st.sampled_from([1, 2, 3, 5])),
        down=draw(st.sampled_from([None, 1, 4])),
        cycle_momentum=cycle,
        groups=[draw(group_specs(cycle)) for _ in range(n)],
    )


def schedule_of(unit: UnitSpec, g: GroupSpec) -> clr.Cyclic:
    kw = dict(base_momentum=g.base_momentum, max_momentum=g.max_momentum) if unit.cycle_momentum else {}
    return clr.Cyclic(g.base_lr, g.max_lr, step_size_up=unit.up, step_size_down=unit.down, **kw)


def clr_group(unit: UnitSpec, g: GroupSpec, params) -> dict:
    d = dict(
        params=params,
        schedule=schedule_of(unit, g),
        momentum=g.momentum,
        dampening=g.dampening,
        weight_decay=g.weight_decay,
        nesterov=g.nesterov,
        maximize=g.maximize,
    )
    if not unit.scheduled:
        d.update(schedule=None, lr=g.base_lr)
    if g.flat is not None:
        d["flat"] = g.flat
    return d


def build_torch(unit: Unit) -> None:
    """A fresh SGD + CyclicLR over ``unit.params``, as the unit's specification gives them."""
    s = unit.spec
    groups = [
        dict(
            params=ps,
            momentum=g.max_momentum if s.cycle_momentum else g.momentum,
            dampening=g.dampening,
            weight_decay=g.weight_decay,
            nesterov=g.nesterov,
            maximize=g.maximize,
        )
        for g, ps in zip(s.groups, unit.params)
    ]
    unit.opt = torch.optim.SGD(groups, lr=s.groups[0].base_lr, foreach=False)
    if not s.scheduled:
        unit.sched = None
        return
    unit.sched = torch.optim.lr_scheduler.CyclicLR(
        unit.opt,
        [g.base_lr for g in s.groups],
        [g.max_lr for g in s.groups],
        step_size_up=s.up,
        step_size_down=s.down,
        cycle_momentum=s.cycle_momentum,
        base_momentum=[g.base_momentum for g in s.groups],
        max_momentum=[g.max_momentum for g in s.groups],
    )


def make_tensors(g: GroupSpec, seed: int) -> list:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape, dtype, tr in zip(g.shapes, g.dtypes, g.transposed):
        if tr:
            t = torch.randn(shape[::-1], generator=gen, dtype=torch.float64).to(dtype).t()
        else:
            t = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        out.append(t)
    return out


def param(t: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(t.detach().clone(memory_format=torch.preserve_format))


def set_element(t: torch.Tensor, i: int, value: float) -> None:
    if t.numel() == 0:
        return
    i %= t.numel()
    idx = []
    for n in reversed(t.shape):
        idx.append(i % n)
        i //= n
    t[tuple(reversed(idx))] = value


def torch_round_trip(obj, weights_only=True):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=weights_only)


GRAD_ACTIONS = ["new", "new", "new", "none", "keep", "inplace", "accumulate", "strided", "zeros"]


# --------------------------------------------------------------------------- the machine
class TwinOptimizers(RuleBasedStateMachine):
    """CLRSGD (``self.opt`` over ``self.cparams``) and torch's SGD + CyclicLR units side by side."""

    flat = False

    # ------------------------------------------------------------------ setup
    @initialize(
        spec=unit_specs(),
        seed=st.integers(0, 2**16),
        threads=st.sampled_from([None, 1, 2]),
        scale_exp=st.integers(0, 12),
        fused_unscale=st.booleans(),
    )
    def setup(self, spec, seed, threads, scale_exp, fused_unscale):
        if self.flat:  # one dtype per flat group
            for g in spec.groups:
                g.dtypes = [g.dtypes[0]] * len(g.dtypes)
        self.threads = threads
        tensors = [make_tensors(g, seed + 7919 * i) for i, g in enumerate(spec.groups)]
        self.cparams = [[param(t) for t in ts] for ts in tensors]
        unit = Unit(spec, list(range(len(spec.groups))), params=[[param(t) for t in ts] for ts in tensors])
        build_torch(unit)
        self.units = [unit]
        g0 = spec.groups[0]
        groups = [{"params": self.cparams[0]}] + [
            clr_group(spec, g, ps) for g, ps in zip(spec.groups[1:], self.cparams[1:])
        ]
        self.opt = CLRSGD(
            groups,
            schedule_of(spec, g0),
            momentum=g0.momentum,
            dampening=g0.dampening,
            weight_decay=g0.weight_decay,
            nesterov=g0.nesterov,
            maximize=g0.maximize,
            flat=self.flat,
            threads=threads,
        )
        self.opt.fused_unscale = fused_unscale  # GradScaler unscales, or the kernel does as it reads
        self.applied = [0] * len(spec.groups)
        self.scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**scale_exp, growth_interval=3) for _ in range(2)]
        for s in self.scalers:
            s.scale(torch.ones(()))  # initialises the scale, as scaling the first loss does

    # ------------------------------------------------------------------ views of both sides
    def tgroups(self):
        """(torch group, torch params) for each CLRSGD group index, in order."""
        out = {}
        for u in self.units:
            for gi, tg, ps in zip(u.indices, u.opt.param_groups, u.params):
                out[gi] = (u, tg, ps)
        return [out[i] for i in range(len(out))]

    def pairs(self):
        """(CLRSGD param, torch param, torch unit) for every parameter."""
        for cps, (u, _, tps) in zip(self.cparams, self.tgroups()):
            for p, q in zip(cps, tps):
                yield p, q, u

    def all_cparams(self):
        return [p for ps in self.cparams for p in ps]

    # ------------------------------------------------------------------ invariants
    @invariant()
    def bit_identical_to_torch(self):
        assert len(self.opt.param_groups) == len(self.applied) == len(self.cparams)
        for gi, (cg, (_, tg, _)) in enumerate(zip(self.opt.param_groups, self.tgroups())):
            assert len(cg["params"]) == len(self.cparams[gi])
            assert all(a is b for a, b in zip(cg["params"], self.cparams[gi]))
            assert cg["step"] == self.applied[gi], (gi, cg["step"], self.applied[gi])
            assert cg["lr"] == tg["lr"], (gi, cg["lr"], tg["lr"])
            assert cg["momentum"] == tg["momentum"], (gi, cg["momentum"], tg["momentum"])
            for k in ("dampening", "weight_decay", "nesterov", "maximize"):
                assert cg[k] == tg[k], (gi, k, cg[k], tg[k])
        for i, (p, q, u) in enumerate(self.pairs()):
            assert same(p, q), f"param {i}: {describe(p)} != {describe(q)}"
            assert same(p.grad, q.grad), f"grad {i}: {describe(p.grad)} != {describe(q.grad)}"
            b, tb = buffer(self.opt, p), buffer(u.opt, q)
            assert same(b, tb), f"momentum buffer {i}: {describe(b)} != {describe(tb)}"

    # ------------------------------------------------------------------ helpers
    def draw_grads(self, data, actions=GRAD_ACTIONS, scale=1.0, label="grads"):
        """Gives both sides the same gradients; returns how many parameters hold one."""
        seed = data.draw(st.integers(0, 2**16), label=f"{label} seed")
        gen = torch.Generator().manual_seed(seed)
        pairs = list(self.pairs())
        acts = data.draw(
            st.lists(st.sampled_from(actions), min_size=len(pairs), max_size=len(pairs)), label=f"{label} actions"
        )
        values = [NAN, INF, -INF]
        bad = data.draw(
            st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99), st.sampled_from(values)), max_size=2),
            label=f"{label} non-finite",
        )
        mag = data.draw(st.sampled_from([1.0, 1.0, 1e3]), label=f"{label} magnitude")
        for k, ((p, q, _), act) in enumerate(zip(pairs, acts)):
            if act == "none":
                p.grad = q.grad = None
                continue
            if act == "keep":
                continue
            shape = p.shape
            if act == "strided" and len(shape) == 2:
                g = torch.randn(shape[::-1], generator=gen, dtype=torch.float64).t()
            else:
                g = torch.randn(shape, generator=gen, dtype=torch.float64)
            g = (g * mag * scale).to(p.dtype) if act != "zeros" else torch.zeros_like(g, dtype=p.dtype)
            for i, (pi, ei, v) in enumerate(bad):
                if pi % len(pairs) == k:
                    set_element(g, ei + i, v * (scale if math.isfinite(v) else 1.0))
            if act in ("inplace", "accumulate") and p.grad is not None and q.grad is not None:
                if act == "inplace":
                    p.grad.copy_(g)
                    q.grad.copy_(g)
                else:
                    p.grad.add_(g)
                    q.grad.add_(g)
            else:
                p.grad = g.clone(memory_format=torch.preserve_format)
                q.grad = g.clone(memory_format=torch.preserve_format)
        return sum(p.grad is not None for p, _, _ in pairs)

    def torch_step_all(self):
        for u in self.units:
            u.opt.step()
            if u.sched is not None:
                u.sched.step()
        self.applied = [a + 1 for a in self.applied]

    def pick(self, data, items, label):
        return items[data.draw(st.integers(0, len(items) - 1), label=label)]

    # ------------------------------------------------------------------ rules: steps
    @rule(data=st.data())
    def step(self, data):
        self.draw_grads(data)
        self.opt.step()
        self.torch_step_all()

    @rule(set_to_none=st.booleans(), module=st.booleans(), data=st.data())
    def zero_grad(self, set_to_none, module, data):
        if not module:
            self.opt.zero_grad(set_to_none=set_to_none)
            for u in self.units:
                u.opt.zero_grad(set_to_none=set_to_none)
            return
        # module style, on all parameters or on a "submodule" (a subset)
        pairs = list(self.pairs())
        keep = data.draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)), label="submodule")
        cp = [p for (p, _, _), k in zip(pairs, keep) if k]
        tp = [q for (_, q, _), k in zip(pairs, keep) if k]
        torch.nn.ParameterList(cp).zero_grad(set_to_none=set_to_none)
        torch.nn.ParameterList(tp).zero_grad(set_to_none=set_to_none)

    @rule(data=st.data())
    def gradscaler_step(self, data):
        """A GradScaler step, skipped on both sides when a gradient is not finite."""
        sc, st_ = self.scalers
        assert sc.get_scale() == st_.get_scale()
        scale = sc.get_scale()
        if not self.draw_grads(
            data, actions=["new", "new", "none", "inplace", "strided"], scale=scale, label="scaled grads"
        ):
            return  # GradScaler needs at least one gradient (it asserts otherwise)
        unscaled = data.draw(st.booleans(), label="unscale_ first")
        if unscaled:  # as for gradient clipping
            sc.unscale_(self.opt)
        sc.step(self.opt)
        sc.update()
        # torch's side: one optimizer per unit, skipped together as one optimizer is
        stepped = [u for u in self.units if any(q.grad is not None for qs in u.params for q in qs)]
        for u in stepped:
            st_.unscale_(u.opt)
        found = any(
            not torch.isfinite(q.grad).all() for u in stepped for qs in u.params for q in qs if q.grad is not None
        )
        if not found:
            for u in self.units:
                if u in stepped:
                    st_.step(u.opt)
                else:
                    u.opt.step()
                if u.sched is not None:
                    u.sched.step()
            self.applied = [a + 1 for a in self.applied]
        elif not unscaled and self.opt.fused_unscale:
            # torch unscaled the gradients in place; a fused optimizer that skips leaves them scaled
            for u in stepped:
                for ps in u.params:
                    for q in ps:
                        if q.grad is not None:
                            q.grad.mul_(scale)
        st_.update()
        assert sc.get_scale() == st_.get_scale()

    # ------------------------------------------------------------------ rules: param_groups
    @precondition(lambda self: len(self.applied) < MAX_GROUPS)
    @rule(data=st.data())
    def add_param_group(self, data):
        cycle = data.draw(st.booleans(), label="cycle momentum")
        dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype") if self.flat else None
        g = data.draw(group_specs(cycle, n_tensors=(1, 2), dtype=dtype), label="group")
        if self.flat:
            g.dtypes = [g.dtypes[0]] * len(g.dtypes)
            g.flat = data.draw(st.sampled_from([None, True, False]), label="flat")
        spec = UnitSpec(
            up=data.draw(st.sampled_from([1, 2, 4]), label="up"),
            down=data.draw(st.sampled_from([None, 3]), label="down"),
            cycle_momentum=cycle,
            groups=[g],
            scheduled=cycle or data.draw(st.sampled_from([True, True, False]), label="scheduled"),
        )
        tensors = make_tensors(g, data.draw(st.integers(0, 2**16), label="seed"))
        cps = [param(t) for t in tensors]
        gi = len(self.applied)
        unit = Unit(spec, [gi], params=[[param(t) for t in tensors]])
        self.opt.add_param_group(clr_group(spec, g, cps))
        build_torch(unit)
        self.units.append(unit)
        self.cparams.append(cps)
        self.applied.append(0)
        assert self.opt.param_groups[-1]["flat"] == (self.flat if g.flat is None else g.flat)

    @rule(data=st.data())
    def write_group_values(self, data):
        """Other code (a scheduler, an lr finder) writes lr or momentum into a group: the next update applies it."""
        tg_all = self.tgroups()
        gi = data.draw(st.integers(0, len(tg_all) - 1), label="group")
        cg, (_, tg, _) = self.opt.param_groups[gi], tg_all[gi]
        if data.draw(st.booleans(), label="write lr"):
            lr = data.draw(st.sampled_from([0.0, 0.02, 0.3]), label="lr")
            if data.draw(st.booleans(), label="as a tensor"):  # as DCP writes it; one tensor per side
                # float64: torch's schedulers fill a tensor lr in place, so a float32 one would round their values
                cg["lr"], tg["lr"] = torch.tensor(lr, dtype=torch.float64), torch.tensor(lr, dtype=torch.float64)
            else:
                cg["lr"] = tg["lr"] = lr
        if data.draw(st.booleans(), label="write momentum"):
            choices = [0.7, 0.95] if cg["nesterov"] else [0.0, 0.7, 0.95]
            m = data.draw(st.sampled_from(choices), label="momentum")
            cg["momentum"] = tg["momentum"] = m
        if data.draw(st.booleans(), label="write other values"):  # torch reads every group value at each step
            cg["weight_decay"] = tg["weight_decay"] = data.draw(st.sampled_from([0.0, 0.1]), label="weight_decay")
            cg["maximize"] = tg["maximize"] = data.draw(st.booleans(), label="maximize")
            if not cg["nesterov"]:
                cg["dampening"] = tg["dampening"] = data.draw(st.sampled_from([0.0, 0.5]), label="dampening")

    # ------------------------------------------------------------------ rules: state dicts, copies
    @rule(keep_grads=st.booleans())
    def save_and_resume(self, keep_grads):
        """Both sides save, and a freshly built twin (new parameters, new optimizer) loads."""
        sd = torch_round_trip(self.opt.state_dict())
        new = []
        for ps in self.cparams:
            qs = [param(p) for p in ps]
            for p, q in zip(ps, qs):
                if keep_grads and p.grad is not None:
                    q.grad = p.grad.clone(memory_format=torch.preserve_format)
            new.append(qs)
        # a flat group whose parameters were converted to mixed dtypes resumes in list mode (a new flat
        # group refuses them)
        groups = [
            {"params": qs, "schedule": clr.Constant(1.0), "flat": g["flat"] and len({q.dtype for q in qs}) < 2}
            for qs, g in zip(new, self.opt.param_groups)
        ]
        fresh = CLRSGD(groups, clr.Constant(0.5), momentum=0.5, flat=self.flat, threads=self.threads)
        fresh.load_state_dict(sd)
        self.opt, self.cparams = fresh, new
        for u in self.units:
            osd = torch_round_trip(u.opt.state_dict())
            ssd = torch_round_trip(u.sched.state_dict(), weights_only=False) if u.sched is not None else None
            old, u.params = u.params, [[param(q) for q in qs] for qs in u.params]
            for qs_old, qs_new in zip(old, u.params):
                for q, r in zip(qs_old, qs_new):
                    if keep_grads and q.grad is not None:
                        r.grad = q.grad.clone(memory_format=torch.preserve_format)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build_torch(u)
            u.opt.load_state_dict(osd)
            if u.sched is not None:
                u.sched.load_state_dict(ssd)

    @rule()
    def torch_loads_clrsgd_state_dict(self):
        """CLRSGD's state dict is a torch SGD checkpoint: a new torch SGD loads it and carries on."""
        sd = copy.deepcopy(self.opt.state_dict())
        for u in self.units:
            ssd = u.sched.state_dict() if u.sched is not None else None
            # a torch user keeps torch's keys; clrfast's would come back stale into a later CLRSGD load
            sub = {
                "param_groups": [
                    {k: v for k, v in sd["param_groups"][gi].items() if k not in ("schedule", "step", "flat")}
                    for gi in u.indices
                ]
            }
            ids = {i for g in sub["param_groups"] for i in g["params"]}
            sub["state"] = {k: v for k, v in sd["state"].items() if k in ids}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build_torch(u)
            u.opt.load_state_dict(copy.deepcopy(sub))  # a load keeps the tensors it is given
            if u.sched is not None:
                u.sched.load_state_dict(ssd)
        # torch's load casts state to the parameter's dtype: CLRSGD resumes from the same dict in place
        self.opt.load_state_dict(sd)

    @precondition(lambda self: len(self.units) == 1)
    @rule()
    def clrsgd_loads_torch_state_dict(self):
        """A torch SGD checkpoint loads into CLRSGD (keys torch lacks keep their values); torch resumes from it too."""
        sd = self.units[0].opt.state_dict()
        self.opt.load_state_dict(copy.deepcopy(sd))
        self.units[0].opt.load_state_dict(copy.deepcopy(sd))  # torch's load casts state to the parameter's dtype

    @rule(how=st.sampled_from(["deepcopy", "torch.save", "pickle"]))
    def copy_optimizer_with_parameters(self, how):
        """The optimizer is copied together with its parameters and the copy replaces the live pair."""
        pair = (self.cparams, self.opt)
        if how == "deepcopy":
            self.cparams, self.opt = copy.deepcopy(pair)
        elif how == "torch.save":
            self.cparams, self.opt = torch_round_trip(pair, weights_only=False)
        else:
            self.cparams, self.opt = pickle.loads(pickle.dumps(pair))
        # A copied nn.Parameter has no gradient. torch's side: new parameters, its optimizer rebuilt with the
        # same group values and copies of the same state tensors (a copy keeps a buffer's dtype, a load casts it).
        for u in self.units:
            osd = copy.deepcopy(u.opt.state_dict())
            ssd = u.sched.state_dict() if u.sched is not None else None
            old, u.params = u.params, [[param(q) for q in qs] for qs in u.params]
            state = [copy.deepcopy(dict(u.opt.state.get(q, {}))) for qs in old for q in qs]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build_torch(u)
            u.opt.load_state_dict(osd)
            if u.sched is not None:
                u.sched.load_state_dict(ssd)
            for q, entry in zip([q for qs in u.params for q in qs], state):
                if entry:
                    u.opt.state[q] = entry

    # ------------------------------------------------------------------ rules: model conversions
    @rule(data=st.data())
    def convert_parameter(self, data):
        """``model.to()``-style: a parameter (and its gradient) gets new storage, maybe another dtype."""
        pairs = list(self.pairs())
        p, q, _ = self.pick(data, pairs, "parameter")
        dtype = data.draw(st.sampled_from([p.dtype, _OTHER[p.dtype]]), label="dtype")
        for t in (p, q):  # flat groups follow a parameter out of the flat storage
            t.data = t.data.to(dtype, copy=True)
            if t.grad is not None:
                t.grad.data = t.grad.data.to(dtype, copy=True)

    @rule(data=st.data(), how=st.sampled_from(["clear", "delete entry", "zeros", "clone"]))
    def reset_momentum_state(self, data, how):
        """User code resets or replaces momentum state (as torch users do between training phases)."""
        if how == "clear":
            self.opt.state.clear()
            for u in self.units:
                u.opt.state.clear()
            return
        pairs = [(p, q, u) for p, q, u in self.pairs() if buffer(self.opt, p) is not None]
        if not pairs:
            return
        p, q, u = self.pick(data, pairs, "parameter")
        for opt, t in ((self.opt, p), (u.opt, q)):
            if how == "delete entry":
                del opt.state[t]
            else:
                b = buffer(opt, t)
                opt.state[t]["momentum_buffer"] = torch.zeros_like(b) if how == "zeros" else b.clone()

    @rule(data=st.data())
    def momentum_buffer_in_another_dtype(self, data):
        """A momentum buffer of another floating dtype than its parameter (legal in torch)."""
        pairs = [(p, q, u) for p, q, u in self.pairs() if buffer(self.opt, p) is not None]
        if not pairs:
            return
        p, q, u = self.pick(data, pairs, "parameter")
        dtype = _OTHER[buffer(self.opt, p).dtype]
        self.opt.state[p]["momentum_buffer"] = buffer(self.opt, p).to(dtype)
        u.opt.state[q]["momentum_buffer"] = buffer(u.opt, q).to(dtype)

    def _square(self, data, grads=False):
        pairs = [
            (p, q)
            for p, q, _ in self.pairs()
            if p.dim() == 2
            and p.shape[0] == p.shape[1]
            and (not grads or (p.grad is not None and p.grad.layout == torch.strided))
        ]
        return self.pick(data, pairs, "square parameter") if pairs else (None, None)

    @rule(data=st.data())
    def transpose_parameter_in_place(self, data):
        """``p.data = p.data.t()`` on a square parameter: same memory, same size, other strides (legal in torch)."""
        p, q = self._square(data)
        if p is None:
            return
        for t in (p, q):
            t.data = t.data.t()

    @rule(data=st.data())
    def transpose_gradient_in_place(self, data):
        """``p.grad.data = p.grad.data.t()`` on a square parameter: the gradient's strides change, not its memory."""
        p, q = self._square(data, grads=True)
        if p is None or q.grad is None:
            return
        for t in (p, q):
            t.grad.data = t.grad.data.t()

    @rule(data=st.data())
    def reshaped_parameter_view(self, data):
        """``p.data = p.data.view(other shape)`` (same memory and size) with the old gradient: torch raises too."""
        p = self._with_grad(data)
        if p is None or p.dim() == 0 or p.numel() == 0:
            return
        old = p.data
        p.data = p.data.reshape(-1, 1) if p.dim() == 1 else p.data.reshape(-1)
        self._expect_failure("step after a reshaped .data", self.opt.step, (ValueError, RuntimeError))
        p.data = old

    # ------------------------------------------------------------------ rules: failing operations
    def _expect_failure(self, what, action, errors, match=None):
        snap = snapshot(self.opt)
        with pytest.raises(errors, match=match):
            action()
        assert_unchanged(self.opt, snap, what)

    def _with_grad(self, data):
        ps = [p for p in self.all_cparams() if p.grad is not None and p.grad.layout == torch.strided]
        return self.pick(data, ps, "parameter") if ps else None

    @rule(data=st.data())
    def gradient_of_another_dtype(self, data):
        p = self._with_grad(data)
        if p is None or p.numel() == 0:  # no memory to misread (and torch accepts it)
            return
        alias = p.grad.data
        p.grad.data = p.grad.data.to(data.draw(st.sampled_from([_OTHER[p.dtype], torch.float16, torch.int32])))
        self._expect_failure("step with a gradient of another dtype", self.opt.step, (ValueError, TypeError))
        p.grad.data = alias

    @rule(data=st.data())
    def wrong_size_parameter_data(self, data):
        """``p.data`` replaced by a tensor of another size: checked against the gradient, in flat groups too."""
        p = self._with_grad(data)
        if p is None:
            return
        old = p.data
        p.data = torch.ones(p.numel() + 3, dtype=p.dtype)
        self._expect_failure("step after a wrong-size .data", self.opt.step, ValueError)
        p.data = old

    @rule(data=st.data(), kind=st.sampled_from(["size", "int", "list"]))
    def bad_momentum_buffer_in_state(self, data, kind):
        p = self._with_grad(data)
        if p is None:
            return
        had_entry = p in self.opt.state
        old = buffer(self.opt, p)
        bad = {
            "size": torch.zeros(p.numel() + 2, dtype=p.dtype),
            "int": torch.zeros(p.shape, dtype=torch.int32),
            "list": [0.0] * p.numel(),
        }[kind]
        self.opt.state[p]["momentum_buffer"] = bad
        if self._group_of(p)["momentum"] != 0:  # torch, too, ignores the buffer of a group without momentum
            self._expect_failure(f"step with a {kind} momentum buffer", self.opt.step, (ValueError, TypeError))
        if old is not None:
            self.opt.state[p]["momentum_buffer"] = old
        elif had_entry:
            del self.opt.state[p]["momentum_buffer"]
        else:
            del self.opt.state[p]

    def _group_of(self, p):
        return next(g for g in self.opt.param_groups if any(q is p for q in g["params"]))

    @rule(data=st.data(), kind=st.sampled_from(["size", "int", "not a tensor", "unknown id", "not a dict"]))
    def load_bad_state(self, data, kind):
        sd = copy.deepcopy(self.opt.state_dict())
        ids = [i for g in sd["param_groups"] for i in g["params"]]
        shapes = [p.shape for p in self.all_cparams()]
        i = data.draw(st.integers(0, len(ids) - 1), label="parameter")
        entry = {
            "size": {"momentum_buffer": torch.zeros(math.prod(shapes[i]) + 1)},
            "int": {"momentum_buffer": torch.zeros(shapes[i], dtype=torch.int64)},
            "not a tensor": {"momentum_buffer": "x"},
            "unknown id": {"momentum_buffer": torch.zeros(shapes[i])},
            "not a dict": 3,
        }[kind]
        sd["state"][ids[i] if kind != "unknown id" else max(ids) + 100] = entry
        self._expect_failure(
            f"load_state_dict with a bad state entry ({kind})",
            lambda: self.opt.load_state_dict(sd),
            (ValueError, TypeError),
        )

    BAD_GROUP_VALUES = [
        ("step", 2**70),
        ("step", -1),
        ("step", 1.5),
        ("step", "3"),
        ("momentum", -1.0),
        ("momentum", "x"),
        ("momentum", NAN),
        ("weight_decay", -1.0),
        ("dampening", "x"),
        ("nesterov", "yes"),
        ("maximize", 2),
        ("schedule", "bogus"),
        ("schedule", {"clrfast_schedule": 1, "type": "Nope", "params": {}}),
        ("schedule", {"clrfast_schedule": 1, "type": "Cyclic", "params": {"base_lr": -1.0, "max_lr": 0.1}}),
    ]

    @rule(data=st.data(), bad=st.sampled_from(BAD_GROUP_VALUES + [("groups", None), ("params", None)]))
    def load_bad_param_group(self, data, bad):
        sd = copy.deepcopy(self.opt.state_dict())
        key, value = bad
        gi = data.draw(st.integers(0, len(sd["param_groups"]) - 1), label="group")
        g = sd["param_groups"][gi]
        if key == "groups":
            sd["param_groups"].append(dict(sd["param_groups"][-1], params=[]))
        elif key == "params":
            g["params"] = g["params"][:-1] if g["params"] else [10**6]
        else:
            if key == "momentum" and (g["schedule"] or {}).get("params", {}).get("base_momentum") is not None:
                return  # a scheduled momentum replaces the saved one
            g[key] = value
        self._expect_failure(
            f"load_state_dict with param_groups[{gi}] {bad}",
            lambda: self.opt.load_state_dict(sd),
            (ValueError, TypeError),
        )

    @rule(
        data=st.data(),
        bad=st.sampled_from(
            [
                ("momentum", -1.0),
                ("momentum", "x"),
                ("lr", "x"),
                ("lr", None),
                ("weight_decay", "x"),
                ("step", 2.5),
                ("step", None),
            ]
        ),
    )
    def bad_value_written_to_a_group(self, data, bad):
        gi = data.draw(st.integers(0, len(self.applied) - 1), label="group")
        group = self.opt.param_groups[gi]
        key, value = bad
        saved = {key: group[key]}
        group[key] = value
        self._expect_failure(f"step with param_groups[{gi}] {bad}", self.opt.step, (ValueError, TypeError))
        group.update(saved)

    @rule(
        kind=st.sampled_from(
            [
                "int",
                "complex",
                "shared",
                "non-leaf",
                "bogus schedule",
                "lr and schedule",
                "nesterov without momentum",
                "mixed dtypes",
                "meta",
                "empty dict",
            ]
        )
    )
    def bad_param_group(self, kind):
        def fresh(dtype=torch.float32):
            return torch.nn.Parameter(torch.randn(3, dtype=dtype))

        group = {
            "int": lambda: {"params": [torch.zeros(3, dtype=torch.int32)]},
            "complex": lambda: {"params": [torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))]},
            "shared": lambda: {"params": [fresh(), self.all_cparams()[0]]},
            "non-leaf": lambda: {"params": [fresh() * 2]},
            "bogus schedule": lambda: {"params": [fresh()], "schedule": "bogus"},
            "lr and schedule": lambda: {"params": [fresh()], "schedule": clr.Constant(0.1), "lr": 0.1},
            "nesterov without momentum": lambda: {
                "params": [fresh()],
                "schedule": clr.Constant(0.1),
                "nesterov": True,
                "momentum": 0.0,
                "dampening": 0.0,
            },
            "mixed dtypes": lambda: {"params": [fresh(), fresh(torch.float64)], "flat": True},
            "meta": lambda: {"params": [torch.nn.Parameter(torch.randn(3, device="meta"))]},
            "empty dict": lambda: {},
        }[kind]()
        self._expect_failure(
            f"add_param_group ({kind})", lambda: self.opt.add_param_group(group), (ValueError, TypeError)
        )


class TestListMode(TwinOptimizers.TestCase):
    settings = SETTINGS


class FlatTwinOptimizers(TwinOptimizers):
    flat = True


class TestFlatMode(FlatTwinOptimizers.TestCase):
    settings = SETTINGS


# --------------------------------------------------------------------------- regression tests
def _pair(values, flat=False, lr=0.1, **kw):
    """A CLRSGD and a torch SGD over twin parameters, both at a constant lr."""
    a = torch.nn.Parameter(torch.tensor(values))
    b = torch.nn.Parameter(torch.tensor(values))
    return a, CLRSGD([a], clr.Constant(lr), flat=flat, **kw), b, torch.optim.SGD([b], lr=lr, foreach=False, **kw)


def _step_both(a, oa, b, ob, grad):
    a.grad, b.grad = grad.clone(), grad.clone()
    oa.step()
    ob.step()


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("n", [3, 67])  # the vector loop and its scalar tail
def test_maximize_with_a_nan_gradient_gives_torchs_bits(flat, n):
    # torch negates the gradient (flipping a NaN's sign bit); the result must carry the same NaN.
    # A negation folded into the multiply-add would leave the sign as it was.
    a, oa, b, ob = _pair([1.0] * n, flat=flat, momentum=0.9, maximize=True)
    grad = torch.ones(n)
    grad[::2] = NAN
    grad[1::4] = -NAN
    _step_both(a, oa, b, ob, grad)
    _step_both(a, oa, b, ob, grad.flip(0))
    assert same(a, b), (bits(a), bits(b))
    assert same(buffer(oa, a), buffer(ob, b))


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("reference, path", [("foreach", dict(foreach=False)), ("fused", dict(fused=True))])
def test_adamw_maximize_with_a_nan_gradient_gives_torchs_bits(amsgrad, weight_decay, reference, path):
    # torch's for-loop negates the gradient: a NaN's sign bit flips, and clrfast's bits are its bits.
    # Its fused kernel's NaN signs are its compiler's (it folds (-g) * (-g) to g * g in the vector
    # body, 64 of these 67 elements): there the NaNs and every other value are the same, NaN signs aside.
    from clrfast.torch import CLRAdamW

    a, b = torch.nn.Parameter(torch.ones(67)), torch.nn.Parameter(torch.ones(67))
    kw = dict(maximize=True, amsgrad=amsgrad, weight_decay=weight_decay)
    oa = CLRAdamW([a], clr.Constant(0.1), reference=reference, **kw)
    ob = torch.optim.AdamW([b], lr=0.1, **path, **kw)
    grad = torch.ones(67)
    grad[::2] = NAN
    grad[1::4] = -NAN
    _step_both(a, oa, b, ob, grad)
    keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else ("exp_avg", "exp_avg_sq")
    for what, x, y in [("param", a, b), *((k, oa.state[a][k], ob.state[b][k]) for k in keys)]:
        if reference == "foreach" and what != "max_exp_avg_sq":  # torch.maximum's NaN payloads are its own
            assert same(x, y), (what, bits(x), bits(y))
        else:
            assert torch.equal(x.isnan(), y.isnan()) and torch.equal(x.nan_to_num(), y.nan_to_num()), what
            if reference == "fused":
                assert same(x[64:], y[64:]), what  # the scalar tail negates as the for-loop does


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("what", ["parameter", "gradient"])
def test_a_transposed_view_in_place_is_followed(flat, what):
    # p.data = p.data.t() (or the same on the gradient) keeps the address and the size, not the layout
    a, oa, b, ob = _pair([[0.0, 1.0], [2.0, 3.0]], flat=flat)
    _step_both(a, oa, b, ob, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    for t in (a, b):
        if what == "parameter":
            t.data = t.data.t()
        else:
            t.grad.data = t.grad.data.t()
    oa.step()
    ob.step()
    assert same(a, b), (a, b)


@pytest.mark.parametrize("flat", [False, True])
def test_a_reshaped_data_view_is_refused_and_changes_nothing(flat):
    # torch raises (the gradient no longer has the parameter's shape); CLRSGD must not step in memory order
    p = torch.nn.Parameter(torch.randn(2, 3))
    opt = CLRSGD([p], clr.Constant(0.1), momentum=0.9, flat=flat)
    p.grad = torch.randn(2, 3)
    opt.step()
    p.data = p.data.reshape(-1)
    before = p.detach().clone()
    with pytest.raises((ValueError, RuntimeError)):
        opt.step()
    assert same(p, before) and opt.param_groups[0]["step"] == 1


def test_load_state_dict_keeps_a_flat_group_flat():
    # torch's Optimizer.load_state_dict calls __setstate__, which must not drop the flat layout
    p = torch.nn.Parameter(torch.randn(3))
    opt = CLRSGD([p], clr.Constant(0.1), momentum=0.9, flat=True, threads=1)
    p.grad = torch.randn(3)
    opt.step()
    opt.load_state_dict(opt.state_dict())
    flat = opt._flat[0]
    assert p.data_ptr() == flat.param.data_ptr()
    assert buffer(opt, p).data_ptr() == flat.state["momentum_buffer"].data_ptr()


def test_flat_sparse_gradient_is_a_clear_error():
    p = torch.nn.Parameter(torch.randn(3))
    opt = CLRSGD([p], clr.Constant(0.1), flat=True)
    p.grad = torch.randn(3).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()


def test_flat_zero_size_parameter_whose_data_is_replaced_is_followed():
    # an empty parameter given memory after construction is updated where it now lives, as torch does
    a, e = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(0))
    ta, te = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(0))
    opt = CLRSGD([a, e], clr.Constant(0.1), momentum=0.9, flat=True)
    ref = torch.optim.SGD([ta, te], lr=0.1, momentum=0.9, foreach=False)
    e.data, te.data = torch.ones(3), torch.ones(3)
    for _ in range(2):
        a.grad, e.grad = torch.ones(2), torch.full((3,), 2.0)
        ta.grad, te.grad = torch.ones(2), torch.full((3,), 2.0)
        opt.step()
        ref.step()
    assert same(a, ta) and same(e, te), (e, te)
    assert same(buffer(opt, e), buffer(ref, te))


def test_flat_zero_size_parameter_gets_torchs_momentum_state():
    a, oa, b, ob = _pair([], flat=True, momentum=0.9)
    _step_both(a, oa, b, ob, torch.ones(0))
    assert same(buffer(oa, a), buffer(ob, b))


@pytest.mark.parametrize("key", ["lr", "momentum"])
def test_a_written_value_survives_a_checkpoint_before_the_next_step(key):
    # torch keeps a value written to the group through state_dict/load_state_dict; the next step applies it
    kw = dict(base_momentum=0.8, max_momentum=0.9) if key == "momentum" else {}
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    oa = CLRSGD([a], clr.Cyclic(0.01, 0.1, step_size_up=2, **kw), momentum=0.9)
    ob = torch.optim.SGD([b], lr=0.01, momentum=0.9, foreach=False)
    sb = torch.optim.lr_scheduler.CyclicLR(ob, 0.01, 0.1, step_size_up=2, cycle_momentum=bool(kw), **kw)
    _step_both(a, oa, b, ob, torch.ones(3))  # the first update makes the momentum buffer
    sb.step()
    oa.param_groups[0][key] = ob.param_groups[0][key] = 0.5
    oa.load_state_dict(copy.deepcopy(oa.state_dict()))
    ob.load_state_dict(copy.deepcopy(ob.state_dict()))
    _step_both(a, oa, b, ob, torch.ones(3))
    sb.step()
    assert oa.param_groups[0][key] == ob.param_groups[0][key]
    assert same(a, b), (a, b)


def test_a_written_zero_lr_with_zero_gradients_is_an_ordinary_step():
    # a warmup from lr 0 and a batch without gradient: torch steps (the clock and the buffer move)
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    oa = CLRSGD([a], None, lr=0.01, momentum=0.9, weight_decay=0.5)
    ob = torch.optim.SGD([b], lr=0.01, momentum=0.9, weight_decay=0.5, foreach=False)
    oa.param_groups[0]["lr"] = ob.param_groups[0]["lr"] = 0.0
    for grad in (torch.zeros(3), torch.ones(3)):
        _step_both(a, oa, b, ob, grad)
    assert oa.param_groups[0]["step"] == 2
    assert same(buffer(oa, a), buffer(ob, b))
    assert same(a, b), (a, b)


def test_flat_new_gradient_is_used_while_the_old_one_is_referenced():
    a, oa, b, ob = _pair([0.0, 0.0, 0.0], flat=True, lr=1.0)
    _step_both(a, oa, b, ob, torch.ones(3))
    logged = a.grad  # a monitor keeps the last gradients
    oa.zero_grad()
    ob.zero_grad()
    _step_both(a, oa, b, ob, torch.full((3,), 5.0))
    assert same(a, b), (a, b)
    del logged


def test_flat_replaced_data_is_followed_while_the_old_memory_is_referenced():
    # an outside reference to the old memory (an EMA copy, "weights before") changes nothing
    p, q = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    opt = CLRSGD([p], clr.Constant(1.0), momentum=0.9, flat=True)
    ref = torch.optim.SGD([q], lr=1.0, momentum=0.9, foreach=False)
    p.grad, q.grad = torch.ones(3), torch.ones(3)
    opt.step()
    ref.step()
    kept = p.detach()
    p.data, q.data = torch.full((3,), 5.0), torch.full((3,), 5.0)
    opt.step()
    ref.step()
    assert same(p, q), (p, q)
    assert torch.equal(kept, torch.full((3,), -1.0))  # the old memory is not written any more
    opt.step()
    ref.step()
    assert same(p, q), (p, q)


@pytest.mark.parametrize("how", ["clear", "replace"])
def test_flat_follows_a_momentum_reset(how):
    a, oa, b, ob = _pair([0.0, 0.0, 0.0], flat=True, lr=1.0, momentum=0.9)
    _step_both(a, oa, b, ob, torch.ones(3))
    for opt, t in ((oa, a), (ob, b)):
        if how == "clear":
            opt.state.clear()
        else:
            opt.state[t]["momentum_buffer"] = torch.zeros(3)
        opt.zero_grad(set_to_none=False)
        t.grad.add_(1.0)  # backward accumulates into the (flat-bound) gradient
        opt.step()
    assert same(a, b), (a, b)


def test_flat_wrong_size_momentum_buffer_after_a_step_is_refused():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = CLRSGD([p], clr.Constant(1.0), momentum=0.9, flat=True)
    p.grad = torch.ones(3)
    opt.step()
    opt.state[p]["momentum_buffer"] = torch.zeros(5)
    with pytest.raises(ValueError, match="momentum_buffer"):
        opt.step()


def test_a_failed_step_leaves_no_pending_state_change_behind():
    # group 1 fails the step; group 0's plan (which would have made its momentum buffer) must not act later
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    ta, tb = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    kw = dict(momentum=0.9, dampening=0.5)
    oa = CLRSGD([{"params": [a]}, {"params": [b]}], clr.Constant(0.1), **kw)
    ob = torch.optim.SGD([{"params": [ta]}, {"params": [tb]}], lr=0.1, foreach=False, **kw)
    a.grad, b.grad = torch.ones(3), torch.ones(3)
    old = b.data
    b.data = torch.ones(5)
    with pytest.raises(ValueError):
        oa.step()
    b.data = old
    ta.grad, tb.grad = a.grad.clone(), b.grad.clone()
    for momentum in (0.0, 0.9):  # plain SGD for a step, then momentum again
        for opt in (oa, ob):
            opt.param_groups[0]["momentum"] = momentum
        oa.step()
        ob.step()
        assert same(buffer(oa, a), buffer(ob, ta))
        a.grad, ta.grad = torch.ones(3), torch.ones(3)
    assert same(a, ta), (a, ta)


def test_a_step_that_raises_leaves_every_group_as_it_was():
    # a plan cached by a failed step must not skip the checks: here torch's own code would raise mid-step
    a = torch.nn.Parameter(torch.ones(3))
    w = torch.nn.Parameter(torch.ones(2, 2).t())  # transposed: updated by torch's single-tensor code
    c = torch.nn.Parameter(torch.ones(3))
    opt = CLRSGD([{"params": [a]}, {"params": [w]}, {"params": [c]}], clr.Cyclic(0.01, 0.1, step_size_up=1))
    a.grad, w.grad, c.grad = torch.ones(3), torch.ones(2, 2), torch.ones(3)
    c.data = torch.ones(5)
    with pytest.raises(ValueError):
        opt.step()
    c.data = torch.ones(3)
    w.data = w.data.t().reshape(-1)  # the same memory viewed as (4,); the gradient is still (2, 2)
    before = a.detach().clone()
    with pytest.raises((ValueError, RuntimeError)):
        opt.step()
    assert same(a, before)
    assert [g["step"] for g in opt.param_groups] == [0, 0, 0]


def test_flat_gradient_transposed_over_its_own_slot_matches_torch():
    # a flat group whose plan is rebuilt copies the transposed gradient onto the memory it views
    ps = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    oa = CLRSGD([{"params": ps[:1]}, {"params": ps[1:]}], clr.Constant(0.1), flat=True)
    ob = torch.optim.SGD([{"params": qs[:1]}, {"params": qs[1:]}], lr=0.1, foreach=False)
    grads = [torch.ones(3), torch.arange(4.0).reshape(2, 2), torch.ones(2)]
    for p, q, g in zip(ps, qs, grads):
        p.grad, q.grad = g.clone(), g.clone()
    oa.step()
    ob.step()
    for t in (ps[1], qs[1]):
        t.grad.data = t.grad.data.t()
    ps[2].grad, qs[2].grad = torch.ones(2), torch.ones(2)
    oa.step()
    ob.step()
    assert all(same(p, q) for p, q in zip(ps, qs)), (ps, qs)


def test_flat_momentum_buffer_of_another_dtype_is_followed_or_refused():
    # torch keeps a float64 buffer and computes in float64; a silent cast to float32 gives other numbers
    a, oa, b, ob = _pair([1.0, 2.0, 3.0], flat=True, momentum=0.9)
    _step_both(a, oa, b, ob, torch.tensor([0.1, 0.2, 0.3]))
    for opt, t in ((oa, a), (ob, b)):
        opt.state[t]["momentum_buffer"] = buffer(opt, t).double()
    a.grad, b.grad = torch.tensor([0.3, 0.2, 0.1]), torch.tensor([0.3, 0.2, 0.1])
    before = a.detach().clone()
    try:
        oa.step()
    except (ValueError, TypeError, RuntimeError):
        assert same(a, before)
        return
    ob.step()
    assert same(a, b) and same(buffer(oa, a), buffer(ob, b)), (a, b)
