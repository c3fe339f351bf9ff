"""Who sets a scheduled group's lr: its schedule alone; torch schedulers that would override it are refused."""

from __future__ import annotations

import gc

import torch

from ._base import EngineBase, _plateau_refs
from ._checks import check_schedule


def _lowered(now, ours) -> bool:
    """True when other code wrote an lr below the published one (all a ReduceLROnPlateau writes)."""
    try:
        return float(now) < float(ours)
    except (TypeError, ValueError, RuntimeError):
        return False  # not a number: the step's own check names it


class FollowGroups(torch.optim.lr_scheduler.LRScheduler):
    """The scheduler of ``FusedOptimizer.scheduler()``: its lr is whatever the optimizer's groups show."""

    def __init__(self, optimizer):
        had = ["initial_lr" in g for g in optimizer.param_groups]
        super().__init__(optimizer)
        # torch's base class leaves 'initial_lr' in each group, the mark of an attached scheduler
        for group, kept in zip(optimizer.param_groups, had):
            if not kept:
                group.pop("initial_lr", None)

    def get_lr(self) -> list:
        return [group["lr"] for group in self.optimizer.param_groups]


class Following(EngineBase):
    """The checks that a scheduled group's values are its schedule's, and the scheduler object for trainers."""

    def _check_followed(self, gi: int, group) -> None:
        """Refuses a step of a scheduled group whose values other code took over.

        The rule: a group with a schedule gets its lr (and momentum or betas, when the schedule
        defines a momentum) from it alone. A
        torch ``LRScheduler`` attached to the optimizer (it leaves ``initial_lr`` in every group:
        transformers' default ``LambdaLR``, the chainable schedulers, Lightning's lr finder)
        would override it, so the step refuses before it changes anything. So does a
        torch ``ReduceLROnPlateau`` holding the optimizer (each reduction would hold for one update,
        then the schedule would override it; ``clrfast.torch.ReduceLROnPlateau`` multiplies the
        schedule instead, and is not refused). It leaves no mark in the groups; ``_plateau``
        looks for it at the first step when one was made since this optimizer was, and at
        every step whose lr other code lowered, so no reduction is ever applied. A single value
        written into the group (a hook, ZeRO's group sync, a loaded state dict) is applied to
        the next update, as torch applies it; the schedule then sets the update after.
        """
        sched = group["schedule"]
        if sched is None:
            return
        check_schedule(f"param_groups[{gi}]['schedule']", sched)
        fix = (
            "Pass opt.scheduler() where a trainer wants a scheduler (transformers: "
            "Trainer(optimizers=(opt, opt.scheduler())); Lightning: {'optimizer': opt, 'lr_scheduler': "
            "opt.scheduler()}), or build the optimizer with schedule=None and an lr to let a torch scheduler "
            "set the lr."
        )
        if "initial_lr" in group:
            raise RuntimeError(
                f"param_groups[{gi}] follows the schedule {sched!r}, but a torch LRScheduler was attached to this "
                f"{self._rule} (the group has 'initial_lr'); its writes would override the schedule. {fix}"
            )
        lr, ours = group["lr"], self._published[gi][0]
        if (
            (not self._plateau_looked and _plateau_refs() != self._plateaus_at)
            or (lr is not ours and _lowered(lr, ours))
        ) and self._plateau():
            raise RuntimeError(
                f"param_groups[{gi}] follows the schedule {sched!r}, but a torch ReduceLROnPlateau holds this "
                f"{self._rule}; the schedule would override each lr it reduces after one update. Use "
                "clrfast.torch.ReduceLROnPlateau (the same arguments), whose reductions multiply the schedule. "
                f"{fix}"
            )
        self._plateau_looked = True
        self._published[gi] = self._current(group)

    def _plateau(self) -> bool:
        """True when a ``ReduceLROnPlateau`` holds this optimizer.

        It sets no ``initial_lr`` and wraps no ``step``, so only the objects that refer to the
        optimizer show it: the scheduler, or its attribute dict once Python made one
        (``state_dict()`` reads ``__dict__``). A look scans the collector's objects (tens of
        milliseconds in a large process), so ``_check_followed`` looks only when one may be
        there. A scheduler left in uncollected garbage by an earlier run does not count.
        """
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau

        def holds(r) -> bool:
            if isinstance(r, plateau):
                # clrfast's multiplies the schedule (its optimizer is a slot, not in its __dict__)
                return not getattr(r, "_multiplies_schedules", False) and getattr(r, "optimizer", None) is self
            return type(r) is dict and r.get("optimizer") is self and "min_lrs" in r and "num_bad_epochs" in r

        if not any(holds(r) for r in gc.get_referrers(self)):
            return False
        gc.collect()
        return any(holds(r) for r in gc.get_referrers(self))

    def get_last_lr(self) -> list:
        """Each group's current lr: the one its next update uses (torch's scheduler convention)."""
        return [group["lr"] for group in self.param_groups]

    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        """A torch ``LRScheduler`` that leaves the lr to this optimizer's schedules.

        For APIs that insist on a scheduler object next to the optimizer (transformers'
        ``Trainer(optimizers=(opt, opt.scheduler()))``, Lightning's ``lr_scheduler``): its
        ``step()`` writes back the values the groups already show, and ``get_last_lr()``
        reports them, so loggers see the lr that is applied. Any other torch scheduler on a
        group with a schedule is refused at the next step (see ``_check_followed``).
        """
        return FollowGroups(self)
