"""Per-group ``lr_scale``, layer-wise decay groups and weight-decay schedules.

Oracles: timm's schedulers, which write ``value * lr_scale`` into a torch optimizer's groups
(the fused optimizers and ScheduleLR must show the same lrs and, stepping, make the same
parameters as torch's or lion-pytorch's optimizer under timm's scheduler); timm's
``param_groups_layer_decay`` for the groups; for a weight-decay schedule, the reference
optimizer with its group's ``weight_decay`` written before each step from transformers' own
schedule lambda.
"""

from __future__ import annotations

import io

import clrfast as clr
import pytest
import torch
from clrfast.torch import CLRSGD, CLRAdamW, ScheduleLR, layer_decay_groups
from optim_registry import RULES, params
from oracles import import_timm
from torch import nn

ts, timm_groups = import_timm(
    "timm.scheduler",
    "timm.optim._param_groups",
    stubs={
        # timm.layers imports torchvision; the matcher code takes only this name from it
        "timm.layers": {"use_reentrant_ckpt": lambda: False},
        "timm.models": {"group_parameters": "timm.models._manipulate:group_parameters"},
        "timm.optim": {},
    },
)
optimization = pytest.importorskip("transformers.optimization")

COSINE = dict(t_initial=30, lr_min=1e-4, warmup_t=3, warmup_lr_init=1e-5)
SCALES = (1.0, 0.5, 0.75**3)
SHAPES = ((4, 3), (5,), (2, 2))


def _pair(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]
    return [nn.Parameter(x.clone()) for x in init], [nn.Parameter(x.clone()) for x in init]


def _grads(t, dtype=torch.float64):
    g = torch.Generator().manual_seed(1000 + t)
    return [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]


def _set_grads(grads, *param_lists):
    for ps in param_lists:
        for p, g in zip(ps, grads):
            p.grad = g.clone()


def _lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def _scaled_groups(ps):
    return [{"params": [p], "lr_scale": s} for p, s in zip(ps, SCALES)]


def _assert_same(ours, ref):
    for p, q in zip(ours, ref):
        assert torch.equal(p.detach(), q.detach())


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("rule", params())
def test_lr_scale_is_timms_value_times_the_scale(rule, flat):
    ours, ref = _pair()
    opt = rule.make(_scaled_groups(ours), clr.TimmCosine(0.1, **COSINE), flat=flat)
    ropt = rule.make_reference(_scaled_groups(ref), 0.1)
    rs = ts.CosineLRScheduler(ropt, **COSINE, t_in_epochs=False)
    for t in range(40):
        rs.step_update(t)  # timm: the lrs of update t, written before it
        assert _lrs(opt) == _lrs(ropt), t
        _set_grads(_grads(t), ours, ref)
        opt.step()
        ropt.step()
    _assert_same(ours, ref)


def test_schedule_lr_applies_lr_scale_as_timm_and_follows_a_change():
    ours, ref = _pair()
    copt = torch.optim.SGD(_scaled_groups(ours), lr=0.1, momentum=0.9)
    ropt = torch.optim.SGD(_scaled_groups(ref), lr=0.1, momentum=0.9)
    rs = ts.CosineLRScheduler(ropt, **COSINE, t_in_epochs=False)
    cs = ScheduleLR(copt, clr.TimmCosine(0.1, **COSINE))
    for t in range(40):
        if t == 17:
            for o in (copt, ropt):
                o.param_groups[1]["lr_scale"] = 0.125
        rs.step_update(t)
        if t:
            cs.step()
        assert _lrs(copt) == _lrs(ropt), t
        assert cs.get_last_lr() == _lrs(ropt)
        _set_grads(_grads(t), ours, ref)
        copt.step()
        ropt.step()
    _assert_same(ours, ref)


def test_a_changed_lr_scale_shows_from_the_next_value_on():
    s = clr.WarmupCosine(0.1, 5, 50)
    p = nn.Parameter(torch.ones(3))
    opt = CLRSGD([{"params": [p], "lr_scale": 0.5}], s, momentum=0.9)
    for t in range(6):
        assert opt.param_groups[0]["lr"] == s.lr(t) * opt.param_groups[0]["lr_scale"]
        p.grad = torch.ones(3)
        opt.step()
    opt.param_groups[0]["lr_scale"] = 2  # an int is taken as its value
    assert opt.param_groups[0]["lr"] == s.lr(6) * 0.5  # update 6 was published with the old scale
    p.grad = torch.ones(3)
    opt.step()
    assert opt.param_groups[0]["lr"] == s.lr(7) * 2
    del opt.param_groups[0]["lr_scale"]
    p.grad = torch.ones(3)
    opt.step()
    assert opt.param_groups[0]["lr"] == s.lr(8)


