"""Fused optimizers and drop-in schedulers under torch.compile: no recompilation while the schedule moves.

Frames are counted with Dynamo's counting backends; "eager" runs the captured graph with
the original kernels, so weights can be compared bit for bit with an eager loop.
"""

import pytest

torch = pytest.importorskip("torch")
dynamo_testing = pytest.importorskip("torch._dynamo.testing")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRSGD, CLRAdamW, OneCycleLR  # noqa: E402

# Dynamo reads .grad of every tensor it wraps, the loss included, when it resumes after
# backward(); torch warns about that non-leaf access from its own internals.
# Tracing torch's own optimizers touches torch.jit internals that warn about their deprecation.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

SCHED = clr.Cyclic(0.01, 0.1, step_size_up=5, step_size_down=3, base_momentum=0.8, max_momentum=0.9)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _train(model, opt, x, y):
    opt.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    return loss


def _forward_backward(model, opt, x, y):
    opt.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    return loss


def _data(t):
    g = torch.Generator().manual_seed(t)
    return torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g)


OPTIMIZERS = {
    "clrsgd": lambda ps: CLRSGD(ps, SCHED, weight_decay=1e-3, nesterov=True),
    "clrsgd-flat": lambda ps: CLRSGD(ps, SCHED, weight_decay=1e-3, flat=True),
    "clradamw": lambda ps: CLRAdamW(ps, SCHED, weight_decay=1e-2, amsgrad=True),
    # a group's lr_scale and a weight-decay schedule, read by the step the compiled op runs
    "clradamw-scaled-flat": lambda ps: CLRAdamW(_scaled_groups(ps), SCHED, weight_decay=WD, flat=True),
}


def _scaled_groups(ps):
    ps = list(ps)
    return [{"params": ps[:2]}, {"params": ps[2:], "lr_scale": 0.5}]


WD = clr.WarmupCosine(1e-2, 5, 100)


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_compiled_train_step_never_recompiles_and_matches_eager(kind):
    model, eager_model = _model(), _model()
    opt, eager_opt = OPTIMIZERS[kind](model.parameters()), OPTIMIZERS[kind](eager_model.parameters())
    counter = dynamo_testing.CompileCounterWithBackend("eager")
    step = torch.compile(_train, backend=counter)
    warm = None
    for t in range(120):
        x, y = _data(t)
        step(model, opt, x, y)
        _train(eager_model, eager_opt, x, y)
        if t == 3:
            warm = counter.frame_count
    assert warm > 0 and counter.frame_count == warm  # lr and momentum cycled 15 times meanwhile
    assert opt.param_groups[0]["step"] == 120
    assert opt.param_groups[0]["lr"] == SCHED.lr(120)
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kind", ["clrsgd", "clradamw-scaled-flat"])
def test_inductor_compiled_step_applies_the_eager_update(kind):
    # Inductor compiles forward and backward differently from eager, so the twin shares the
    # compiled forward/backward and runs only the optimizer step eagerly.
    model, twin = _model(), _model()
    opt, twin_opt = OPTIMIZERS[kind](model.parameters()), OPTIMIZERS[kind](twin.parameters())
    counter = dynamo_testing.CompileCounterWithBackend("inductor")
    step = torch.compile(_train, backend=counter)
    fwd_bwd = torch.compile(_forward_backward)
    warm = None
    for t in range(40):
        x, y = _data(t)
        step(model, opt, x, y)
        fwd_bwd(twin, twin_opt, x, y)
        twin_opt.step()
        if t == 3:
            warm = counter.frame_count
    assert warm > 0 and counter.frame_count == warm
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "make, cycle_momentum",
    [
        (lambda ps: torch.optim.SGD(ps, lr=torch.tensor(0.01), momentum=0.9), True),
        (lambda ps: torch.optim.AdamW(ps, lr=torch.tensor(0.01), foreach=False), False),
        (lambda ps: torch.optim.AdamW(ps, lr=torch.tensor(0.01), foreach=False), True),
    ],
    ids=["sgd", "adamw", "adamw-beta1"],
)
def test_drop_in_scheduler_writes_a_tensor_lr_without_recompiling(make, cycle_momentum):
    p = torch.nn.Parameter(torch.randn(10))
    q = torch.nn.Parameter(p.detach().clone())
    opt, ref = make([p]), make([q])
    lr_tensor = opt.param_groups[0]["lr"]
    sched = OneCycleLR(opt, max_lr=0.01, total_steps=100, cycle_momentum=cycle_momentum)
    ref_sched = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=0.01, total_steps=100, cycle_momentum=cycle_momentum)
    counter = dynamo_testing.CompileCounterWithBackend("eager")
    step = torch.compile(opt.step, backend=counter)
    ref_step = torch.compile(ref.step, backend="eager")  # torch's compiled update rounds unlike its eager one
    warm = None
    for t in range(40):
        g = torch.randn(10, generator=torch.Generator().manual_seed(t))
        p.grad, q.grad = g.clone(), g.clone()
        step()
        ref_step()
        sched.step()
        ref_sched.step()
        if t == 3:
            warm = counter.frame_count
    assert counter.frame_count == warm
    assert opt.param_groups[0]["lr"] is lr_tensor  # written in place with fill_, never replaced
    assert torch.equal(opt.param_groups[0]["lr"], ref.param_groups[0]["lr"])
    assert torch.equal(p, q)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@cuda
def test_cuda_graph_replays_apply_the_schedule_step_by_step():
    s = clr.Cyclic(0.01, 0.1, step_size_up=7, base_momentum=0.8, max_momentum=0.9)
    p = torch.nn.Parameter(torch.zeros(1000, device="cuda"))
    p.grad = torch.ones_like(p)
    opt = CLRSGD([p], s)
    opt.step()  # warm-up outside the capture: plans and state exist
    start = p.detach().clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    before = p.detach().clone()  # capture does not run the step
    for _ in range(100):
        graph.replay()
    torch.cuda.synchronize()
    expect = before.double().cpu()
    buf = torch.ones(1000, dtype=torch.float64)
    for t in range(1, 101):
        m = s.momentum(t)
        buf = buf * m + 1.0
        expect = expect - s.lr(t) * buf
    assert torch.allclose(p.detach().double().cpu(), expect, rtol=1e-5)
    assert not torch.equal(start, p.detach())
    opt.state_dict()  # syncs the device clock
    assert opt.param_groups[0]["step"] == 101
