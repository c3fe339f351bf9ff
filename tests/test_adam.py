"""CLRAdamW / CLRAdam against torch.optim.AdamW / Adam + torch's schedulers, bit for bit.

``reference=None`` (the default) and ``"fused"`` are compared with torch's ``fused=True`` CPU
kernel, ``reference="foreach"`` with its for-loop and foreach paths.
"""

import copy
import io

import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRAdam, CLRAdamW  # noqa: E402
from clrfast.torch._sqrt import torch_sqrt_routines  # noqa: E402
from clrfast.torch.adam import fused_vector_bytes  # noqa: E402

# Parity with torch's for-loop needs its own vector sqrt (MKL builds); with the fused kernel, a
# torch build whose fused kernel clrfast reproduces.
NEEDS_MKL = pytest.mark.skipif(torch_sqrt_routines()[0] == 0, reason="torch without MKL: its sqrt is not reproduced")
NEEDS_FUSED = pytest.mark.skipif(fused_vector_bytes() == 0, reason="torch's fused kernel is reproduced on x86 only")
# clrfast's `reference` -> torch's keyword for that path
TORCH_PATH = {"fused": dict(fused=True), "foreach": dict(foreach=False)}
REFS = [pytest.param("fused", marks=NEEDS_FUSED), pytest.param("foreach", marks=NEEDS_MKL)]
pytestmark = NEEDS_FUSED  # the default reference

SHAPES = [(37,), (64, 3), (1000,), (5, 1, 3, 3)]
PAIRS = {"adamw": (CLRAdamW, torch.optim.AdamW), "adam": (CLRAdam, torch.optim.Adam)}


def _params(dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in SHAPES]


def _grads(ps, t):
    g = torch.Generator().manual_seed(1000 + t)
    return [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) for p in ps]


def _step(a, oa, b, ob, sb, t, skip=()):
    for i, (p, q, g) in enumerate(zip(a, b, _grads(a, t))):
        p.grad = None if i in skip else g.clone()
        q.grad = None if i in skip else g.clone()
    oa.step()
    ob.step()
    if sb is not None:
        sb.step()


def _same(a, oa, b, ob):
    for p, q in zip(a, b):
        assert torch.equal(p, q)
        sa, sb = oa.state.get(p, {}), ob.state.get(q, {})
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


SCHEDULERS = {
    "cyclic": (
        clr.Cyclic(1e-3, 6e-3, step_size_up=20, step_size_down=13, base_momentum=0.85, max_momentum=0.95),
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, 1e-3, 6e-3, step_size_up=20, step_size_down=13, base_momentum=0.85, max_momentum=0.95
        ),
    ),
    "onecycle": (
        clr.OneCycle(6e-3, total_steps=2000, base_momentum=0.85, max_momentum=0.95),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 6e-3, total_steps=2000, base_momentum=0.85, max_momentum=0.95),
    ),
    "restarts": (
        clr.CosineRestarts(6e-3, T_0=50, T_mult=2, eta_min=1e-5),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=50, T_mult=2, eta_min=1e-5),
    ),
}

OPTIONS = [
    dict(),
    dict(amsgrad=True, weight_decay=0.05),
    dict(maximize=True, eps=1e-6),
    dict(weight_decay=0.0, eps=0.0),
]


@pytest.mark.parametrize("ref", REFS)
@pytest.mark.parametrize("rule", PAIRS)
@pytest.mark.parametrize("sched", SCHEDULERS)
@pytest.mark.parametrize("kw", OPTIONS, ids=["default", "amsgrad-wd", "maximize-eps", "no-wd-eps0"])
def test_float32_matches_torch_over_2000_steps_with_beta1_cycling(rule, sched, kw, ref):
    cls, tcls = PAIRS[rule]
    s, make = SCHEDULERS[sched]
    a, b = _params(), _params()
    oa = cls(a, s, reference=ref, **kw)
    ob = tcls(b, lr=6e-3, **TORCH_PATH[ref], **kw)
    sb = make(ob)
    for t in range(2000):
        assert (oa.param_groups[0]["lr"], oa.param_groups[0]["betas"]) == (
            ob.param_groups[0]["lr"],
            ob.param_groups[0]["betas"],
        )
        _step(a, oa, b, ob, sb, t)
    _same(a, oa, b, ob)


