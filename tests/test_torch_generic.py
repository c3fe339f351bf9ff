"""torch's generic optimizer tests (``TestOptimRenewed`` of pytorch's test/test_optim.py), run on clrfast.

The inputs are torch's own: the ``OptimizerInfo`` entries of SGD, AdamW, Adam and RMSprop in
``torch.testing._internal.common_optimizers``, with their constructor inputs and error inputs,
mapped to the fused rule whose reference each is (``optim_registry``: CLRSGD, CLRAdamW, CLRAdam,
CLRRMSprop) with ``schedule=None``. torch is the oracle in every
test: its optimizer runs on the same input, and clrfast must give the same values bit for bit,
or raise torch's exception type with torch's message in it.
"""

from __future__ import annotations

import copy
import functools
import inspect
import io
import re
import sys
import types
import unittest
import warnings

import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRSGD  # noqa: E402
from optim_registry import RULES  # noqa: E402
from torch.nn import Parameter  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook  # noqa: E402


def _common_optimizers():
    """torch's OptimizerInfo module, importable without the test-only package its helpers pull in."""
    stub = None
    try:
        import expecttest  # noqa: F401
    except ImportError:
        # torch's common_utils only subclasses expecttest.TestCase, which no test here runs.
        stub = types.ModuleType("expecttest")
        stub.TestCase = unittest.TestCase
        sys.modules["expecttest"] = stub
    frozen = torch.backends.flags_frozen()
    try:
        from torch.testing._internal import common_optimizers
    finally:
        if stub is not None:
            sys.modules.pop("expecttest", None)
        if not frozen:
            # Importing common_utils freezes torch.backends' flags for the whole process.
            torch.backends.__allow_nonbracketed_mutation_flag = True
    return common_optimizers


_DB = _common_optimizers()
# torch's optimizer name -> the fused rule whose reference it is (optim_registry)
BY_TORCH_NAME = {r.torch_name: r for r in RULES.values() if r.torch_name}
INFOS = {i.optim_cls.__name__: i for i in _DB.optim_db if i.optim_cls.__name__ in BY_TORCH_NAME}
# torch's CPU default (and what its inputs select) is its for-loop: the Adam rules reproduce it with
# reference="foreach"; test_training_matches_torch also runs their default against fused=True
ADAM = ("Adam", "AdamW")
CLR = {
    name: functools.partial(BY_TORCH_NAME[name].cls, reference="foreach") if name in ADAM else BY_TORCH_NAME[name].cls
    for name in INFOS
}
TORCH_IMPLS = ("foreach", "fused", "capturable", "differentiable")


def _torch_takes_names() -> bool:
    p = Parameter(torch.zeros(1))
    try:
        return torch.optim.SGD([("w", p)], lr=0.1).param_groups[0].get("param_names") == ["w"]
    except TypeError:
        return False


NAMED = pytest.mark.skipif(not _torch_takes_names(), reason="torch < 2.6 takes no named parameters")


# --------------------------------------------------------------------------- torch's inputs
def inputs(name):
    """torch's constructor inputs, made anew for each use (a tensor lr must not carry over)."""
    return INFOS[name].optim_inputs_func(device="cpu")


def error_inputs(name):
    return INFOS[name].optim_error_inputs_func(device="cpu", dtype=torch.float32)


def skip_reason(kwargs, params) -> str | None:
    impls = sorted(set(kwargs) & set(TORCH_IMPLS))
    if impls:
        return f"{', '.join(impls)} selects one of torch's implementations; clrfast has one of its own"
    tensors = [params] if isinstance(params, torch.Tensor) else []
    if any(t.is_complex() or t.device.type != "cpu" for t in tensors):
        return "complex and CUDA parameters are outside this CPU suite"
    return None


def _cases(make):
    out = []
    for name in CLR:
        for i, item in enumerate(make(name)):
            o = getattr(item, "optimizer_error_input", item)
            reason = skip_reason(o.kwargs, o.params)
            out.append(
                pytest.param(
                    name,
                    i,
                    id=f"{name}-{re.sub(r'[^A-Za-z0-9]+', '_', o.desc).strip('_')}",
                    marks=[pytest.mark.skip(reason=reason)] if reason else [],
                )
            )
    return out


INPUTS = _cases(inputs)
ERRORS = _cases(error_inputs)


def clr_kwargs(name, kwargs) -> dict:
    """torch's kwargs as clrfast takes them: schedule=None and an explicit lr (torch's default when absent)."""
    kw = dict(kwargs)
    kw.setdefault("lr", inspect.signature(INFOS[name].optim_cls).parameters["lr"].default)
    return kw


def make(kind: str, name: str, index: int, params):
    """torch's or clrfast's optimizer for torch's input ``index``."""
    kwargs = inputs(name)[index].kwargs
    if kind == "torch":
        return INFOS[name].optim_cls(params, **kwargs)
    return CLR[name](params, **clr_kwargs(name, kwargs))


