"""CLRAdamW and CLRAdam beside torch's AdamW/Adam (+ CyclicLR cycling beta1) through random operation sequences.

Hypothesis drives both through the same steps (gradients that come and go, GradScaler steps
with and without overflow, state-dict resumes into fresh optimizers, deep copies) and checks after every
rule that parameters, state and the groups' lr and betas are bit for bit torch's.
"""

import copy

import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRAdam, CLRAdamW  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule  # noqa: E402

BASE, TOP, UP, DOWN = 1e-3, 6e-3, 3, 2
MOMENTA = dict(base_momentum=0.85, max_momentum=0.95)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


class AdamMachine(RuleBasedStateMachine):
    @initialize(
        decoupled=st.booleans(),
        scheduled=st.booleans(),
        flat=st.booleans(),
        amsgrad=st.booleans(),
        maximize=st.booleans(),
        weight_decay=st.sampled_from([0.0, 1e-2, 0.3]),
        dtype=st.sampled_from([torch.float32, torch.float64]),
        shapes=st.lists(st.sampled_from([(3,), (2, 5), (7,), (1,)]), min_size=1, max_size=3),
        seed=st.integers(0, 2**16),
        fused_unscale=st.booleans(),
    )
    def setup(self, decoupled, scheduled, flat, amsgrad, maximize, weight_decay, dtype, shapes, seed, fused_unscale):
        gen = torch.Generator().manual_seed(seed)
        values = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
        self.a = [torch.nn.Parameter(v.clone()) for v in values]
        self.b = [torch.nn.Parameter(v.clone()) for v in values]
        self.dtype, self.seed, self.scheduled = dtype, seed, scheduled
        kw = dict(weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        self.cls, tcls = (CLRAdamW, torch.optim.AdamW) if decoupled else (CLRAdam, torch.optim.Adam)
        self.kw = dict(kw, flat=flat)
        schedule = clr.Cyclic(BASE, TOP, step_size_up=UP, step_size_down=DOWN, **MOMENTA) if scheduled else None
        self.opt = self.cls(self.a, schedule, lr=None if scheduled else BASE, **self.kw)
        self.opt.fused_unscale = fused_unscale
        self.ref = tcls(self.b, lr=BASE, foreach=False, **kw)
        self.sched = (
            torch.optim.lr_scheduler.CyclicLR(
                self.ref, BASE, TOP, step_size_up=UP, step_size_down=DOWN, cycle_momentum=True, **MOMENTA
            )
            if scheduled
            else None
        )
        self.scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2) for _ in range(2)]
        for s in self.scalers:
            s.scale(torch.ones(()))
        self.t = 0

    def _grads(self, data, label):
        present = data.draw(st.lists(st.booleans(), min_size=len(self.a), max_size=len(self.a)), label=label)
        gen = torch.Generator().manual_seed(self.seed + 7919 * self.t)
        self.t += 1
        grads = [
            torch.randn(p.shape, generator=gen, dtype=torch.float64).to(self.dtype) if keep else None
            for p, keep in zip(self.a, present)
        ]
        return grads if any(g is not None for g in grads) else None

    def _set(self, grads, scale=1.0):
        for p, q, g in zip(self.a, self.b, grads):
            p.grad = None if g is None else g * scale
            q.grad = None if g is None else g * scale

    def _torch_step(self):
        self.ref.step()
        if self.sched is not None:
            self.sched.step()

    @rule(data=st.data())
    def step(self, data):
        grads = self._grads(data, "grads")
        if grads is None:
            return
        self._set(grads)
        self.opt.step()
        self._torch_step()

    @rule(data=st.data(), overflow=st.booleans(), unscale_first=st.booleans())
    def gradscaler_step(self, data, overflow, unscale_first):
        grads = self._grads(data, "scaled grads")
        if grads is None:
            return
        sc, sr = self.scalers
        self._set(grads, sc.get_scale())
        if overflow:
            i = next(i for i, g in enumerate(grads) if g is not None)
            self.a[i].grad.view(-1)[0] = float("inf")
            self.b[i].grad.view(-1)[0] = float("inf")
        if unscale_first:  # as for gradient clipping
            sc.unscale_(self.opt)
        sc.step(self.opt)
        sc.update()
        sr.step(self.ref)  # torch's optimizer has no fused contract: GradScaler unscales and skips it
        sr.update()
        if not overflow and self.sched is not None:
            self.sched.step()  # torch's scheduler would move on at a skipped step; the clock does not
        if overflow and not unscale_first and self.opt.fused_unscale:
            for q in self.b:  # the skipped fused step leaves its gradients scaled
                if q.grad is not None:
                    q.grad.mul_(sc.get_scale() * 2)

    @rule()
    def zero_grad(self):
        self.opt.zero_grad()
        self.ref.zero_grad()

    @rule(how=st.sampled_from(["state_dict", "torch state_dict", "deepcopy"]))
    def resume(self, how):
        if how == "deepcopy":
            self.a, self.opt = copy.deepcopy((self.a, self.opt))
            return
        saved = copy.deepcopy(self.opt.state_dict() if how == "state_dict" else self.ref.state_dict())
        a = [torch.nn.Parameter(p.detach().clone()) for p in self.a]
        for p, q in zip(a, self.a):
            p.grad = None if q.grad is None else q.grad.clone()
        opt = self.cls(a, clr.Constant(1.0) if self.scheduled else None, lr=None if self.scheduled else 1.0, **self.kw)
        schedule = self.opt.param_groups[0]["schedule"]
        opt.load_state_dict(saved)
        if how == "torch state_dict":  # torch's groups carry no schedule or clock: give them this run's
            opt.param_groups[0]["schedule"] = schedule
            opt.param_groups[0]["step"] = self.opt.param_groups[0]["step"]
            opt.load_state_dict(opt.state_dict())
        opt.fused_unscale = self.opt.fused_unscale
        self.a, self.opt = a, opt

    @invariant()
    def bit_identical_to_torch(self):
        if not hasattr(self, "opt"):
            return
        for p, q in zip(self.a, self.b):
            assert _same(p.detach(), q.detach())
            st_, ref_st = self.opt.state.get(p, {}), self.ref.state.get(q, {})
            for key, value in ref_st.items():
                if key == "step":
                    assert float(st_[key]) == float(value)
                else:
                    assert _same(st_[key], value), key
        cg, tg = self.opt.param_groups[0], self.ref.param_groups[0]
        assert cg["lr"] == tg["lr"] and tuple(cg["betas"]) == tuple(tg["betas"])


AdamMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestAdamMachine = AdamMachine.TestCase