@pytest.mark.parametrize("rule", PAIRS)
@pytest.mark.parametrize(
    "path",
    [
        pytest.param(("fused", dict(fused=True)), id="fused", marks=NEEDS_FUSED),
        pytest.param(("foreach", dict(foreach=False)), id="for-loop", marks=NEEDS_MKL),
        pytest.param(("foreach", dict(foreach=True)), id="foreach", marks=NEEDS_MKL),
    ],
)
@pytest.mark.parametrize("flat", [False, True])
def test_float64_and_flat_mode_match_torch(rule, path, flat):
    cls, tcls = PAIRS[rule]
    s, make = SCHEDULERS["cyclic"]
    a, b = _params(torch.float64), _params(torch.float64)
    oa = cls(a, s, amsgrad=True, weight_decay=1e-2, flat=flat, reference=path[0])
    ob = tcls(b, lr=1e-3, amsgrad=True, weight_decay=1e-2, **path[1])
    sb = make(ob)
    for t in range(300):
        _step(a, oa, b, ob, sb, t, skip=(2,) if t % 7 == 3 else ())  # torch skips them; their step stays
    _same(a, oa, b, ob)


def test_constant_betas_without_a_momentum_schedule_and_a_plain_lr():
    a, b = _params(), _params()
    oa = CLRAdamW(a, 2e-3, betas=(0.8, 0.99), weight_decay=0.1)
    ob = torch.optim.AdamW(b, lr=2e-3, betas=(0.8, 0.99), weight_decay=0.1, fused=True)
    sa = torch.optim.lr_scheduler.StepLR(oa, 10, 0.5)  # a torch scheduler drives the plain-lr form
    sb = torch.optim.lr_scheduler.StepLR(ob, 10, 0.5)
    for t in range(40):
        _step(a, oa, b, ob, sb, t)
        sa.step()
        assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    _same(a, oa, b, ob)


@pytest.mark.parametrize("ref", REFS)
@pytest.mark.parametrize("flat", [False, True])
def test_state_dicts_interchange_with_torch_and_resume_exactly(flat, ref):
    s, make = SCHEDULERS["cyclic"]
    a, b = _params(), _params()
    oa = CLRAdamW(a, s, weight_decay=1e-2, flat=flat, reference=ref)
    ob = torch.optim.AdamW(b, lr=1e-3, weight_decay=1e-2, **TORCH_PATH[ref])
    sb = make(ob)
    for t in range(25):
        _step(a, oa, b, ob, sb, t)
    blob = io.BytesIO()
    torch.save(oa.state_dict(), blob)  # weights_only loading must accept it
    blob.seek(0)
    saved = torch.load(blob)
    c = [p.detach().clone().requires_grad_() for p in a]
    oc = CLRAdamW(c, clr.Constant(1.0), flat=flat)
    oc.load_state_dict(saved)
    assert oc.param_groups[0]["step"] == 25 and oc.param_groups[0]["schedule"] == s
    assert oc.param_groups[0]["reference"] == ref
    # torch's AdamW takes clrfast's state, and clrfast takes torch's
    d = [p.detach().clone().requires_grad_() for p in b]
    od = torch.optim.AdamW(d, lr=1e-3, weight_decay=1e-2, **TORCH_PATH[ref])
    od.load_state_dict(copy.deepcopy(oa.state_dict()))
    e = [p.detach().clone().requires_grad_() for p in b]
    oe = CLRAdamW(e, s, weight_decay=1e-2, flat=flat, reference=ref)
    oe.load_state_dict(copy.deepcopy(ob.state_dict()))
    oe.param_groups[0]["step"] = 25
    oe.load_state_dict(oe.state_dict())  # publishes the schedule's values at the clock just set
    for t in range(25, 60):
        gs = _grads(a, t)
        for ps in (a, b, c, d, e):
            for p, g in zip(ps, gs):
                p.grad = g.clone()
        od.param_groups[0]["lr"], od.param_groups[0]["betas"] = ob.param_groups[0]["lr"], ob.param_groups[0]["betas"]
        for opt in (oa, ob, oc, oe, od):
            opt.step()
        sb.step()
    for ps in (b, c, d, e):
        assert all(torch.equal(x, y) for x, y in zip(a, ps))


