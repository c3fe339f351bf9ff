"""Flat mode (``flat=True``): a group's parameters, gradients and state as views of one storage per kind."""

from __future__ import annotations

import torch

from ._base import EngineBase
from ._checks import is_dtensor


class Flat:
    """The contiguous storage of a ``flat=True`` group: parameters, gradients and state start as views of it.

    The layout is a locality optimisation, not a contract: the step treats each parameter,
    gradient and state tensor like list mode does (a tensor moved elsewhere is simply
    followed), and adjacent rows merge into one run of the kernel.
    """

    __slots__ = ("param", "grad", "state", "spans", "views")

    def __init__(self, param, grad, state, spans, views):
        self.param, self.grad = param, grad
        self.state = state  # {key: flat storage} for each per-element state tensor
        self.spans, self.views = spans, views  # views: {key: [view of each parameter]}

    def bound(self, i: int, g: torch.Tensor) -> bool:
        """True when gradient ``g`` of parameter ``i`` is its view of the flat gradient storage."""
        return self._in_slot(self.grad, i, g)

    def owns(self, i: int, p: torch.Tensor) -> bool:
        """True when parameter ``i`` still lives in its slot (its new state then goes next to it)."""
        return self._in_slot(self.param, i, p)

    def state_views(self, i: int, p: torch.Tensor) -> dict | None:
        """The flat state views of parameter ``i``, or None when it left its slot."""
        return {k: v[i] for k, v in self.views.items()} if self.owns(i, p) else None

    def _in_slot(self, storage: torch.Tensor, i: int, t: torch.Tensor) -> bool:
        if self.spans[i] is None:
            return False
        off, n = self.spans[i]
        return (
            t.dtype == storage.dtype
            and t.device == storage.device
            and t.numel() == n
            and t.is_contiguous()
            and t.data_ptr() == storage.data_ptr() + off * storage.element_size()
        )


class FlatLayout(EngineBase):
    """Lays out the flat groups (the step itself treats them as list mode does)."""

    def _check_flattenable(self, gi: int, params) -> None:
        if not params:
            return
        if any(is_dtensor(p) for p in params):
            raise ValueError(
                f"param_groups[{gi}]: flat=True does not support DTensor (FSDP2) parameters; use flat=False"
            )
        dtypes = {p.dtype for p in params}
        devices = {p.device for p in params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(
                f"param_groups[{gi}]: flat=True needs one dtype and one device per param group, got "
                f"{sorted(map(str, dtypes))} on {sorted(map(str, devices))}"
            )

    # ------------------------------------------------------------------ flat mode
    def _flatten(self, gi: int, group) -> None:
        """Lays the group's parameters, gradients and state out in one storage per kind.

        Parameters of another dtype or device than the first (converted since the group was
        made, as a copy or a resume may find them) keep their own memory: the step follows
        them like list mode, so nothing is cast.
        """
        params = group["params"]
        if not params:
            return
        p0 = params[0]
        fits = [p.dtype == p0.dtype and p.device == p0.device and not is_dtensor(p) for p in params]
        total = sum(p.numel() for p, ok in zip(params, fits) if ok)
        fp = torch.empty(total, dtype=p0.dtype, device=p0.device)
        fg = torch.zeros_like(fp)
        fstate = {k: torch.zeros_like(fp) for k in self._state_keys}
        spans: list[tuple[int, int] | None] = []
        views: dict[str, list] = {k: [] for k in self._state_keys}
        off = 0
        for p, ok in zip(params, fits):
            if not ok:
                spans.append(None)
                for k in self._state_keys:
                    views[k].append(None)
                continue
            n = p.numel()
            fp[off : off + n].copy_(p.detach().reshape(-1))
            g = p.grad
            if g is not None and g.dtype == p.dtype and g.device == p.device and g.shape == p.shape:
                gv = fg[off : off + n].view(p.shape)
                gv.copy_(g)
                p.grad = gv
            p.data = fp[off : off + n].view(p.shape)
            spans.append((off, n))
            for k in self._state_keys:
                v = fstate[k][off : off + n].view(p.shape)
                views[k].append(v)
                old = self._state_of(p, k)
                if (
                    isinstance(old, torch.Tensor)
                    and old.dtype == v.dtype
                    and old.device == v.device
                    and (old.shape == v.shape)
                ):
                    v.copy_(old)
                    self.state[p][k] = v
            off += n
        self._flat[gi] = Flat(fp, fg, fstate, spans, views)