@pytest.mark.parametrize(
    "bad, err", [(-0.5, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("0.5", TypeError)]
)
def test_a_bad_lr_scale_is_refused_naming_it_and_changing_nothing(bad, err):
    with pytest.raises(err, match=r"param_groups\[0\]\['lr_scale'\]"):
        CLRSGD([{"params": [nn.Parameter(torch.ones(2))], "lr_scale": bad}], clr.Constant(0.1))
    p = nn.Parameter(torch.ones(3))
    opt = CLRAdamW([{"params": [p], "lr_scale": 0.5}], clr.WarmupCosine(0.1, 2, 20))
    p.grad = torch.ones(3)
    opt.step()
    before = (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}, opt.param_groups[0]["step"])
    shown = opt.param_groups[0]["lr"]
    opt.param_groups[0]["lr_scale"] = bad
    with pytest.raises((ValueError, TypeError), match=r"param_groups\[0\]\['lr_scale'\]"):
        opt.step()
    assert torch.equal(p.detach(), before[0]) and opt.param_groups[0]["step"] == before[2]
    assert all(torch.equal(v, before[1][k]) for k, v in opt.state[p].items())
    assert opt.param_groups[0]["lr"] == shown
    # ScheduleLR checks every group's scale before it writes any
    topt = torch.optim.SGD(
        [{"params": [nn.Parameter(torch.ones(1))]}, {"params": [nn.Parameter(torch.ones(1))]}], lr=1.0
    )
    sched = ScheduleLR(topt, clr.WarmupCosine(0.1, 2, 20))
    topt.step()
    lrs = _lrs(topt)
    topt.param_groups[1]["lr_scale"] = bad
    with pytest.raises((ValueError, TypeError), match=r"param_groups\[1\]\['lr_scale'\]"):
        sched.step()
    assert _lrs(topt) == lrs


def test_lr_scale_survives_a_checkpoint():
    s = clr.TimmCosine(0.1, **COSINE)
    ours, ref = _pair()
    a = CLRAdamW(_scaled_groups(ours), s, weight_decay=0.01)
    b = CLRAdamW(_scaled_groups(ref), s, weight_decay=0.01)
    for t in range(25):
        _set_grads(_grads(t), ours, ref)
        a.step()
        b.step()
        if t == 9:  # b restarts from a checkpoint into groups without a scale
            buf = io.BytesIO()
            torch.save(b.state_dict(), buf)
            fresh = [nn.Parameter(p.detach().clone()) for p in ref]
            b = CLRAdamW([{"params": [p]} for p in fresh], s, weight_decay=0.01)
            b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
            ref = fresh
            assert [g["lr_scale"] for g in b.param_groups] == list(SCALES)
    assert _lrs(a) == _lrs(b)
    _assert_same(ours, ref)


# --------------------------------------------------------------------------- layer-wise decay
class TinyViT(nn.Module):
    """A ViT's parameter layout with timm's ViT group_matcher."""

    def __init__(self, depth=4, callable_matcher=False):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
        self.patch_embed = nn.Linear(12, 8)
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)) for _ in range(depth)])
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)
        self.callable_matcher = callable_matcher

    def group_matcher(self, coarse=False):
        if self.callable_matcher:
            return lambda n: (
                0
                if n.split(".")[0] in ("cls_token", "pos_embed", "patch_embed")
                else (1 + int(n.split(".")[1]) if n.startswith("blocks.") else 1000)
            )
        return dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])


def _shape(groups):
    return [(g["lr_scale"], g["weight_decay"], [id(p) for p in g["params"]]) for g in groups]


@pytest.mark.parametrize("callable_matcher", [False, True])
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(layer_decay=0.65, weight_decay=0.1, no_weight_decay=("pos_embed", "cls_*")),
        dict(layer_decay=0.5, min_scale=0.2, weight_decay_exclude_1d=False),
    ],
)
def test_layer_decay_groups_are_timms(kw, callable_matcher):
    model = TinyViT(callable_matcher=callable_matcher)
    model.blocks[1][1].bias.requires_grad_(False)
    timm_kw = dict(kw)
    if "no_weight_decay" in timm_kw:
        timm_kw["no_weight_decay_list"] = timm_kw.pop("no_weight_decay")
    want = timm_groups.param_groups_layer_decay(model, **timm_kw)
    got = layer_decay_groups(model, **kw)
    assert _shape(got) == _shape(want)


def test_layer_decay_groups_by_module_order_and_by_a_given_map():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))
    got = layer_decay_groups(model, 0.5, weight_decay=0.01)
    w = [model[0].weight, model[0].bias, model[2].weight, model[2].bias, model[3].weight, model[3].bias]
    # layers 0, 1, 2 (the ReLU holds none): scales 0.25, 0.5, 1; the 1-d biases without decay
    assert _shape(got) == [
        (0.25, 0.01, [id(w[0])]),
        (0.25, 0.0, [id(w[1])]),
        (0.5, 0.01, [id(w[2])]),
        (0.5, 0.0, [id(w[3])]),
        (1.0, 0.01, [id(w[4])]),
        (1.0, 0.0, [id(w[5])]),
    ]
    by_map = layer_decay_groups(model, 0.5, weight_decay=0.01, layers={"0.weight": 0, "0.bias": 0, "2.weight": 1})
    # unlisted names go to the last layer (1 here)
    assert [g["lr_scale"] for g in by_map] == [0.5, 0.5, 1.0, 1.0]
    wd = clr.WarmupCosine(0.01, 0, 100)
    assert {id(g["weight_decay"]) for g in layer_decay_groups(model, weight_decay=wd) if g["weight_decay"]} == {id(wd)}


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(layer_decay=-0.1), ValueError, "layer_decay"),
        (dict(weight_decay=float("nan")), ValueError, "weight_decay"),
        (dict(no_weight_decay="bias"), TypeError, "no_weight_decay"),
        (dict(layers=[0, 1]), TypeError, "layers"),
        (dict(layers={"0.weight": -1}), ValueError, "layers"),
        (dict(min_scale="x"), TypeError, "min_scale"),
    ],
)
def test_layer_decay_groups_refuse_bad_arguments(kw, err, match):
    with pytest.raises(err, match=match):
        layer_decay_groups(nn.Sequential(nn.Linear(2, 2)), **kw)


