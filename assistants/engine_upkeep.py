"""The engine's upkeep: what keeps runs and stored things in order in the background.

This process renews the leases of the runs it executes and cancels those another process asked it
to; every process ends runs whose process stopped (their lease ran out), expires runs that waited
for tool outputs past `expires_at`, deletes expired files, and now and then purges expired vector
stores, old run events and old failed sign-ins. No run is ever left stuck.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .engine_files import EngineFiles
from .event_log import EventLog
from .events import Event, EventBus
from .ids import now
from .runs._status import end_step, incomplete_message, transition
from .store import StoreTx
from .types import Message, MessageStatus, Run, RunStatus, RunStep, StepStatus
from .types.objects import LastError, MessageCreationDetails
from .vector_stores import PURGE_SECONDS

log = logging.getLogger("assistants.engine")

UNEXECUTED_ENDS: dict[RunStatus, tuple[StepStatus, str]] = {
    RunStatus.cancelled: (StepStatus.cancelled, "run_cancelled"),
    RunStatus.failed: (StepStatus.failed, "run_failed"),
    RunStatus.expired: (StepStatus.expired, "run_expired"),
}
"""How a run that no task executes ends its open steps and its half-written answer, by its end."""


@dataclass
class Ended:
    """A run ended by `_end_unexecuted`, with the steps and answer it ended."""

    run: Run
    steps: list[RunStep] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

EXPIRY_SWEEP_SECONDS = 5.0
LOGIN_FAILURES_KEPT_SECONDS = 24 * 3600
"""Failed sign-ins are kept this long at most (far past the sign-in throttle's window)."""
DELETED_PLACES_KEPT_SECONDS = 24 * 3600
"""A deleted object's place in its lists is kept this long, for page cursors that name it."""


class EngineUpkeep(EngineFiles):
    """`Engine`'s background upkeep (see `engine.py`)."""

    bus: EventBus
    events: EventLog
    worker_id: str
    _tasks: dict[str, asyncio.Task[None]]

    async def recover(self) -> None:
        """Runs left working by a process that stopped (this one's previous life included) are ended
        with a message saying so, so that no run is ever stuck."""
        await self.end_abandoned_runs()

    async def end_abandoned_runs(self) -> list[str]:
        """End runs whose executing process stopped (their lease ran out); returns their ids.

        Runs waiting for tool outputs keep waiting (the outputs can still come); runs another live
        process executes hold a current lease and are left alone.
        """
        async with self.store.read() as tx:
            abandoned = await tx.abandoned_runs()
        ended: list[str] = []
        for owner, run in abandoned:
            if run.id in self._tasks:
                continue
            if await self._force_end(
                owner, run, "The server process running this run stopped before it finished (a crash or restart). Run it again."
            ):
                ended.append(run.id)
        return ended

    async def _lease_forever(self) -> None:
        """Renew the leases of the runs this process executes, on its own clock so that slow sweep
        work never lets them lapse; and cancel any of them stored as `cancelling` (a cancel whose
        notification was lost)."""
        while True:
            await asyncio.sleep(self.settings.run_lease_seconds / 3)
            try:
                running = list(self._tasks)
                async with self.store.transaction() as tx:
                    await tx.lease_runs(running, self.worker_id, self.settings.run_lease_seconds)
                    statuses = await tx.run_statuses(running)
                for run_id, status in statuses.items():
                    if status == RunStatus.cancelling.value:
                        self._cancel_here(run_id)
            except Exception:
                log.exception("renewing run leases failed; it will try again")

    def _cancel_here(self, run_id: str) -> None:
        """Another process was asked to cancel a run: cancel it if this process executes it."""
        task = self._tasks.get(run_id)
        if task is not None and not task.cancelling():  # once is enough: it is winding down
            task.cancel()

    async def _force_end(self, owner: str, run: Run, message: str) -> bool:
        """End a run no task is executing: `cancelled` if it was being cancelled, else `failed`.

        Its open steps end with it, and a half-written answer is kept as `incomplete`.
        """
        async with self.store.transaction() as tx:
            # The thread's row first, as its deletion and every write of its messages take them
            # (PostgreSQL): run, steps, then message after it, against a deletion that holds the
            # messages and waits for the run, was a deadlock.
            await tx.lock_thread(run.thread_id)
            _, live = await tx.run_lease(run.id, lock=True)
            stored = await tx.find(Run, run.id, owner=owner)
            if stored is None:
                return False  # Its thread was deleted meanwhile, the run with it.
            if stored.status not in (RunStatus.queued, RunStatus.in_progress, RunStatus.cancelling):
                return False  # It ended (or paused) meanwhile, perhaps by another process's sweep.
            if live:
                return False  # Its process renewed the lease meanwhile: it is alive.
            if stored.status is RunStatus.cancelling:
                ended = await self._end_unexecuted(tx, stored, RunStatus.cancelled)
            else:
                error = LastError(code="server_error", message=message)
                ended = await self._end_unexecuted(tx, stored, RunStatus.failed, last_error=error)
        self._publish_ended(ended)
        return True

    async def _sweep_forever(self) -> None:
        purged_at = 0.0
        while True:
            await asyncio.sleep(min(EXPIRY_SWEEP_SECONDS, self.settings.run_lease_seconds / 3))
            try:
                await self.end_abandoned_runs()
                await self.expire_runs()
                await self.expire_files()
                if time.monotonic() - purged_at >= PURGE_SECONDS:
                    purged_at = time.monotonic()
                    await self.vector_stores.purge_expired()
                    await self.events.forget_old()
                    async with self.store.transaction() as tx:
                        # Failed sign-ins past every throttle window (each try prunes only its own).
                        await tx.prune_login_failures((now() - LOGIN_FAILURES_KEPT_SECONDS) * 1000)
                        await tx.forget_deleted_places(now() - DELETED_PLACES_KEPT_SECONDS)
            except Exception:
                log.exception("the expiry sweep failed; it will try again")

    async def expire_runs(self) -> list[str]:
        """Expire runs that waited in `requires_action` past `expires_at`. Returns their ids."""
        async with self.store.read() as tx:
            due = await tx.expired_runs(now())
        expired: list[str] = []
        for owner, run in due:
            if await self._expire(owner, run):
                expired.append(run.id)
        return expired

    async def _expire(self, owner: str, run: Run) -> bool:
        async with self.store.transaction() as tx:
            stored = await tx.held_run(run.thread_id, run.id, owner=owner)
            if stored is None:
                return False  # Its thread was deleted meanwhile.
            if stored.status is not RunStatus.requires_action or stored.expires_at is None or stored.expires_at > now():
                return False
            ended = await self._end_unexecuted(tx, stored, RunStatus.expired)
        self._publish_ended(ended)
        return True

    @staticmethod
    async def _end_unexecuted(tx: StoreTx, run: Run, to: RunStatus, **changes: Any) -> Ended:
        """Store `run` (which no task executes) moved to `to`, its open steps ended with it, and
        the answer an open `message_creation` step was writing kept as `incomplete`.

        The caller holds the thread's row (`lock_thread`) and the run's: run, steps, then messages.
        """
        ended = Ended(transition(run, to, **changes))
        await tx.save(ended.run)
        step_status, reason = UNEXECUTED_ENDS[to]
        stamp = now()
        for step in await tx.run_steps(run.id):
            if step.status is not StepStatus.in_progress:
                continue
            closed = end_step(step, step_status, stamp=stamp)
            await tx.save(closed)
            ended.steps.append(closed)
            if isinstance(step.step_details, MessageCreationDetails):
                message_id = step.step_details.message_creation.message_id
                written = await tx.find(Message, message_id, owner=None, lock=True)
                if written is not None and written.status is MessageStatus.in_progress:
                    kept = incomplete_message(written, reason, stamp=stamp)
                    await tx.save(kept)
                    ended.messages.append(kept)
        return ended

    def _publish_ended(self, ended: Ended) -> None:
        """The events of `_end_unexecuted`, once its transaction has committed, in the order a
        run that ends itself publishes them: the answer, the steps, then the run."""
        for message in ended.messages:
            self._publish(f"thread.message.{message.status.value}", message.wire(), ended.run)
        for step in ended.steps:
            self._publish(f"thread.run.step.{step.status.value}", step.wire(), ended.run)
        self._publish(f"thread.run.{ended.run.status.value}", ended.run.wire(), ended.run)

    def _publish(self, name: str, data: dict[str, Any], run: Run | None = None, thread_id: str | None = None) -> None:
        self.bus.publish(
            Event(
                name,  # type: ignore[arg-type]
                data,
                thread_id=run.thread_id if run else thread_id,
                run_id=run.id if run else None,
                assistant_id=run.assistant_id if run else None,
            )
        )
