"""The fused Adam/AdamW kernel (_core.adam_step) against torch.optim.Adam / AdamW, bit for bit.

Tables are built from torch tensors' data pointers, exactly as a front end would. lr and beta1 change
on every step (as under CyclicLR/OneCycleLR with momentum cycling) and torch's optimizer is given the
same values through its param_group.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from clrfast import _core  # noqa: E402
from clrfast.torch._sqrt import torch_sqrt_routines  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
LENGTHS = [1, 7, 15, 16, 17, 37, 1000]
SQRT = torch_sqrt_routines()
# Without MKL, torch's sqrt is IEEE and so is the kernel's default.
needs_torch_sqrt = pytest.mark.skipif(
    torch.backends.mkl.is_available() and SQRT[:2] == (0, 0), reason="torch's MKL sqrt routine not found"
)


def hyper(k: int) -> tuple[float, float]:
    """lr and beta1 of step k: both move every step; beta1 sometimes <= 0.5 (lerp's other branch)."""
    lr = 1e-3 * (1.0 + math.sin(0.37 * k)) + 1e-5
    beta1 = 0.85 + 0.1 * math.cos(0.21 * k)
    if k % 23 == 5:
        beta1 = 0.3
    if k % 29 == 11:
        beta1 = 0.5  # 1 - beta1 == 0.5 exactly: not "small"
    return lr, beta1


def adam_step(
    table,
    lr,
    beta1,
    beta2,
    eps,
    wd,
    decoupled,
    amsgrad,
    maximize,
    inv_scale,
    store_grad,
    threads,
    sqrt_f32=0,
    sqrt_f64=0,
    sqrt_threads_local=0,
    lr_dtype=1,
    vec_bytes=0,
    divide_scale=False,
):
    """The Adam rule's kernel with its scalars by name (their order is the rule's declaration)."""
    values = dict(
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=wd,
        decoupled=decoupled,
        amsgrad=amsgrad,
        maximize=maximize,
        lr_dtype=lr_dtype,
        vec_bytes=vec_bytes,
    )
    _core.adam_step(
        table,
        [float(values[k]) for k in _core.rules["adam"]["scalars"]],
        inv_scale,
        store_grad,
        threads,
        sqrt_f32,
        sqrt_f64,
        sqrt_threads_local,
        divide_scale=divide_scale,
    )


class Kernel:
    """Parameters and Adam state of our own, driven through _core.adam_step."""

    def __init__(self, params, amsgrad, step_dtype=torch.float32):
        self.p = [p.detach().clone() for p in params]
        self.g = [torch.zeros_like(p) for p in self.p]
        self.m = [torch.zeros_like(p) for p in self.p]
        self.v = [torch.zeros_like(p) for p in self.p]
        self.vm = [torch.zeros_like(p) for p in self.p] if amsgrad else None
        self.step = [torch.zeros((), dtype=step_dtype) for _ in self.p]
        sd = 1 if step_dtype == torch.float64 else 0
        rows = []
        for i, p in enumerate(self.p):
            vm = self.vm[i].data_ptr() if amsgrad else 0
            rows.append(
                [
                    p.data_ptr(),
                    self.g[i].data_ptr(),
                    self.m[i].data_ptr(),
                    self.v[i].data_ptr(),
                    vm,
                    p.numel(),
                    CODES[p.dtype],
                    self.step[i].data_ptr(),
                    sd,
                    0,  # fresh: Adam's new state is zeros, no flag
                ]
            )
        self.table = np.array(rows, dtype=np.int64).reshape(-1, _core.rules["adam"]["width"])
        self.amsgrad = amsgrad

    def step_(
        self,
        grads,
        lr,
        beta1,
        *,
        beta2=0.999,
        eps=1e-8,
        wd=0.0,
        decoupled=False,
        maximize=False,
        inv_scale=1.0,
        store_grad=False,
        threads=2,
        sqrt=SQRT,
        vec_bytes=0,
        divide_scale=False,
    ):
        for mine, g in zip(self.g, grads):
            mine.copy_(g)
        adam_step(
            self.table,
            lr,
            beta1,
            beta2,
            eps,
            wd,
            decoupled,
            self.amsgrad,
            maximize,
            inv_scale,
            store_grad,
            threads,
            *sqrt,
            vec_bytes=vec_bytes,
            divide_scale=divide_scale,
        )


def bits_equal(a, b) -> bool:
    return torch.equal(a.view(-1), b.view(-1)) or bool((a.view(-1) == b.view(-1)).all())


def assert_bits(mine, theirs, what):
    for i, (a, b) in enumerate(zip(mine, theirs)):
        diff = int((a.view(-1) != b.view(-1)).sum())
        assert diff == 0, f"{what}[{i}] (n={a.numel()}): {diff} elements differ, max {float((a - b).abs().max())}"


def drive(
    dtype,
    lengths,
    *,
    amsgrad,
    maximize,
    wd,
    decoupled,
    foreach=False,
    steps,
    eps=1e-8,
    threads=2,
    seed=0,
    fused=False,
    scale=None,
):
    """The kernel beside torch's for-loop/foreach path, or (``fused``) its fused kernel, which the
    kernel then follows with ``vec_bytes=32`` and the IEEE root; ``scale``: GradScaler's, divided."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(n, generator=gen, dtype=dtype) for n in lengths]
    ref = [p.clone().requires_grad_() for p in params]
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    path = dict(fused=True) if fused else dict(foreach=foreach)
    opt = cls(ref, lr=1e-3, eps=eps, weight_decay=wd, amsgrad=amsgrad, maximize=maximize, **path)
    k = Kernel(params, amsgrad)
    kernel_path = dict(sqrt=(0, 0, 0), vec_bytes=32) if fused else {}
    if scale is not None:
        kernel_path.update(inv_scale=scale, store_grad=True, divide_scale=True)
    for t in range(steps):
        lr, beta1 = hyper(t)
        grads = [torch.randn(n, generator=gen, dtype=dtype) for n in lengths]
        for q, g in zip(ref, grads):
            q.grad = g.clone()
        for group in opt.param_groups:
            group["lr"] = lr
            group["betas"] = (beta1, 0.999)
        if scale is not None:
            opt.grad_scale, opt.found_inf = torch.tensor(scale), torch.tensor(0.0)
        opt.step()
        k.step_(
            grads, lr, beta1, eps=eps, wd=wd, decoupled=decoupled, maximize=maximize, threads=threads, **kernel_path
        )
    return k, ref, opt


def assert_state_bits(k, ref, opt, amsgrad):
    """Parameters and moments bit for bit the reference's."""
    assert_bits(k.p, [q.detach() for q in ref], "param")
    states = [opt.state[q] for q in ref]
    assert_bits(k.m, [s["exp_avg"] for s in states], "exp_avg")
    assert_bits(k.v, [s["exp_avg_sq"] for s in states], "exp_avg_sq")
    if amsgrad:
        assert_bits(k.vm, [s["max_exp_avg_sq"] for s in states], "max_exp_avg_sq")
    return states


WD_MODES = [(0.0, False), (0.02, False), (0.0, True), (0.05, True)]


@needs_torch_sqrt
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("wd,decoupled", WD_MODES)
@pytest.mark.parametrize("foreach", [False, True])
def test_bit_identical_to_torch(dtype, amsgrad, maximize, wd, decoupled, foreach):
    k, ref, opt = drive(
        dtype, LENGTHS, amsgrad=amsgrad, maximize=maximize, wd=wd, decoupled=decoupled, foreach=foreach, steps=200
    )
    states = assert_state_bits(k, ref, opt, amsgrad)
    assert all(float(s) == float(st_["step"]) == 200.0 for s, st_ in zip(k.step, states))


@needs_torch_sqrt
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [1e-8, 1e-3, 0.0])
def test_long_tensor_and_eps(dtype, eps):
    # 100003 elements: vector body, scalar tail, and torch's own intra-op chunking.
    k, ref, _ = drive(
        dtype, [100003, 5], amsgrad=True, maximize=False, wd=0.01, decoupled=True, foreach=False, steps=40, eps=eps
    )
    assert_bits(k.p, [q.detach() for q in ref], "param")


