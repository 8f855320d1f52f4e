"""The event union, named exactly like the Assistants v2 stream events, and the subscription API.

Every run publishes its events on an `EventBus`. The chat UI, the `/v1` SSE stream, the CLI and
tests all consume the same events. A subscriber follows one run, one thread, or everything of one
assistant; it subscribes before it starts a run so that it sees `thread.run.created`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

EventName = Literal[
    "thread.created",
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.requires_action",
    "thread.run.completed",
    "thread.run.incomplete",
    "thread.run.failed",
    "thread.run.cancelling",
    "thread.run.cancelled",
    "thread.run.expired",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.run.step.delta",
    "thread.run.step.completed",
    "thread.run.step.failed",
    "thread.run.step.cancelled",
    "thread.run.step.expired",
    "thread.message.created",
    "thread.message.in_progress",
    "thread.message.delta",
    "thread.message.completed",
    "thread.message.incomplete",
    "error",
    "done",
]

EVENT_NAMES: frozenset[str] = frozenset(get_args(EventName))

RUN_PAUSE_OR_END: frozenset[str] = frozenset(
    {
        "thread.run.requires_action",
        "thread.run.completed",
        "thread.run.incomplete",
        "thread.run.failed",
        "thread.run.cancelled",
        "thread.run.expired",
    }
)
"""After one of these, a run's stream has nothing more to say until someone acts."""


@dataclass(frozen=True)
class Event:
    """One stream event: its Assistants name, its payload (the wire object or delta), and routing keys."""

    event: EventName
    data: dict[str, Any]
    thread_id: str | None = None
    run_id: str | None = None
    assistant_id: str | None = None

    @property
    def ends_stream(self) -> bool:
        """Whether a stream that follows this run should close after this event."""
        return self.event in RUN_PAUSE_OR_END


@dataclass(eq=False)
class Subscription:
    """A subscriber's queue. Iterate it; close it (or leave the `async with`) to stop receiving."""

    bus: EventBus
    run_id: str | None = None
    thread_id: str | None = None
    assistant_id: str | None = None
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)

    def matches(self, event: Event) -> bool:
        if self.run_id is not None and event.run_id != self.run_id:
            return False
        if self.thread_id is not None and event.thread_id != self.thread_id:
            return False
        return self.assistant_id is None or event.assistant_id == self.assistant_id

    def close(self) -> None:
        self.bus.unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            yield await self.queue.get()

    async def until_run_pauses(self) -> AsyncIterator[Event]:
        """Events up to and including the one that ends or pauses the run."""
        async for event in self:
            yield event
            if event.ends_stream:
                return


class EventBus:
    """In-process publish/subscribe. Publishing never blocks: each subscriber has its own queue."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(
        self, *, run_id: str | None = None, thread_id: str | None = None, assistant_id: str | None = None
    ) -> Subscription:
        """Follow one run, one thread, one assistant, or (no arguments) everything."""
        subscription = Subscription(self, run_id=run_id, thread_id=thread_id, assistant_id=assistant_id)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, event: Event) -> None:
        for subscription in list(self._subscriptions):
            if subscription.matches(event):
                subscription.queue.put_nowait(event)
