"""CUDA CLRSGD against the CPU kernel (the math itself is covered by tests/test_optim.py)."""

import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast import _core  # noqa: E402
from clrfast.torch import CLRSGD  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and getattr(_core, "cuda_built", False)), reason="needs a GPU and a CUDA build"
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_torch_sgd(dtype):
    s = clr.Cyclic(0.01, 0.1, step_size_up=20, base_momentum=0.8, max_momentum=0.9)
    shapes = [(37,), (64, 3), (100_000,)]
    a = [torch.randn(sh, dtype=dtype, device="cuda").requires_grad_() for sh in shapes]
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = CLRSGD(a, s, weight_decay=5e-4)
    ob = torch.optim.SGD(b, lr=0.01, momentum=0.9, weight_decay=5e-4, foreach=False)
    sb = torch.optim.lr_scheduler.CyclicLR(ob, 0.01, 0.1, step_size_up=20)
    for _ in range(100):
        for p, q in zip(a, b):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        oa.step()
        ob.step()
        sb.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert oa.state_dict()["param_groups"][0]["step"] == 100


def test_cuda_gradients_kept_between_steps_match_torch_sgd():
    # zero_grad(set_to_none=False): the same gradient objects every step, so the cached plan
    # (and the table already on the device) is reused
    s = clr.Cyclic(0.01, 0.1, step_size_up=5)
    a = [torch.randn(sh, device="cuda").requires_grad_() for sh in [(33,), (8, 8)]]
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = CLRSGD(a, s, momentum=0.9)
    ob = torch.optim.SGD(b, lr=0.01, momentum=0.9, foreach=False)
    sb = torch.optim.lr_scheduler.CyclicLR(ob, 0.01, 0.1, step_size_up=5, cycle_momentum=False)
    for t in range(12):
        oa.zero_grad(set_to_none=False)
        ob.zero_grad(set_to_none=False)
        g = torch.Generator(device="cuda").manual_seed(t)
        for p, q in zip(a, b):
            step = torch.randn(p.shape, device="cuda", generator=g)
            if p.grad is None:
                p.grad, q.grad = step.clone(), step.clone()
            else:
                p.grad.add_(step)
                q.grad.add_(step)
        oa.step()
        ob.step()
        sb.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_cuda_transposed_parameter_is_a_clear_error_that_changes_nothing():
    # the CUDA step has no per-tensor fallback to torch's code
    w = torch.nn.Parameter(torch.randn(4, 4, device="cuda").t())
    opt = CLRSGD([w], clr.Constant(0.1), momentum=0.9)
    w.grad = torch.randn(4, 4, device="cuda").t()
    before = w.detach().clone()
    with pytest.raises(ValueError, match="cannot walk"):
        opt.step()
    assert torch.equal(w, before) and opt.param_groups[0]["step"] == 0 and not opt.state