def test_threads_do_not_change_bits():
    # Large enough that threads=2 really splits the work, with a range boundary inside a segment.
    lengths = [70001, 3, 90011, 17]
    gen = torch.Generator().manual_seed(3)
    params = [torch.randn(n, generator=gen) for n in lengths]
    a, b = Kernel(params, True), Kernel(params, True)
    for t in range(30):
        lr, beta1 = hyper(t)
        grads = [torch.randn(n, generator=gen) for n in lengths]
        a.step_(grads, lr, beta1, wd=0.1, decoupled=True, threads=1)
        b.step_(grads, lr, beta1, wd=0.1, decoupled=True, threads=2)
    assert_bits(a.p, b.p, "param")
    assert_bits(a.vm, b.vm, "max_exp_avg_sq")


# ---------------------------------------------------------------- the IEEE-sqrt path and half precision


def torch_ops_step(p, g, m, v, vm, step, lr, beta1, beta2, eps, wd, decoupled, maximize, sqrt):
    """torch's single-tensor Adam, op for op, with the square root supplied (the oracle of the IEEE path)."""
    step += 1
    if maximize:
        g = -g
    if wd != 0:
        if decoupled:
            p.mul_(1 - lr * wd)
        else:
            g = g.add(p, alpha=wd)
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    if vm is not None:
        torch.maximum(vm, v, out=vm)
    denom = (sqrt(vm if vm is not None else v) / bc2**0.5).add_(eps)
    p.addcdiv_(m, denom, value=-(lr / bc1))
    return step