def test_bad_input_is_a_clear_error_that_changes_nothing():
    a = _params()
    with pytest.raises(ValueError, match=r"betas'\] must lie in \[0, 1\)"):
        CLRAdamW(a, clr.Constant(1e-3), betas=(1.0, 0.999))
    with pytest.raises(TypeError, match=r"betas'\] must be a pair"):
        CLRAdamW(a, clr.Constant(1e-3), betas=0.9)
    with pytest.raises(ValueError, match=r"eps'\] must be >= 0"):
        CLRAdam(a, clr.Constant(1e-3), eps=-1.0)
    opt = CLRAdamW(a, clr.Constant(1e-3))
    for p in a:
        p.grad = torch.ones(p.shape)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][1]["exp_avg_sq"] = torch.zeros(3)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=r"parameter 1: state\['exp_avg_sq'\] has shape \(3,\)"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert all(
        torch.equal(after["state"][i][k], before["state"][i][k]) for i in before["state"] for k in before["state"][i]
    )
    sd = copy.deepcopy(before)
    sd["state"][0]["step"] = "three"
    with pytest.raises(TypeError, match=r"state\['step'\] must be a one-element floating tensor"):
        opt.load_state_dict(sd)
    a[2].grad.set_(torch.ones(5))
    with pytest.raises(ValueError, match="parameter 2: gradient shape"):
        opt.step()
    assert opt.param_groups[0]["step"] == 1 and all(opt.state[p]["step"] == 1 for p in a)


@NEEDS_MKL
def test_the_two_references_differ_only_in_the_last_bits():
    s, make = SCHEDULERS["cyclic"]
    a, b, c, d = _params(), _params(), _params(), _params()
    oa, ob = CLRAdamW(a, s), torch.optim.AdamW(b, lr=1e-3, fused=True)
    oc, od = CLRAdamW(c, s, reference="foreach"), torch.optim.AdamW(d, lr=1e-3, foreach=False)
    sb, sd = make(ob), make(od)
    for t in range(20):
        gs = _grads(a, t)
        for ps in (a, b, c, d):
            for p, g in zip(ps, gs):
                p.grad = g.clone()
        for o in (oa, ob, oc, od, sb, sd):
            o.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.equal(x, y) for x, y in zip(c, d))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))  # MKL's root is not IEEE's on these values
    for x, y in zip(a, c):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_reference_is_checked_and_a_saved_match_torch_flag_still_loads():
    a = _params()
    with pytest.raises(ValueError, match=r"CLRAdamW\['reference'\] must be None, 'fused' or 'foreach', got 'cuda'"):
        CLRAdamW(a, clr.Constant(1e-3), reference="cuda")
    opt = CLRAdamW(a, clr.Constant(1e-3))
    opt.param_groups[0]["reference"] = 3
    for p in a:
        p.grad = torch.ones(p.shape)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['reference'\] must be None.*got 3"):
        opt.step()
    assert opt.param_groups[0]["step"] == 0 and not opt.state
    opt.param_groups[0]["reference"] = None
    opt.step()
    # a state dict written before `reference` existed carries match_torch: True meant the for-loop's rounding
    for flag, ref in ((True, "foreach"), (False, "fused")):
        sd = copy.deepcopy(opt.state_dict())
        del sd["param_groups"][0]["reference"]
        sd["param_groups"][0]["match_torch"] = flag
        other = CLRAdamW([p.detach().clone().requires_grad_() for p in a], clr.Constant(1e-3))
        other.load_state_dict(sd)
        assert other.param_groups[0]["reference"] == ref and "match_torch" not in other.param_groups[0]


@pytest.mark.parametrize("ref", REFS)
def test_a_strided_parameter_takes_torchs_step_on_its_values(ref):
    # A view the kernel cannot walk as one run goes to torch's code: with reference="fused", its
    # fused kernel on a dense copy (the kernel itself walks data_ptr for numel elements, so it
    # would write beside a strided view), written back into the view.
    g = torch.Generator().manual_seed(5)
    base = torch.randn(64, 201, generator=g)
    p = base[:, ::2].detach().requires_grad_()  # 64 x 101: strided, and 101 leaves a scalar tail
    q = base[:, ::2].clone().requires_grad_()  # torch's step on dense memory: the oracle
    untouched = base[:, 1::2].clone()
    oa = CLRAdamW([p], clr.Constant(1e-2), weight_decay=0.1, amsgrad=True, reference=ref)
    ob = torch.optim.AdamW([q], lr=1e-2, weight_decay=0.1, amsgrad=True, **TORCH_PATH[ref])
    for _ in range(30):
        grad = torch.randn(64, 101, generator=g)
        p.grad, q.grad = grad.clone(), grad.clone()
        oa.step()
        ob.step()
    assert oa._plans[0].slow  # the strided parameter did take torch's code
    assert torch.equal(p, q) and torch.equal(base[:, 1::2], untouched)
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"):
        assert torch.equal(oa.state[p][k], ob.state[q][k]), k
