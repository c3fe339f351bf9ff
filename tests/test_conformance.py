"""The conformance matrix: every fused optimizer inside torch.compile's real backends.

For each rule (``optim_registry``) × list/flat × backend {eager, aot_eager, inductor} × {all
trained, a frozen and an unused parameter} × lr source {schedule, float, tensor}, a whole train
step (``zero_grad``, forward, ``backward``, ``opt.step()``) is compiled and compared bit for bit with

- its twin: the same forward/backward compiled with the same backend, then an eager
  ``opt.step()`` (so both see the same gradients, whatever the backend does to them);
- for a float lr, or a tensor lr where the reference applies one as clrfast does, the
  rule's reference (torch's for-loop optimizer, lion_pytorch.Lion) stepped eagerly on the
  twin's gradients.

CLRSGD and the Adam family run the whole matrix. The rules on the generic rule engine share
its compile path (the custom op, its functionalization, the plans) and differ in their kernel
and state: they run 9 of its 36 cells per rule, every backend with every lr source, each
backend list and flat, frozen and not, and every pair of the other three factors.

AOTAutograd's backends functionalize the step's custom op (it runs on clones of the tensors
it declares mutated, which are copied back afterwards); Dynamo's "eager" backend does not, so
both kinds are run. No recompilation is allowed once the step is warm.
"""

import copy
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
dynamo_testing = pytest.importorskip("torch._dynamo.testing")

import clrfast as clr  # noqa: E402
from optim_registry import NEW, RULES  # noqa: E402

pytestmark = [
    # Dynamo reads .grad of every tensor it wraps when it resumes after backward().
    pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

SCHED = clr.Cyclic(0.01, 0.05, step_size_up=2, step_size_down=3, base_momentum=0.8, max_momentum=0.9)
LR = 0.01
BACKENDS = ("eager", "aot_eager", "inductor")
LR_KINDS = ("schedule", "float", "tensor")
# (backend, lr source, flat, frozen): every pair of two factors occurs
PAIRWISE = [
    ("eager", "schedule", False, False),
    ("eager", "float", False, False),
    ("eager", "tensor", True, True),
    ("aot_eager", "schedule", False, False),
    ("aot_eager", "float", False, True),
    ("aot_eager", "tensor", True, False),
    ("inductor", "schedule", True, True),
    ("inductor", "float", True, False),
    ("inductor", "tensor", False, True),
]


def _cell(name, flat, backend, frozen, lr_kind):
    rule = RULES[name]
    ids = f"{name}-{'flat' if flat else 'list'}-{backend}-{'frozen' if frozen else 'all-trained'}-{lr_kind}"
    return pytest.param(rule, flat, backend, frozen, lr_kind, id=ids, marks=rule.marks)


MATRIX = [
    _cell(name, flat, backend, frozen, lr_kind)
    for name in RULES
    for flat in (False, True)
    for backend in BACKENDS
    for frozen in (False, True)
    for lr_kind in LR_KINDS
    if name not in NEW or (backend, lr_kind, flat, frozen) in PAIRWISE
]
RELOADS = [
    pytest.param(
        RULES[name], flat, backend, id=f"{name}-{'flat' if flat else 'list'}-{backend}", marks=RULES[name].marks
    )
    for name in RULES
    for flat in (False, True)
    for backend in ("aot_eager", "inductor")
    if name not in NEW or flat == (backend == "inductor")
]
STEPS = 6
WARM = 2


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Net(torch.nn.Module):
    def __init__(self, frozen: bool):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.head = torch.nn.Linear(16, 2)  # unused by forward when frozen: it never gets a gradient
        self.frozen = frozen
        if frozen:
            self.body[0].bias.requires_grad_(False)

    def forward(self, x):
        y = self.body(x)
        if not self.frozen:
            y = y + self.head(self.body[1](self.body[0](x))).sum(dim=1, keepdim=True)
        return y


def _data(t):
    g = torch.Generator().manual_seed(t)
    return torch.randn(16, 8, generator=g), torch.randn(16, 1, generator=g)


def _forward_backward(model, opt, x, y):
    opt.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    return loss


def _train(model, opt, x, y):
    # written out, not calling _forward_backward: frames that two compiled callers share
    # would be guarded on both optimizers and recompile as they alternate
    opt.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    return loss


def _lr_source(kind):
    """(schedule, lr) for an lr source; the tensor is refilled each step as a torch scheduler would."""
    if kind == "schedule":
        return SCHED, None
    if kind == "float":
        return None, LR
    return None, torch.tensor(LR)  # float32, torch's default dtype


def _set_tensor_lr(opts, t):
    for opt in opts:
        for group in opt.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(LR * (1 + 0.5 * (t % 3)))


def _params_equal(a, b):
    return [torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())]