def ieee_sqrt(x):
    if x.dtype == torch.float32:  # a double root rounded to float is the correctly rounded float root
        return x.double().sqrt().float()
    return torch.from_numpy(np.sqrt(x.numpy()))


def test_oracle_is_torch_with_torch_sqrt():
    # The oracle below is only as good as this: with torch's sqrt it reproduces torch.optim.AdamW.
    gen = torch.Generator().manual_seed(5)
    p = torch.randn(1000, generator=gen)
    q = p.clone().requires_grad_()
    opt = torch.optim.AdamW([q], lr=1e-3, weight_decay=0.1, amsgrad=True, foreach=False)
    m, v, vm, step = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p), 0
    for t in range(50):
        lr, beta1 = hyper(t)
        g = torch.randn(1000, generator=gen)
        q.grad = g.clone()
        opt.param_groups[0].update(lr=lr, betas=(beta1, 0.999))
        opt.step()
        step = torch_ops_step(p, g, m, v, vm, step, lr, beta1, 0.999, 1e-8, 0.1, True, False, torch.sqrt)
    assert bits_equal(p, q.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "amsgrad,maximize,wd,decoupled", [(False, False, 0.0, False), (True, True, 0.02, False), (True, False, 0.05, True)]
)
def test_ieee_sqrt_path_matches_oracle(dtype, amsgrad, maximize, wd, decoupled):
    gen = torch.Generator().manual_seed(7)
    params = [torch.randn(n, generator=gen, dtype=dtype) for n in LENGTHS]
    k = Kernel(params, amsgrad)
    ref = [
        (p.clone(), torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p) if amsgrad else None) for p in params
    ]
    steps = [0] * len(params)
    for t in range(100):
        lr, beta1 = hyper(t)
        grads = [torch.randn(p.numel(), generator=gen, dtype=dtype) for p in params]
        k.step_(grads, lr, beta1, wd=wd, decoupled=decoupled, maximize=maximize, sqrt=(0, 0, 0))
        for i, ((p, m, v, vm), g) in enumerate(zip(ref, grads)):
            steps[i] = torch_ops_step(
                p, g, m, v, vm, steps[i], lr, beta1, 0.999, 1e-8, wd, decoupled, maximize, ieee_sqrt
            )
    assert_bits(k.p, [r[0] for r in ref], "param")
    assert_bits(k.v, [r[2] for r in ref], "exp_avg_sq")


