"""The CUDA step of every declared rule: what lives on the device, and the one call that enqueues a step.

A CUDA group's step is one ``_core.rule_step_cuda`` call: five kernels on the current stream
(cpp/src/rule_launch.hpp) that take lr and momentum from the schedule at the device's clock,
update every row of the plan's table, advance the counters and the clock, and write the next
step's lr and momentum where the group shows them. Nothing is read back to the host, so a
step never synchronises and can be captured in a CUDA graph. Host copies of the clock and the
values are refreshed by :meth:`DeviceClock.read` (``state_dict``, pickling, DCP).

The launcher is injectable: :class:`Launcher` calls the CUDA build; the tests hand in one that
runs the same kernels on the CPU (``_core.rule_step_emulated``) over host tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _core


class DeviceClock:
    """A group's device-side clock: the schedule's bytes, the step count and the values it publishes.

    ``values`` holds the next step's (lr, momentum), written by the step's last kernel;
    ``lr`` and ``momentum`` are 0-d views of it, the objects the group shows.
    """

    def __init__(self, device: torch.device, step: int, lr: float, momentum: float):
        self.device = device
        self.schedule: Any = None  # the clrfast schedule whose bytes are on the device
        self.bytes: torch.Tensor | None = None
        self.clock = torch.tensor([step], dtype=torch.int64, device=device)
        self.values = torch.tensor([lr, momentum], dtype=torch.float64, device=device)
        self.lr, self.momentum = self.values[0], self.values[1]
        self.host_lr, self.host_momentum = lr, momentum  # the last values known on the host
        self.scalars: torch.Tensor | None = None
        self.host_scalars: tuple = ()

    def use(self, schedule) -> None:
        """Puts ``schedule`` on the device, unless it is the one already there (a swap takes effect here)."""
        if schedule is not self.schedule:
            raw = bytearray(_core.schedule_bytes(schedule._core))
            self.bytes = torch.frombuffer(raw, dtype=torch.uint8).to(self.device)
            self.schedule = schedule

    def set_scalars(self, values: tuple) -> None:
        """Uploads the rule's scalars when they changed (a hyperparameter written between steps)."""
        if values != self.host_scalars:
            self.scalars = torch.tensor(values, dtype=torch.float64).to(self.device)
            self.host_scalars = values

    def read(self) -> tuple[int, float, float]:
        """The clock and the next step's values, on the host (synchronises with the device)."""
        host = self.values.cpu().tolist()
        self.host_lr, self.host_momentum = host
        return int(self.clock.item()), host[0], host[1]


class DeviceTable:
    """A plan's kernel table on the device: its rows, its chunk table and the step's workspace."""

    def __init__(self, rule: str, table: np.ndarray, n_col: int, device: torch.device):
        self.host = table.copy()
        self.rows = torch.from_numpy(self.host).to(device)
        self.chunks = torch.from_numpy(_core.cuda_chunk_table(np.ascontiguousarray(table[:, n_col]))).to(device)
        self.workspace = torch.empty(_core.cuda_workspace_bytes(rule, len(table)), dtype=torch.uint8, device=device)

    def compatible(self, table: np.ndarray, n_col: int, p_col: int) -> bool:
        """Whether ``table`` has the same rows (parameters and lengths), so only its other addresses differ."""
        h = self.host
        return (
            h.shape == table.shape
            and np.array_equal(h[:, n_col], table[:, n_col])
            and np.array_equal(h[:, p_col], table[:, p_col])
        )

    def matches(self, table: np.ndarray) -> bool:
        return np.array_equal(self.host, table)

    def refresh(self, table: np.ndarray, keep_col: int | None) -> None:
        """Points the device rows at this step's tensors (same rows and lengths, other addresses).

        ``keep_col``: the column the kernels write (the first-update flags), kept as the device has it.
        """
        staged = torch.from_numpy(table.copy()).to(self.rows.device)
        if keep_col is not None:
            staged[:, keep_col] = self.rows[:, keep_col]
        self.rows.copy_(staged)
        self.host = table.copy()


class Launcher:
    """Enqueues rule steps with the CUDA build's ``_core.rule_step_cuda`` on torch's current stream."""

    available = bool(getattr(_core, "cuda_built", False))

    @staticmethod
    def stream(device: torch.device) -> int:
        return torch.cuda.current_stream(device).cuda_stream

    def step(
        self,
        rule: str,
        table: DeviceTable,
        clock: DeviceClock,
        *,
        lr_index: int,
        momentum_index: int,
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        store_grad: bool,
    ) -> None:
        assert clock.scalars is not None and clock.bytes is not None
        _core.rule_step_cuda(  # present in CUDA builds only
            rule,
            table.rows.data_ptr(),
            len(table.rows),
            table.chunks.data_ptr(),
            len(table.chunks),
            clock.scalars.data_ptr(),
            schedule=clock.bytes.data_ptr(),
            clock=clock.clock.data_ptr(),
            lr_index=lr_index,
            momentum_index=momentum_index,
            grad_scale=0 if grad_scale is None else grad_scale.data_ptr(),
            found_inf=0 if found_inf is None else found_inf.data_ptr(),
            store_grad=store_grad,
            hyper_out=clock.values.data_ptr(),
            workspace=table.workspace.data_ptr(),
            stream=self.stream(table.rows.device),
        )