def outcome(call, expected=Exception):
    """(type, message) of the exception or warning ``call`` gives, or (None, None)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except Exception as e:
            return type(e), str(e)
    for w in caught:
        if issubclass(w.category, expected):
            return w.category, str(w.message)
    return None, None


def same(a, b) -> bool:
    """Deep equality, tensors by dtype and value (NaN equal to NaN)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a.nan_to_num(1.5), b.nan_to_num(1.5))
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def assert_twins(params_c, opt_c, params_t, opt_t, what=""):
    """Bit-identical parameters and per-parameter state."""
    for i, (pc, pt) in enumerate(zip(params_c, params_t)):
        assert torch.equal(pc, pt), f"{what}parameter {i}: {(pc - pt).abs().max()}"
        sc, st = opt_c.state.get(pc, {}), opt_t.state.get(pt, {})
        assert sc.keys() == st.keys(), f"{what}parameter {i}: state keys {sorted(sc)} vs torch's {sorted(st)}"
        for k in st:
            assert same(sc[k], st[k]), f"{what}parameter {i}: state[{k!r}]"


def _sequential(dtype=torch.float32):
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1), torch.nn.Sigmoid()).to(
        dtype
    )


def _conv_bn():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(4, 2, 1, stride=2), torch.nn.BatchNorm2d(2, eps=1e-05, momentum=0.1))


def _named(params, named):
    return [(f"name{i}", p) for i, p in enumerate(params)] if named else list(params)


def _twin_tensors(*shapes, seed=0):
    torch.manual_seed(seed)
    a = [Parameter(torch.randn(s)) for s in shapes]
    return a, [Parameter(p.detach().clone()) for p in a]