@pytest.mark.skipif(SQRT[:2] == (0, 0), reason="torch's sqrt is IEEE here")
def test_ieee_sqrt_differs_from_torch_mkl():
    # Why the routine is passed in: with IEEE sqrt the kernel is close to torch, not equal.
    gen = torch.Generator().manual_seed(11)
    p = torch.randn(100003, generator=gen)
    q = p.clone().requires_grad_()
    opt = torch.optim.Adam([q], lr=1e-3, foreach=False)
    k = Kernel([p], False)
    for _ in range(5):
        g = torch.randn(100003, generator=gen)
        q.grad = g.clone()
        opt.step()
        k.step_([g], 1e-3, 0.9, sqrt=(0, 0, 0))
    diff = (k.p[0] - q.detach()).abs()
    assert int((diff != 0).sum()) > 0
    assert float((diff / q.detach().abs().clamp_min(1e-6)).max()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("amsgrad,wd,decoupled", [(False, 0.0, False), (True, 0.01, False), (True, 0.05, True)])
def test_half_precision_against_float32_oracle(dtype, amsgrad, wd, decoupled):
    # torch's fused-kernel rule: load in float32, one float32 update, round once on store.
    gen = torch.Generator().manual_seed(13)
    lengths = [1, 15, 17, 1000]
    params = [torch.randn(n, generator=gen).to(dtype) for n in lengths]
    k = Kernel(params, amsgrad)
    state = [
        [p.clone(), torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p) if amsgrad else None] for p in params
    ]
    steps = [0] * len(params)
    for t in range(60):
        lr, beta1 = hyper(t)
        grads = [torch.randn(n, generator=gen).to(dtype) for n in lengths]
        k.step_(grads, lr, beta1, wd=wd, decoupled=decoupled)
        for i, g in enumerate(grads):
            p32, m32, v32 = (x.float() for x in state[i][:3])
            vm32 = state[i][3].float() if amsgrad else None
            steps[i] = torch_ops_step(
                p32, g.float(), m32, v32, vm32, steps[i], lr, beta1, 0.999, 1e-8, wd, decoupled, False, ieee_sqrt
            )
            state[i] = [p32.to(dtype), m32.to(dtype), v32.to(dtype), vm32.to(dtype) if amsgrad else None]
    assert_bits(k.p, [s[0] for s in state], "param")
    assert_bits(k.m, [s[1] for s in state], "exp_avg")
    assert_bits(k.v, [s[2] for s in state], "exp_avg_sq")


# ---------------------------------------------------------------- steps, GradScaler, validation


@needs_torch_sqrt
def test_grad_scaler_unscales_and_stores_back():
    gen = torch.Generator().manual_seed(17)
    lengths = [37, 1000]
    params = [torch.randn(n, generator=gen) for n in lengths]
    ref = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.AdamW(ref, lr=1e-3, foreach=False)
    k = Kernel(params, False)
    for t in range(20):
        lr, beta1 = hyper(t)
        grads = [torch.randn(n, generator=gen) for n in lengths]
        for q, g in zip(ref, grads):
            q.grad = g.clone()
        opt.param_groups[0].update(lr=lr, betas=(beta1, 0.999))
        opt.step()
        k.step_([g * 1024.0 for g in grads], lr, beta1, wd=0.01, decoupled=True, inv_scale=1 / 1024, store_grad=True)
        assert_bits(k.g, grads, "unscaled grad")
    assert_bits(k.p, [q.detach() for q in ref], "param")


def test_step_scalars_float64_and_shared_rows():
    # One float64 parameter cut into two rows sharing its step scalar: one increment per call, and both
    # halves updated with that count, exactly as the whole parameter would be.
    gen = torch.Generator().manual_seed(19)
    p = torch.randn(10, dtype=torch.float64, generator=gen)
    whole = Kernel([p], False, step_dtype=torch.float64)
    cut = Kernel([p], False, step_dtype=torch.float64)
    row = cut.table[0].copy()
    first, second = row.copy(), row.copy()
    first[5] = 6
    for col in range(4):
        second[col] += 6 * 8
    second[5] = 4
    cut.table = np.stack([first, second])
    for t in range(3):
        lr, beta1 = hyper(t)
        g = torch.randn(10, dtype=torch.float64, generator=gen)
        whole.step_([g], lr, beta1, sqrt=(0, 0, 0))
        cut.step_([g], lr, beta1, sqrt=(0, 0, 0))
    assert float(cut.step[0]) == float(whole.step[0]) == 3.0
    assert_bits(cut.p, whole.p, "param")


def test_empty_parameter_still_counts_a_step():
    s = torch.zeros(())
    table = np.array([[0, 0, 0, 0, 0, 0, 0, s.data_ptr(), 0, 0]], dtype=np.int64)
    adam_step(table, 1e-3, 0.9, 0.999, 1e-8, 0.0, True, False, False, 1.0, False, 1)
    assert float(s) == 1.0


