"""Run status as an explicit transition table. Every change goes through `transition`."""

from __future__ import annotations

from ..exceptions import InvalidTransitionError
from ..ids import now
from ..types import Message, MessageStatus, Run, RunStatus, RunStep, StepStatus
from ..types.objects import IncompleteDetails

S = RunStatus

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    S.queued: frozenset({S.in_progress, S.cancelling, S.cancelled, S.failed, S.expired}),
    S.in_progress: frozenset({S.requires_action, S.completed, S.failed, S.incomplete, S.cancelling, S.expired}),
    S.requires_action: frozenset({S.queued, S.in_progress, S.cancelling, S.cancelled, S.expired, S.failed}),
    S.cancelling: frozenset({S.cancelled, S.completed, S.failed, S.incomplete}),
    S.cancelled: frozenset(),
    S.failed: frozenset(),
    S.completed: frozenset(),
    S.incomplete: frozenset(),
    S.expired: frozenset(),
}
"""From each status, the statuses a run may move to. Terminal statuses lead nowhere."""

TERMINAL: frozenset[RunStatus] = frozenset(s for s, targets in TRANSITIONS.items() if not targets)
ACTIVE: frozenset[RunStatus] = frozenset(RunStatus) - TERMINAL

EVENT_FOR_STATUS: dict[RunStatus, str] = {status: f"thread.run.{status.value}" for status in RunStatus}


def transition(run: Run, to: RunStatus, **changes: object) -> Run:
    """The run moved to `to`, with the matching timestamp set. Illegal moves raise, naming both ends."""
    if to not in TRANSITIONS[run.status]:
        raise InvalidTransitionError(
            f"Run {run.id} cannot go from {run.status.value} to {to.value}: "
            f"allowed from {run.status.value} are {sorted(s.value for s in TRANSITIONS[run.status]) or 'none'}."
        )
    stamp = now()
    updates: dict[str, object] = {"status": to, **changes}
    if to is S.in_progress and run.started_at is None:
        updates["started_at"] = stamp
    if to is not S.requires_action:
        updates.setdefault("required_action", None)
    if to is S.completed:
        updates["completed_at"] = stamp
    elif to is S.failed:
        updates["failed_at"] = stamp
    elif to is S.cancelled:
        updates["cancelled_at"] = stamp
    elif to is S.incomplete:
        updates["completed_at"] = stamp
    if to in TERMINAL:
        updates.setdefault("expires_at", None)
    return run.model_copy(update=updates)


STEP_STAMPS: dict[StepStatus, str] = {
    StepStatus.completed: "completed_at",
    StepStatus.cancelled: "cancelled_at",
    StepStatus.failed: "failed_at",
    StepStatus.expired: "expired_at",
}
"""The timestamp each ending of a run step sets."""


def end_step(step: RunStep, to: StepStatus, *, stamp: int | None = None, **changes: object) -> RunStep:
    """The step closed as `to`, with the matching timestamp set."""
    return step.model_copy(update={"status": to, STEP_STAMPS[to]: stamp or now(), **changes})


def incomplete_message(message: Message, reason: str, *, stamp: int | None = None, **changes: object) -> Message:
    """The message closed as `incomplete` for `reason` (`run_failed`, `run_cancelled`, ...)."""
    return message.model_copy(
        update={
            "status": MessageStatus.incomplete,
            "incomplete_at": stamp or now(),
            "incomplete_details": IncompleteDetails(reason=reason),
            **changes,
        }
    )
