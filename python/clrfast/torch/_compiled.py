"""The step under torch.compile: one opaque custom op (``clrfast::fused_step``)."""

from __future__ import annotations

import itertools
import weakref

import torch

# Under torch.compile a step is one opaque custom op: Dynamo traces neither the plans nor the
# param_groups (whose lr and step change every step and would be guarded on, recompiling each
# time), only the parameters that have a gradient, their gradients and a handle, which are
# stable. The op runs the optimizer's eager step at run time; lr and momentum are computed
# there from the clock, so nothing the graph sees changes while the schedule moves.
#
# The handle is a 0-d tensor, a graph input: a constant would make each optimizer's graph its
# own (a recompilation per optimizer) and would be baked into graphs that inductor caches on
# disk and hands to other processes.
#
# AOTAutograd's functionalization (backends "aot_eager", "inductor") may call the op on clones
# of the tensors it declares mutated and copy the clones back over the originals afterwards.
# The eager step updates the live parameters (and reads their live gradients), so the op then
# writes their new values into whatever it was handed: the copy-back restores them. Where it
# was handed the live tensors themselves (no functionalization, or inductor's re-inplacing)
# nothing is copied.
_OPTIMIZERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_HANDLES = itertools.count(1)


@torch.library.custom_op("clrfast::fused_step", mutates_args=("params", "grads"))
def _fused_step(params: list[torch.Tensor], grads: list[torch.Tensor], handle: torch.Tensor) -> None:
    # grads are mutated only by GradScaler's unscale-in-place; listing them keeps the order right
    opt = _OPTIMIZERS[int(handle)]
    live = opt._stepped_params()
    if len(live) != len(params):
        raise RuntimeError(
            f"clrfast::fused_step got {len(params)} parameters with a gradient, the optimizer has {len(live)} now; "
            "a gradient was set or cleared between the traced step and its execution"
        )
    live_grads = [p.grad for p in live]
    opt._eager_step()
    for given, p in zip(params, live):
        if given.data_ptr() != p.data_ptr():
            given.copy_(p)
    for given, g in zip(grads, live_grads):
        if given.data_ptr() != g.data_ptr():
            given.copy_(g)


@_fused_step.register_fake
def _(params, grads, handle) -> None:
    return None


def register(opt) -> torch.Tensor:
    """The handle tensor through which the compiled op finds ``opt`` (a graph input, see above)."""
    handle = next(_HANDLES)
    _OPTIMIZERS[handle] = opt
    return torch.tensor(handle, dtype=torch.int64)