@pytest.mark.parametrize("rule, flat, backend, frozen, lr_kind", MATRIX)
def test_compiled_step_is_the_eager_step(rule, flat, backend, frozen, lr_kind):
    schedule, lr = _lr_source(lr_kind)
    model, twin = Net(frozen), Net(frozen)
    start = [p.detach().clone() for p in model.parameters()]
    opt = rule.make(model.parameters(), schedule, lr, flat)
    twin_opt = rule.make(twin.parameters(), schedule, lr.clone() if isinstance(lr, torch.Tensor) else lr, flat)
    oracle = ref_opt = None
    if schedule is None and (rule.tensor_lr or lr_kind == "float"):  # else no reference for this lr source
        oracle = Net(frozen)
        ref_opt = rule.make_reference(oracle.parameters(), lr.clone() if isinstance(lr, torch.Tensor) else lr)
    counter = dynamo_testing.CompileCounterWithBackend(backend)
    step = torch.compile(_train, backend=counter)
    fwd_bwd = torch.compile(_forward_backward, backend=backend)
    warm = None
    for t in range(STEPS):
        _set_tensor_lr([opt, twin_opt] + ([ref_opt] if ref_opt else []), t)
        x, y = _data(t)
        step(model, opt, x, y)
        fwd_bwd(twin, twin_opt, x, y)
        if oracle is not None:
            ref_opt.zero_grad()
            for q, o in zip(twin.parameters(), oracle.parameters()):
                o.grad = None if q.grad is None else q.grad.clone()
        twin_opt.step()
        if oracle is not None:
            ref_opt.step()
        if t == WARM:
            warm = counter.frame_count
    assert warm > 0 and counter.frame_count == warm, "recompiled after warm-up"
    assert opt.param_groups[0]["step"] == STEPS
    assert all(_params_equal(model, twin)), _params_equal(model, twin)
    moved = [not torch.equal(p, q) for p, q in zip(model.parameters(), start)]
    trained = [
        p.requires_grad and not (frozen and p is model.head.weight or frozen and p is model.head.bias)
        for p in model.parameters()
    ]
    assert moved == trained  # every trained parameter moved, the frozen and unused ones did not
    if oracle is not None:
        assert all(_params_equal(twin, oracle)), _params_equal(twin, oracle)
        for p, q in zip(twin.parameters(), oracle.parameters()):
            st, ref_st = twin_opt.state.get(p, {}), ref_opt.state.get(q, {})
            for key, value in ref_st.items():
                if key != "step":
                    assert torch.equal(st[key], value), key


@pytest.mark.parametrize("rule, flat, backend", RELOADS)
def test_compiled_step_after_add_param_group_and_load_state_dict(rule, flat, backend):
    model, twin = Net(False), Net(False)
    extra, twin_extra = (torch.nn.Parameter(torch.linspace(-1, 1, 5)) for _ in range(2))
    opt = rule.make(list(model.body.parameters()), SCHED, None, flat)
    twin_opt = rule.make(list(twin.body.parameters()), SCHED, None, flat)
    step = torch.compile(_train, backend=backend)
    fwd_bwd = torch.compile(_forward_backward, backend=backend)

    def run(t0, t1, counter_step=step):
        for t in range(t0, t1):
            x, y = _data(t)
            counter_step(model, opt, x, y)
            fwd_bwd(twin, twin_opt, x, y)
            twin_opt.step()

    run(0, 3)
    opt.add_param_group(
        {"params": list(model.head.parameters()) + [extra], "schedule": clr.Constant(0.02), "flat": flat}
    )
    twin_opt.add_param_group(
        {"params": list(twin.head.parameters()) + [twin_extra], "schedule": clr.Constant(0.02), "flat": flat}
    )
    extra.grad, twin_extra.grad = torch.ones(5), torch.ones(5)  # cleared by the next zero_grad
    run(3, 6)
    saved = twin_opt.state_dict()
    opt.load_state_dict(copy.deepcopy(saved))  # torch's load keeps the dict's tensors: one copy each
    twin_opt.load_state_dict(copy.deepcopy(saved))
    counter = dynamo_testing.CompileCounterWithBackend(backend)
    counted = torch.compile(_train, backend=counter)
    run(6, 8, counted)
    warm = counter.frame_count
    run(8, 11, counted)
    assert counter.frame_count == warm, "recompiled after warm-up"
    assert all(_params_equal(model, twin))
    assert opt.param_groups[1]["step"] == twin_opt.param_groups[1]["step"] == 8


_PROCESS = textwrap.dedent(
    """
    import sys, torch, clrfast as clr
    from clrfast.torch import CLRSGD
    flat = sys.argv[1] == "flat"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    start = [p.detach().clone() for p in model.parameters()]
    opt = CLRSGD(model.parameters(), clr.Cyclic(0.01, 0.05, step_size_up=2), momentum=0.9, flat=flat)
    def train(x, y):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    step = torch.compile(train, backend="inductor")
    for t in range(4):
        g = torch.Generator().manual_seed(t)
        step(torch.randn(16, 8, generator=g), torch.randn(16, 1, generator=g))
    print(sum(not torch.equal(p, q) for p, q in zip(model.parameters(), start)))
    """
)


def test_nothing_leaks_between_processes_through_inductors_cache(tmp_path):
    # Two processes share one on-disk cache, as runs on one machine do: the second one's graph
    # may come from the first's cache, and must still update every parameter of its own.
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"), TORCHINDUCTOR_FX_GRAPH_CACHE="1")
    script = tmp_path / "run.py"
    script.write_text(_PROCESS)
    for mode in ("flat", "list", "list"):
        out = subprocess.run(
            [sys.executable, "-W", "ignore", str(script), mode], env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.split()[-1] == "4", (mode, out.stdout, out.stderr[-2000:])
