"""A compiled train step: CLRSGD against torch's SGD + CyclicLR, with the number of compilations.

One run, one table. Each train step (``zero_grad``, forward, ``backward``, ``step``) is
wrapped in ``torch.compile`` (inductor); torch's scheduler steps outside it, as torch
recommends. torch's SGD runs with a float lr (which torch.compile bakes into the graph,
so every change recompiles until the recompile limit) and with a tensor lr (updated in
place). Models: the demo's digits CNN and one pre-norm transformer block.

    python bench/bench_compile.py [--steps N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import clrfast as clr
import torch
import torch._dynamo.testing as dynamo_testing
from clrfast.demo import make_model
from clrfast.torch import CLRSGD, CyclicLR

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine  # noqa: E402


class Block(torch.nn.Module):
    """One pre-norm transformer block: attention and an MLP, 4 heads of 32."""

    def __init__(self, d=128):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.attn = torch.nn.MultiheadAttention(d, 4, batch_first=True)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


MODELS = {
    "digits CNN (batch 64)": (
        lambda: make_model(0),
        lambda: (torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))),
        torch.nn.functional.cross_entropy,
    ),
    "transformer block (8 x 64 x 128)": (
        lambda: Block(),
        lambda: (torch.randn(8, 64, 128), torch.randn(8, 64, 128)),
        torch.nn.functional.mse_loss,
    ),
}
SCHED = dict(base_lr=0.01, max_lr=0.1, step_size_up=20)


def run(model_fn, data_fn, loss_fn, kind, steps):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = model_fn()
    x, y = data_fn()
    sched = None
    if kind.startswith("CLRSGD"):
        opt = CLRSGD(
            model.parameters(),
            clr.Cyclic(SCHED["base_lr"], SCHED["max_lr"], step_size_up=20, base_momentum=0.8, max_momentum=0.9),
        )
    else:
        lr = torch.tensor(0.01) if kind.endswith("tensor lr") else 0.01
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        sched = CyclicLR(opt, **SCHED, base_momentum=0.8, max_momentum=0.9)
    counter = dynamo_testing.CompileCounterWithBackend("inductor")

    def train_step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if not kind.endswith("eager"):
        train_step = torch.compile(train_step, backend=counter)
    t0 = time.perf_counter()
    for _ in range(3):
        train_step()
        if sched is not None:
            sched.step()
    warm = time.perf_counter() - t0
    best = float("inf")
    for _ in range(steps):
        t = time.perf_counter()
        train_step()
        if sched is not None:
            sched.step()
        best = min(best, time.perf_counter() - t)
    return best, warm, counter.frame_count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # Dynamo's recompile-limit notices are what the table counts
    print(f"Machine: {machine()}, threads {torch.get_num_threads()}")
    print()
    print("| model | optimizer | best step (ms) | vs torch float lr | first 3 steps (s) | frames compiled |")
    print("|---|---|---:|---:|---:|---:|")
    kinds = [
        "torch SGD + CyclicLR, float lr",
        "torch SGD + CyclicLR, tensor lr",
        "CLRSGD",
        "CLRSGD, not compiled: eager",
    ]
    for name, (model_fn, data_fn, loss_fn) in MODELS.items():
        rows = {k: run(model_fn, data_fn, loss_fn, k, args.steps) for k in kinds}
        base = rows[kinds[0]][0]
        for k, (best, warm, frames) in rows.items():
            print(f"| {name} | {k} | {best * 1e3:.3f} | {base / best:.2f}x | {warm:.1f} | {frames} |")


if __name__ == "__main__":
    main()