def _row(**kw):
    base = dict(p=8, g=8, m=8, v=8, vmax=0, n=4, dtype=0, step=8, step_dtype=0, fresh=0)
    base.update(kw)
    return np.array([list(base.values())], dtype=np.int64)


@pytest.mark.parametrize(
    "table,amsgrad,exc,match",
    [
        (np.zeros((1, 8), dtype=np.int64), False, ValueError, "shape"),
        (np.zeros((1, 10), dtype=np.float64), False, TypeError, "int64"),
        (_row(dtype=4), False, ValueError, "dtype code"),
        (_row(step_dtype=2), False, ValueError, "step dtype"),
        (_row(n=-1), False, ValueError, "negative"),
        (_row(step=0), False, ValueError, "null step"),
        (_row(m=0), False, ValueError, "null exp_avg pointer"),
        (_row(p=0), False, ValueError, "null pointer"),
        (_row(), True, ValueError, "null max_exp_avg_sq pointer"),
        (_row(fresh=2), False, ValueError, "fresh"),  # amsgrad without a max buffer
        (np.asfortranarray(np.zeros((2, 10), dtype=np.int64)), False, ValueError, "contiguous"),
    ],
)
def test_bad_tables_are_refused(table, amsgrad, exc, match):
    with pytest.raises(exc, match=match):
        adam_step(table, 1e-3, 0.9, 0.999, 1e-8, 0.0, True, amsgrad, False, 1.0, False, 1)


def test_segment_layout_is_the_rules():
    layout = _core.rules["adam"]
    assert layout["width"] == 10 and layout["slots"] == ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    assert [layout["cols"][k] for k in ("p", "g", "exp_avg", "n", "step", "fresh")] == [0, 1, 2, 5, 7, 9]


@needs_torch_sqrt
@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=5),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    amsgrad=st.booleans(),
    maximize=st.booleans(),
    wd=st.sampled_from([0.0, 1e-4, 0.3]),
    decoupled=st.booleans(),
    eps=st.sampled_from([1e-8, 1e-6, 0.1]),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_tables_match_torch(lengths, dtype, amsgrad, maximize, wd, decoupled, eps, seed):
    k, ref, _ = drive(
        dtype,
        lengths,
        amsgrad=amsgrad,
        maximize=maximize,
        wd=wd,
        decoupled=decoupled,
        foreach=False,
        steps=12,
        eps=eps,
        threads=1 + seed % 2,
        seed=seed,
    )
    assert_bits(k.p, [q.detach() for q in ref], "param")


# ---------------------------------------------------------------- torch's fused CPU kernel (vec_bytes)


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="torch's x86 fused kernel"
)
@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 100), min_size=1, max_size=6),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
    amsgrad=st.booleans(),
    maximize=st.booleans(),
    wd=st.sampled_from([0.0, 1e-4, 0.3]),
    decoupled=st.booleans(),
    scale=st.sampled_from([None, 3.0, 65536.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_tables_match_torch_fused(lengths, dtype, amsgrad, maximize, wd, decoupled, scale, seed):
    # Every length mod 16 and mod 4 happens: the vector body, the scalar tail and both; a scale of 3
    # tells GradScaler's division (torch's fused kernels) from a product with 1/3 (its unscale_).
    k, ref, opt = drive(
        dtype,
        lengths,
        amsgrad=amsgrad,
        maximize=maximize,
        wd=wd,
        decoupled=decoupled,
        steps=8,
        threads=1 + seed % 2,
        seed=seed,
        fused=True,
        scale=scale,
    )
    assert_state_bits(k, ref, opt, amsgrad)
    if scale is not None:
        assert_bits(k.g, [q.grad for q in ref], "unscaled grad")


def test_vec_bytes_and_divide_scale_are_checked():
    k = Kernel([torch.ones(3)], False)
    with pytest.raises(ValueError, match="vec_bytes: expected 0, 32 or 64, got 16"):
        k.step_([torch.ones(3)], 1e-3, 0.9, vec_bytes=16)
    with pytest.raises(ValueError, match="divide_scale: GradScaler's division needs store_grad=True"):
        k.step_([torch.ones(3)], 1e-3, 0.9, divide_scale=True)
    assert float(k.step[0]) == 0.0 and torch.equal(k.p[0], torch.ones(3))