# --------------------------------------------------------------------------- (a) training against torch
@pytest.mark.parametrize("impl", ["forloop", "foreach", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", ["module", "named", "noncontiguous"])
@pytest.mark.parametrize("name, index", INPUTS)
def test_training_matches_torch(name, index, layout, dtype, impl):
    # torch's _compare_between: a step without gradients, a layer frozen for two steps, a 0-d parameter.
    if layout == "named" and not _torch_takes_names():
        pytest.skip("torch < 2.6 takes no named parameters")
    if impl == "fused" and (name not in ADAM or layout == "noncontiguous"):
        # the Adam rules' default reference; torch's fused kernel walks a strided parameter's memory
        # past its elements (tests/test_adam.py runs clrfast on one against fused=True on dense copies)
        pytest.skip("torch's fused kernel is the reference of the Adam rules' default, on dense parameters")
    kw_t = dict(inputs(name)[index].kwargs, **({"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}))
    torch.manual_seed(3)
    x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=dtype).reshape(3, 2)
    twins = []
    for kind in ("torch", "clrfast"):
        if layout == "noncontiguous":
            torch.manual_seed(2)
            w = Parameter(torch.randn(10, 5, 2, dtype=dtype)[..., 0])
            b = Parameter(torch.randn(10, 2, dtype=dtype)[..., 0])
            v = torch.randn(5, dtype=dtype)
            params, frozen = [w, b], [w]

            def loss(w=w, b=b, v=v):
                return (w.mv(v) + b).pow(2).sum()
        else:
            model = _sequential(dtype)
            extra = Parameter(torch.full((), 0.25, dtype=dtype))
            params, frozen = [*model.parameters(), extra], list(model[2].parameters())

            def loss(model=model):
                return model(x).sum()

        given = _named(params, True) if layout == "named" else params
        opt = (
            INFOS[name].optim_cls(given, **kw_t)
            if kind == "torch"
            else CLR[name](
                given,
                **clr_kwargs(name, inputs(name)[index].kwargs),
                **({"reference": None} if impl == "fused" else {}),
            )
        )
        twins.append((params, frozen, loss, opt))
    (params_t, _, _, opt_t), (params_c, _, _, opt_c) = twins
    for i in range(7):
        for params, frozen, loss, opt in twins:
            opt.zero_grad()
            for p in frozen:
                p.requires_grad_(not 3 <= i < 5)
            if i != 2:
                loss().backward()
                if layout != "noncontiguous":
                    params[-1].grad = torch.full((), 0.5 + i, dtype=dtype)
            opt.step()
        assert_twins(params_c, opt_c, params_t, opt_t, f"step {i}: ")


# --------------------------------------------------------------------------- (b) torch's error inputs
@pytest.mark.parametrize("name, index", ERRORS)
def test_error_inputs_raise_torchs_exception(name, index):
    ei = error_inputs(name)[index]
    o = ei.optimizer_error_input
    step_error = ei.error_on == _DB.OptimizerErrorEnum.STEP_ERROR

    def run(cls, params, kwargs):
        opt = cls(params, **kwargs)
        if step_error:
            opt.step()

    kind, message = outcome(lambda: run(INFOS[name].optim_cls, o.params, o.kwargs), ei.error_type)
    # torch's own expectation holds, so torch is the oracle for the case it names
    assert kind is ei.error_type and re.search(ei.error_regex, message), (kind, message)
    o = error_inputs(name)[index].optimizer_error_input  # fresh parameters
    if issubclass(kind, Warning):
        with pytest.warns(kind, match=re.escape(message)):
            run(CLR[name], o.params, clr_kwargs(name, o.kwargs))
    else:
        with pytest.raises(kind, match=re.escape(message)) as info:
            run(CLR[name], o.params, clr_kwargs(name, o.kwargs))
        assert info.type is kind


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("SGD", "lr", -0.5),
        ("SGD", "momentum", -0.5),
        ("SGD", "weight_decay", -1),
        ("AdamW", "lr", -1e-3),
        ("AdamW", "eps", -1.0),
        ("Adam", "weight_decay", -0.25),
        ("Adam", "betas", (0.9, 1.0)),
        ("Adam", "betas", (-0.1, 0.9)),
        ("SGD", "lr", torch.tensor(-0.5)),
    ],
)
def test_hyperparameter_errors_are_torchs_and_name_the_argument(name, key, value):
    kwargs = {"lr": 1e-3, key: value}
    kind, message = outcome(lambda: INFOS[name].optim_cls([Parameter(torch.zeros(2))], **kwargs))
    with pytest.raises(kind, match=re.escape(message)) as info:
        CLR[name]([Parameter(torch.zeros(2))], **kwargs)
    assert info.type is kind and f"['{key}']" in str(info.value)


@pytest.mark.parametrize("name", CLR)
def test_a_parameter_listed_twice_is_kept_once(name):
    (p, q), (pt, qt) = _twin_tensors((3,), (2,))
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = CLR[name]([p, q, p], lr=0.1)
    assert opt.param_groups[0]["params"] == [p, q]
    ref = INFOS[name].optim_cls([pt, qt], lr=0.1)
    for t in range(3):
        for params, o in (([p, q], opt), ([pt, qt], ref)):
            for i, x in enumerate(params):
                x.grad = torch.full_like(x, 0.5 * (t + 1) - i)
            o.step()
    assert_twins([p, q], opt, [pt, qt], ref)
    if _torch_takes_names():
        with pytest.warns(UserWarning, match="duplicate parameters"):
            named = CLR[name]([("a", p), ("b", q), ("c", p)], lr=0.1)
        assert named.param_groups[0]["params"] == [p, q] and named.param_groups[0]["param_names"] == ["a", "b"]


# --------------------------------------------------------------------------- named parameters
@NAMED
@pytest.mark.parametrize("name", CLR)
def test_named_parameters_are_kept_as_torch_keeps_them(name):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model_t = copy.deepcopy(model)
    opt = CLR[name](model.named_parameters(), lr=0.1)
    ref = INFOS[name].optim_cls(model_t.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["params"] == list(model.parameters())
    assert (
        opt.param_groups[0]["param_names"]
        == ref.param_groups[0]["param_names"]
        == ["0.weight", "0.bias", "1.weight", "1.bias"]
    )
    x = torch.randn(4, 3)
    for _ in range(3):
        for m, o in ((model, opt), (model_t, ref)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    assert_twins(list(model.parameters()), opt, list(model_t.parameters()), ref)
    assert opt.state_dict()["param_groups"][0]["param_names"] == ref.state_dict()["param_groups"][0]["param_names"]

    def groups(m):
        return [{"params": list(m[0].named_parameters())}, {"params": [("last", m[1].weight)], "lr": 0.01}]

    opt = CLR[name](groups(model), lr=0.1)
    ref = INFOS[name].optim_cls(groups(model_t), lr=0.1)
    assert [g["param_names"] for g in opt.param_groups] == [g["param_names"] for g in ref.param_groups]
    assert [g["param_names"] for g in opt.state_dict()["param_groups"]] == [["weight", "bias"], ["last"]]
    assert opt.param_groups[1]["lr"] == ref.param_groups[1]["lr"] == 0.01


@NAMED
@pytest.mark.parametrize("name", CLR)
def test_named_parameters_follow_a_schedule(name):
    model = torch.nn.Linear(3, 2)
    model_t = copy.deepcopy(model)
    opt = CLR[name](model.named_parameters(), clr.Constant(0.05))
    ref = INFOS[name].optim_cls(model_t.named_parameters(), lr=0.05)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    x = torch.randn(4, 3)
    for _ in range(3):
        for m, o in ((model, opt), (model_t, ref)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    assert_twins(list(model.parameters()), opt, list(model_t.parameters()), ref)


@NAMED
@pytest.mark.parametrize("route", ["clrfast-clrfast", "torch-clrfast", "clrfast-torch"])
@pytest.mark.parametrize("named1", [True, False], ids=["named1", "plain1"])
@pytest.mark.parametrize("named0", [True, False], ids=["named0", "plain0"])
@pytest.mark.parametrize("name, index", INPUTS)
def test_can_load_from_to_named_state_dict(name, index, named0, named1, route):
    # torch's test of that name, with a torch-to-torch run as the oracle of every value.
    def run(src, dst):
        model = _conv_bn()
        x = torch.rand(1, 4, 16, 16)

        def fwd_bwd(opt):
            opt.zero_grad()
            model(x).sum().backward()

        opt = make(src, name, index, model.named_parameters() if named0 else model.parameters())
        for _ in range(3):
            fwd_bwd(opt)
            opt.step()
        sd = copy.deepcopy(opt.state_dict())
        opt2 = make(dst, name, index, model.named_parameters() if named1 else model.parameters())
        opt2.load_state_dict(sd)
        fwd_bwd(opt2)
        opt2.step()
        return list(model.parameters()), opt2

    params_t, ref = run("torch", "torch")
    params, opt = run(*route.split("-"))
    assert_twins(params, opt, params_t, ref)
    names = opt.state_dict()["param_groups"][0].get("param_names")
    assert names == ref.state_dict()["param_groups"][0].get("param_names")
    if named0 or named1:
        assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]


@NAMED
@pytest.mark.parametrize("named", [True, False])
@pytest.mark.parametrize("name", CLR)
def test_a_loaded_state_dict_sets_the_names_torch_sets_and_guards_them_alike(name, named):
    (a, new), (at, new_t) = _twin_tensors((3,), (2,))
    ref = INFOS[name].optim_cls(_named([at], named), lr=0.1)
    opt = CLR[name](_named([a], named), lr=0.1)
    source = INFOS[name].optim_cls(_named([Parameter(torch.zeros(3))], not named), lr=0.2)
    ref.load_state_dict(source.state_dict())
    opt.load_state_dict(source.state_dict())
    # saved names replace the group's; a group keeps its own where the saved one has none
    assert opt.param_groups[0].get("param_names") == ref.param_groups[0].get("param_names") == ["name0"]
    assert opt.param_groups[0]["lr"] == 0.2
    # The group now has names either way, so a new group needs them too, as in torch.
    kind, message = outcome(lambda: ref.add_param_group({"params": [new_t]}))
    assert kind is not None
    with pytest.raises(kind, match=re.escape(message)):
        opt.add_param_group({"params": [new]})
    opt.add_param_group({"params": _named([new], True)})
    ref.add_param_group({"params": _named([new_t], True)})
    assert [g.get("param_names") for g in opt.param_groups] == [g.get("param_names") for g in ref.param_groups]


# --------------------------------------------------------------------------- state dicts
def _without_names(sd):
    sd = copy.deepcopy(sd)
    for group in sd["param_groups"]:
        group.pop("param_names", None)
    return sd


@pytest.mark.parametrize("named1", [True, False], ids=["named1", "plain1"])
@pytest.mark.parametrize("named0", [True, False], ids=["named0", "plain0"])
@pytest.mark.parametrize("name, index", INPUTS)
def test_state_dict_deterministic(name, index, named0, named1):
    if (named0 or named1) and not _torch_takes_names():
        pytest.skip("torch < 2.6 takes no named parameters")
    (w, b), (wt, bt) = _twin_tensors((2, 3), (2,))
    x = torch.randn(3)

    def fwd_bwd(opt, w, b):
        opt.zero_grad()
        (w.mv(x) + b).pow(2).sum().backward()

    opt = make("clrfast", name, index, _named([w, b], named0))
    ref = make("torch", name, index, _named([wt, bt], named0))
    for _ in range(10):
        for o, p, q in ((opt, w, b), (ref, wt, bt)):
            fwd_bwd(o, p, q)
            o.step()
    with torch.no_grad():
        wc, bc = Parameter(w.clone()), Parameter(b.clone())
    opt_c = make("clrfast", name, index, _named([wc, bc], named1))
    opt_c.load_state_dict(copy.deepcopy(opt.state_dict()))
    for _ in range(10):
        for o, p, q in ((opt, w, b), (opt_c, wc, bc), (ref, wt, bt)):
            fwd_bwd(o, p, q)
            o.step()
        assert torch.equal(w, wc) and torch.equal(b, bc)
    assert_twins([w, b], opt, [wt, bt], ref)
    assert same(opt.state_dict()["state"], ref.state_dict()["state"])
    assert same(_without_names(opt.state_dict()), _without_names(opt_c.state_dict()))
    # a group listed twice packs alike (torch's #36831)
    opt_c.param_groups.extend(opt_c.param_groups)
    assert same(
        _without_names(opt.state_dict())["param_groups"][-1], _without_names(opt_c.state_dict())["param_groups"][-1]
    )


@pytest.mark.parametrize("name, index", INPUTS)
def test_can_load_older_state_dict(name, index):
    # A state dict of an older torch lacks the flags added since (OptimizerInfo.not_og_supported_flags).
    runs = []
    for kind in ("torch", "clrfast"):
        model = _conv_bn()
        x = torch.rand(1, 4, 16, 16)
        opt = make(kind, name, index, model.parameters())

        def fwd_bwd(opt=opt, model=model, x=x):
            opt.zero_grad()
            model(x).sum().backward()

        for _ in range(3):
            fwd_bwd()
            opt.step()
        old = copy.deepcopy(opt.state_dict())
        for group in old["param_groups"]:
            for flag in INFOS[name].not_og_supported_flags:
                group.pop(flag, None)
        opt.load_state_dict(old)
        fwd_bwd()
        opt.step()
        runs.append((list(model.parameters()), opt))
    (params_t, ref), (params, opt) = runs
    assert_twins(params, opt, params_t, ref)


@pytest.mark.parametrize("as_number", [float, int], ids=["float", "int"])
@pytest.mark.parametrize("source", ["torch", "clrfast"])
@pytest.mark.parametrize("name, index", INPUTS)
def test_load_nontensor_step(name, index, source, as_number):
    # torch before 1.12 saved Adam's per-parameter step as a number; torch's __setstate__ makes it a tensor.
    (a0, a1), (b0, b1) = _twin_tensors((2, 3), (2, 3))
    for p, q in ((a0, b0), (a1, b1)):
        p.grad = torch.rand_like(p)
        q.grad = p.grad.clone()
    opt, ref = make("clrfast", name, index, [a0, a1]), make("torch", name, index, [b0, b1])
    for _ in range(3):
        opt.step()
        ref.step()
    sd = copy.deepcopy((ref if source == "torch" else opt).state_dict())
    for st in sd["state"].values():
        if torch.is_tensor(st.get("step")):
            st["step"] = as_number(st["step"].item())
    saved = copy.deepcopy(sd)
    torch_sd = copy.deepcopy(ref.state_dict()) if source == "clrfast" else copy.deepcopy(sd)
    for st in torch_sd["state"].values():
        if torch.is_tensor(st.get("step")):
            st["step"] = as_number(st["step"].item())
    opt.load_state_dict(sd)
    ref.load_state_dict(torch_sd)
    assert same(sd, saved)  # the caller's dict is left as it was
    for p, q in ((a0, b0), (a1, b1)):
        if "step" in ref.state[q]:
            assert same(opt.state[p]["step"], ref.state[q]["step"])
    for _ in range(3):
        opt.step()
        ref.step()
    assert_twins([a0, a1], opt, [b0, b1], ref)


@pytest.mark.parametrize("name", ["AdamW", "Adam"])
def test_load_nontensor_step_under_a_float64_default(name):
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        (a,), (b,) = _twin_tensors((4,))
        opt, ref = CLR[name]([a], lr=1e-2), INFOS[name].optim_cls([b], lr=1e-2)
        for _ in range(2):
            a.grad = torch.linspace(-1, 1, 4)
            b.grad = a.grad.clone()
            opt.step()
            ref.step()
        sd, torch_sd = copy.deepcopy(opt.state_dict()), copy.deepcopy(ref.state_dict())
        sd["state"][0]["step"] = 2.0
        torch_sd["state"][0]["step"] = 2.0
        opt.load_state_dict(sd)
        ref.load_state_dict(torch_sd)
        assert ref.state[b]["step"].dtype == torch.float64
        assert same(opt.state[a]["step"], ref.state[b]["step"])
        for _ in range(2):
            a.grad = torch.linspace(1, -1, 4)
            b.grad = a.grad.clone()
            opt.step()
            ref.step()
        assert_twins([a], opt, [b], ref)
    finally:
        torch.set_default_dtype(default)


@pytest.mark.parametrize("named", [True, False])
@pytest.mark.parametrize("name, index", INPUTS)
def test_save_load_equality_with_weights_only(name, index, named):
    if named and not _torch_takes_names():
        pytest.skip("torch < 2.6 takes no named parameters")
    (w, b), _ = _twin_tensors((2, 3), (2,))
    x = torch.randn(3)
    opt = make("clrfast", name, index, _named([w, b], named))

    def closure():
        opt.zero_grad()
        loss = (w.mv(x) + b).pow(2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    sd = opt.state_dict()
    for weights_only in (False, True):
        buf = io.BytesIO()
        torch.save(sd, buf)
        buf.seek(0)
        assert same(torch.load(buf, weights_only=weights_only), sd)


# --------------------------------------------------------------------------- steps without gradients
@pytest.mark.parametrize("name, index", INPUTS)
def test_step_is_noop_when_params_have_no_grad(name, index):
    params = [torch.randn(2, 3, requires_grad=False) for _ in range(2)]
    old = [p.detach().clone() for p in params]
    results = []
    for kind in ("torch", "clrfast"):
        opt = make(kind, name, index, params)
        results.append((opt.step(lambda: torch.tensor([1.0])), len(opt.state)))
    assert same(results[0], results[1])
    assert same(results[1][0], torch.tensor([1.0]))
    assert all(torch.equal(p, q) for p, q in zip(params, old))


@pytest.mark.parametrize("name, index", INPUTS)
def test_step_with_zero_grads_matches_torch(name, index):
    (a,), (b,) = _twin_tensors((5, 1))
    old = a.detach().clone()
    opt, ref = make("clrfast", name, index, [a]), make("torch", name, index, [b])
    for _ in range(2):
        a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
        opt.step()
        ref.step()
    assert_twins([a], opt, [b], ref)
    if torch.equal(b, old):  # torch's test_step_is_noop_for_zero_grads, where it applies
        assert torch.equal(a, old)


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("name", CLR)
def test_zero_grad_matches_torch(name, set_to_none, flat):
    (a0, a1), (b0, b1) = _twin_tensors((3,), (2, 2))
    opt = CLR[name]([a0, a1], lr=0.1, flat=flat)
    ref = INFOS[name].optim_cls([b0, b1], lr=0.1)
    for p, q in ((a0, b0), (a1, b1)):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    before = [p.grad for p in (a0, a1)]
    opt.zero_grad(set_to_none=set_to_none)
    ref.zero_grad(set_to_none=set_to_none)
    for p, q, g in zip((a0, a1), (b0, b1), before):
        assert same(p.grad, q.grad)
        if not set_to_none:
            assert p.grad is g  # zeroed where it lives, as torch does


# --------------------------------------------------------------------------- copies and printing
@pytest.mark.parametrize("name, index", INPUTS)
def test_deepcopy_copies_all_public_attrs(name, index):
    (a0, a1), _ = _twin_tensors((2, 3), (2, 3))
    for p in (a0, a1):
        p.grad = torch.rand_like(p)
    opt = make("clrfast", name, index, [a0, a1])
    for _ in range(3):
        opt.step()

    def public(obj):
        return {k for k in obj.__dict__ if not k.startswith("_")}

    (c0, c1), copied = copy.deepcopy(([a0, a1], opt))
    assert public(opt) == public(copied)
    for p, c in ((a0, c0), (a1, c1)):
        c.grad = p.grad.clone()  # a Parameter's deepcopy leaves its gradient behind
    for _ in range(3):
        opt.step()
        copied.step()
    assert torch.equal(a0, c0) and torch.equal(a1, c1)
    assert same(opt.state_dict(), copied.state_dict())


@pytest.mark.parametrize("name, index", INPUTS)
def test_repr_shows_the_lines_torch_shows(name, index):
    params = [Parameter(torch.randn(2, 3)) for _ in range(2)]
    opt, ref = make("clrfast", name, index, params), make("torch", name, index, params)
    shared = set(opt.param_groups[0]) & set(ref.param_groups[0]) - {"params"}
    lines = set(repr(opt).splitlines())
    assert "Parameter Group 0" in lines and f"    lr: {opt.param_groups[0]['lr']}" in lines
    for key in shared:
        assert f"    {key}: {opt.param_groups[0][key]}" in lines
        assert same(opt.param_groups[0][key], ref.param_groups[0][key]) or (
            opt.param_groups[0][key] == ref.param_groups[0][key]
        ), key  # 0.0 for torch's 0


# --------------------------------------------------------------------------- hooks
def _state_dict_pre_hook(optimizer):
    optimizer.state["test"] = 1


def _state_dict_post_hook(optimizer, state_dict):
    if "test" in state_dict["state"]:
        state_dict["state"].pop("test")
        state_dict["ran_state_dict_pre_hook"] = True
    else:
        state_dict["ran_state_dict_pre_hook"] = False
    return state_dict


def _load_pre_hook1(optimizer, state_dict):
    state_dict["param_groups"][0]["lr"] = 0.002


def _load_pre_hook2(optimizer, state_dict):
    mine = copy.deepcopy(state_dict)
    mine["param_groups"][0]["lr"] = 0.003
    return mine


def _load_post_hook(optimizer):
    optimizer.state["ran_load_state_dict_pre_hook2"] = optimizer.param_groups[0]["lr"] == 0.003
    optimizer.state["ran_load_state_dict_post_hook"] = True


def _both(name):
    """A torch and a clrfast optimizer over one parameter each."""
    return [cls([torch.rand(2, 3, requires_grad=True)], lr=1e-3) for cls in (INFOS[name].optim_cls, CLR[name])]


@pytest.mark.parametrize("name", CLR)
def test_state_dict_hooks(name):
    seen = []
    for hooks in ("pre", "post", "pre+post"):
        for opt in _both(name):
            if "pre" in hooks:
                opt.register_state_dict_pre_hook(_state_dict_pre_hook)
            if "post" in hooks:
                opt.register_state_dict_post_hook(_state_dict_post_hook)
            sd = opt.state_dict()
            seen.append((hooks, sd["state"].get("test"), sd.get("ran_state_dict_pre_hook")))
    assert seen[0::2] == seen[1::2] == [("pre", 1, None), ("post", None, False), ("pre+post", None, True)]


@pytest.mark.parametrize("name", CLR)
def test_load_state_dict_pre_hook_and_prepend(name):
    lrs = []
    for opt in _both(name):
        sd = opt.state_dict()
        opt.register_load_state_dict_pre_hook(_load_pre_hook1)
        opt.load_state_dict(sd)
        first = opt.param_groups[0]["lr"]
        opt.register_load_state_dict_pre_hook(_load_pre_hook2, prepend=True)
        opt.load_state_dict(sd)
        lrs.append((first, opt.param_groups[0]["lr"]))
    assert lrs[0] == lrs[1] == (0.002, 0.002)


@pytest.mark.parametrize("name", CLR)
def test_load_state_dict_post_hook(name):
    flags = []
    for with_pre in (False, True):
        for opt in _both(name):
            if with_pre:
                opt.register_load_state_dict_pre_hook(_load_pre_hook2)
            opt.register_load_state_dict_post_hook(_load_post_hook)
            opt.load_state_dict(opt.state_dict())
            flags.append((opt.state["ran_load_state_dict_pre_hook2"], opt.state["ran_load_state_dict_post_hook"]))
    assert flags == [(False, True), (False, True), (True, True), (True, True)]


@pytest.mark.parametrize("name", CLR)
def test_state_dict_hooks_see_and_may_replace_the_whole_dict(name):
    # A post hook may wrap the dict and a load pre hook unwrap it (as checkpoint converters do).
    (a,), (b,) = _twin_tensors((3,))
    pairs = [
        (a, CLR[name]([a], lr=0.1, momentum=0.9) if name == "SGD" else CLR[name]([a], lr=0.1)),
        (b, INFOS[name].optim_cls([b], lr=0.1, momentum=0.9) if name == "SGD" else INFOS[name].optim_cls([b], lr=0.1)),
    ]
    wrapped = []
    for p, opt in pairs:
        p.grad = torch.ones_like(p)
        opt.step()
        opt.register_state_dict_post_hook(lambda o, sd: {"wrapped": sd})
        opt.register_load_state_dict_pre_hook(lambda o, sd: sd["wrapped"])
        sd = opt.state_dict()
        wrapped.append(sorted(sd))
        opt.load_state_dict(sd)
        p.grad = torch.full_like(p, 2.0)
        opt.step()
    assert wrapped == [["wrapped"], ["wrapped"]]
    assert_twins([a], pairs[0][1], [b], pairs[1][1])


@pytest.mark.parametrize("name", CLR)
def test_step_pre_and_post_hooks(name):
    counts = []
    for kind in ("pre", "post"):
        for cls in (INFOS[name].optim_cls, CLR[name]):
            opt = cls([torch.tensor([1.0, 1.0])], lr=1e-3)
            data = [0]

            def hook(o, args, kwargs, data=data):
                data[0] += 2

            handle = opt.register_step_pre_hook(hook) if kind == "pre" else opt.register_step_post_hook(hook)
            opt.step()
            opt.step()
            handle.remove()
            opt.step()
            counts.append(data[0])
    assert counts == [4, 4, 4, 4]


@pytest.mark.parametrize("name", CLR)
def test_step_all_hooks(name):
    data = []
    opt = CLR[name]([torch.tensor([1.0, 1.0])], lr=1e-3)
    opt2 = torch.optim.SGD([torch.tensor([1.0, 1.0])])
    handles = [
        register_optimizer_step_pre_hook(lambda *a: data.append(0)),
        register_optimizer_step_post_hook(lambda *a: data.append(5)),
    ]
    for o in (opt, opt2):
        handles.append(o.register_step_pre_hook(lambda *a: data.append(1)))
        handles.append(o.register_step_post_hook(lambda *a: data.append(2)))
    try:
        opt.step()
        assert data == [0, 1, 2, 5]
        opt2.step()
        opt.step()
        assert data == [0, 1, 2, 5] * 3
    finally:
        for h in handles:
            h.remove()
    opt.step()
    opt2.step()
    assert data == [0, 1, 2, 5] * 3


# --------------------------------------------------------------------------- add_param_group and all or nothing
def _snapshot(opt, params):
    return (
        copy.deepcopy(opt.state_dict()),
        [list(g["params"]) for g in opt.param_groups],
        [(p.detach().clone(), p.data_ptr()) for p in params],
    )


def _assert_unchanged(opt, params, snap):
    sd, groups, values = _snapshot(opt, params)
    assert same(sd, snap[0])
    assert all(a == b for a, b in zip(groups, snap[1])) and len(groups) == len(snap[1])
    assert all(torch.equal(v, w) and ptr == q for (v, ptr), (w, q) in zip(values, snap[2]))


BAD_GROUPS = {
    "not a dict": lambda p, new: [new],
    "a set": lambda p, new: {"params": {new}},
    "not a tensor": lambda p, new: {"params": [new, 1.5]},
    "non-leaf": lambda p, new: {"params": [new * 2]},
    "already in a group": lambda p, new: {"params": [new, p]},
    "names missing": lambda p, new: {"params": [("a", new), Parameter(torch.zeros(2))]},
    "with names": lambda p, new: {"params": [("a", new)]},
    "without names": lambda p, new: {"params": [new]},
}
ADD_CASES = [
    (case, named)
    for case in BAD_GROUPS
    for named in (False, True)
    if not (case == "with names" and named) and not (case == "without names" and not named)
]


@pytest.mark.parametrize("case, named", ADD_CASES, ids=[f"{c}-{'named' if n else 'plain'}" for c, n in ADD_CASES])
@pytest.mark.parametrize("name", CLR)
def test_add_param_group_errors_are_torchs_and_change_nothing(name, case, named):
    if (named or "names" in case) and not _torch_takes_names():
        pytest.skip("torch < 2.6 takes no named parameters")
    (a, new), (b, new_t) = _twin_tensors((3,), (2,))
    opt = CLR[name](_named([a], named), lr=0.1)
    ref = INFOS[name].optim_cls(_named([b], named), lr=0.1)
    for p, o in ((a, opt), (b, ref)):
        p.grad = torch.ones_like(p)
        o.step()
    kind, message = outcome(lambda: ref.add_param_group(BAD_GROUPS[case](b, new_t)))
    assert kind is not None, "torch accepts the group"
    group = BAD_GROUPS[case](a, new)
    given = copy.copy(group)
    snap = _snapshot(opt, [a, new])
    with pytest.raises(kind, match=re.escape(message)) as info:
        opt.add_param_group(group)
    assert info.type is kind
    _assert_unchanged(opt, [a, new], snap)
    assert group == given  # the caller's group is left as it was
    for p, o in ((a, opt), (b, ref)):
        p.grad = torch.full_like(p, -1.0)
        o.step()
    assert_twins([a], opt, [b], ref)


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize(
    "groups",
    [
        lambda a, b: [{"params": [a]}, {"params": [b, a]}],
        lambda a, b: [{"params": [("a", a)]}, {"params": [b]}],
        lambda a, b: [{"params": [a]}, {"params": [("b", b)]}],
        lambda a, b: [("a", a), b],
    ],
    ids=["in two groups", "names then none", "none then names", "names missing"],
)
def test_a_constructor_refused_by_torchs_checks_moves_nothing(groups, flat):
    if not _torch_takes_names():
        pytest.skip("torch < 2.6 takes no named parameters")
    (a, b), (at, bt) = _twin_tensors((3,), (2,))
    for p in (a, b):
        p.grad = torch.full_like(p, 2.0)
    kind, message = outcome(lambda: torch.optim.SGD(groups(at, bt), lr=0.1))
    assert kind is not None
    before = [(p.data_ptr(), p.grad.data_ptr(), p.detach().clone()) for p in (a, b)]
    with pytest.raises(kind, match=re.escape(message)):
        CLRSGD(groups(a, b), lr=0.1, flat=flat)
    assert [(p.data_ptr(), p.grad.data_ptr()) for p in (a, b)] == [x[:2] for x in before]
    assert all(torch.equal(p, x[2]) and torch.equal(p.grad, torch.full_like(p, 2.0)) for p, x in zip((a, b), before))


@pytest.mark.parametrize("name", CLR)
def test_a_refused_load_changes_nothing(name):
    (a0, a1, a2), (b0, b1, b2) = _twin_tensors((3,), (2,), (4,))
    kw = {"lr": 0.1, "momentum": 0.9} if name == "SGD" else {"lr": 0.1}
    opt = CLR[name]([{"params": [a0, a1]}, {"params": [a2]}], **kw)
    ref = INFOS[name].optim_cls([{"params": [b0, b1]}, {"params": [b2]}], **kw)

    def step(t):
        for p, q in zip((a0, a1, a2), (b0, b1, b2)):
            p.grad = torch.full_like(p, 0.3 * t - 1)
            q.grad = p.grad.clone()
        opt.step()
        ref.step()

    for t in range(2):
        step(t)
    good = ref.state_dict()

    def edited(fn):
        sd = copy.deepcopy(good)
        fn(sd)
        return sd

    torch_checked = [  # torch refuses these itself: its exception and message
        edited(lambda sd: sd["param_groups"].pop()),
        edited(lambda sd: sd["param_groups"][0]["params"].pop()),
    ]
    for bad in torch_checked:
        kind, message = outcome(lambda bad=bad: ref.load_state_dict(copy.deepcopy(bad)))
        assert kind is not None
        snap = _snapshot(opt, [a0, a1, a2])
        with pytest.raises(kind, match=re.escape(message)):
            opt.load_state_dict(bad)
        _assert_unchanged(opt, [a0, a1, a2], snap)
    key = BY_TORCH_NAME[name].state_keys[0]

    def shape_and_old_step(sd):
        for st in sd["state"].values():
            if "step" in st:
                st["step"] = float(st["step"])  # upgraded only if the whole load goes through
        sd["state"][2][key] = torch.zeros(3)

    clrfast_checked = [  # torch loads these and fails at the step, or later
        edited(shape_and_old_step),
        edited(lambda sd: sd["param_groups"][1].update(lr="fast")),
    ]
    for bad in clrfast_checked:
        snap = _snapshot(opt, [a0, a1, a2])
        with pytest.raises((TypeError, ValueError)):
            opt.load_state_dict(bad)
        _assert_unchanged(opt, [a0, a1, a2], snap)
    step(2)
    assert_twins([a0, a1, a2], opt, [b0, b1, b2], ref)