def test_layer_decay_groups_train_under_one_schedule_as_timm():
    torch.manual_seed(0)
    a, b = TinyViT(), TinyViT()
    b.load_state_dict(a.state_dict())
    opt = CLRAdamW(layer_decay_groups(a, 0.65), clr.TimmCosine(1e-3, **COSINE))
    ropt = torch.optim.AdamW(timm_groups.param_groups_layer_decay(b, layer_decay=0.65), lr=1e-3, fused=True)
    rs = ts.CosineLRScheduler(ropt, **COSINE, t_in_epochs=False)
    x = torch.randn(6, 12)
    for t in range(12):
        rs.step_update(t)
        for m, o in ((a, opt), (b, ropt)):
            o.zero_grad()
            m.head(m.norm(m.blocks[0](m.patch_embed(x) + m.pos_embed[0, 0]))).square().mean().backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


# --------------------------------------------------------------------------- weight-decay schedules
def cosine_lambda(w: int, n: int):
    return lambda t: optimization._get_cosine_schedule_with_warmup_lr_lambda(
        t, num_warmup_steps=w, num_training_steps=n, num_cycles=0.5
    )


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("rule", params())
def test_a_weight_decay_schedule_applies_wd_of_the_step(rule, flat):
    wd0, w, n = 0.05, 4, 30
    lam = cosine_lambda(w, n)
    ours, ref = _pair(dtype=torch.float32)
    opt = rule.make(ours, clr.Constant(0.02), flat=flat, over=dict(weight_decay=clr.WarmupCosine(wd0, w, n)))
    ropt = rule.make_reference(ref, 0.02)
    for t in range(n + 5):
        ropt.param_groups[0]["weight_decay"] = wd0 * lam(t)
        _set_grads(_grads(t, torch.float32), ours, ref)
        opt.step()
        ropt.step()
    _assert_same(ours, ref)
    assert isinstance(opt.param_groups[0]["weight_decay"], clr.WarmupCosine)  # the group keeps the schedule


def test_a_weight_decay_schedule_is_data_in_the_state_dict_and_resumes():
    wd = clr.WarmupCosine(0.05, 2, 20)
    ours, ref = _pair()
    a = CLRAdamW(ours, clr.Constant(0.01), weight_decay=wd)
    b = CLRAdamW(ref, clr.Constant(0.01), weight_decay=wd)
    for t in range(15):
        _set_grads(_grads(t), ours, ref)
        a.step()
        b.step()
        if t == 6:
            buf = io.BytesIO()
            sd = b.state_dict()
            assert sd["param_groups"][0]["weight_decay"] == wd.to_dict()
            torch.save(sd, buf)
            fresh = [nn.Parameter(p.detach().clone()) for p in ref]
            b = CLRAdamW(fresh, clr.Constant(0.01), weight_decay=0.3)
            b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
            ref = fresh
            assert b.param_groups[0]["weight_decay"] == wd
    _assert_same(ours, ref)


def test_a_weight_decay_schedule_holds_its_last_value_past_its_end_and_bad_ones_are_refused():
    one = clr.OneCycle(0.1, total_steps=10)
    held = one.lr(one.max_step)
    ours, ref = _pair()
    a = CLRSGD(ours, clr.Constant(0.01), momentum=0.9, weight_decay=one)
    b = torch.optim.SGD(ref, lr=0.01, momentum=0.9, foreach=False)
    for t in range(15):
        b.param_groups[0]["weight_decay"] = one.lr(min(t, one.max_step))
        _set_grads(_grads(t), ours, ref)
        a.step()
        b.step()
    assert b.param_groups[0]["weight_decay"] == held
    _assert_same(ours, ref)
    with pytest.raises(TypeError, match=r"weight_decay"):
        CLRSGD([nn.Parameter(torch.ones(1))], clr.Constant(0.1), weight_decay="0.1")
    bad = {**RULES["CLRSGD"].make([nn.Parameter(torch.ones(1))], clr.Constant(0.1)).state_dict()}
    bad["param_groups"][0]["weight_decay"] = {"type": "NoSuchSchedule"}
    opt = CLRSGD([nn.Parameter(torch.ones(1))], clr.Constant(0.1))
    with pytest.raises(ValueError, match=r"\['weight_decay'\]"):
        opt.load_state_dict(bad)
