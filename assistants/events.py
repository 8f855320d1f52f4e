"""The event union, named exactly like the Assistants v2 stream events, and the subscription API.

Every run publishes its events on an `EventBus`. The chat UI, the `/v1` SSE stream, the CLI and
tests all consume the same events. A subscriber follows one run, one thread, or everything of one
assistant; it subscribes before it starts a run so that it sees `thread.run.created`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
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


def _plain_text(event: Event) -> str | None:
    """The text of a `thread.message.delta` that carries one plain text fragment (no annotations), else None."""
    if event.event != "thread.message.delta":
        return None
    content = event.data.get("delta", {}).get("content")
    if not isinstance(content, list) or len(content) != 1:
        return None
    part = content[0]
    if part.get("type") != "text" or part.get("index") != 0:
        return None
    text = part.get("text")
    if not isinstance(text, dict) or not text.keys() <= {"value", "annotations"} or text.get("annotations"):
        return None
    value = text.get("value")
    return value if isinstance(value, str) else None


def merge_text_deltas(events: Iterable[Event]) -> list[Event]:
    """The events with each run of consecutive text deltas of one message merged into one delta.

    "Consecutive" is per run: events of other runs may come between (they keep their places). A
    merged delta is the first one with the later fragments' text appended, so a reader that
    concatenates delta texts gets the same text from fewer events. Deltas with annotations, and
    every other event, are left as they are; the events given are never changed.
    """
    merged: list[Event] = []
    chains: dict[str | None, tuple[int, list[str]]] = {}
    """By run: where in `merged` the run's last event is, if that is a plain text delta, and the
    texts that delta is to carry."""

    def close(run_id: str | None) -> None:
        chain = chains.pop(run_id, None)
        if chain is not None and len(chain[1]) > 1:
            merged[chain[0]] = _with_text(merged[chain[0]], "".join(chain[1]))

    for event in events:
        text = _plain_text(event)
        chain = chains.get(event.run_id)
        if text is not None and chain is not None and merged[chain[0]].data.get("id") == event.data.get("id"):
            chain[1].append(text)
            continue
        close(event.run_id)
        if text is not None:
            chains[event.run_id] = (len(merged), [text])
        merged.append(event)
    for run_id in list(chains):
        close(run_id)
    return merged


def _with_text(delta: Event, value: str) -> Event:
    part = delta.data["delta"]["content"][0]
    text = {**part["text"], "value": value}
    data = {**delta.data, "delta": {**delta.data["delta"], "content": [{**part, "text": text}]}}
    return replace(delta, data=data)


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

    async def batches_until_run_pauses(self) -> AsyncIterator[list[Event]]:
        """The same events as `until_run_pauses`, in batches: each time the next event arrives,
        it comes with every event queued behind it, so a writer that fell behind catches up in
        one write instead of one per event. Never waits for more than the first event."""
        while True:
            batch = [await self.queue.get()]
            while not batch[-1].ends_stream and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            yield batch
            if batch[-1].ends_stream:
                return


class EventBus:
    """In-process publish/subscribe. Publishing never blocks: each subscriber has its own queue.

    Subscriptions are indexed by the most specific key they filter on, so publishing one event
    costs the same with one stream open or with thousands (each `/v1` stream follows one run).
    """

    def __init__(self) -> None:
        self._everything: set[Subscription] = set()
        self._by_run: dict[str, set[Subscription]] = {}
        self._by_thread: dict[str, set[Subscription]] = {}
        self._by_assistant: dict[str, set[Subscription]] = {}

    def subscribe(
        self, *, run_id: str | None = None, thread_id: str | None = None, assistant_id: str | None = None
    ) -> Subscription:
        """Follow one run, one thread, one assistant, or (no arguments) everything."""
        subscription = Subscription(self, run_id=run_id, thread_id=thread_id, assistant_id=assistant_id)
        index, key = self._index_of(subscription)
        if index is None:
            self._everything.add(subscription)
        else:
            index.setdefault(key, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        index, key = self._index_of(subscription)
        if index is None:
            self._everything.discard(subscription)
            return
        subscribers = index.get(key)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del index[key]

    @property
    def subscriptions(self) -> int:
        """How many subscriptions are open (a stream that never closed its own would show here)."""
        return len(self._everything) + sum(
            len(subscribers) for index in (self._by_run, self._by_thread, self._by_assistant) for subscribers in index.values()
        )

    def _index_of(self, subscription: Subscription) -> tuple[dict[str, set[Subscription]] | None, str]:
        if subscription.run_id is not None:
            return self._by_run, subscription.run_id
        if subscription.thread_id is not None:
            return self._by_thread, subscription.thread_id
        if subscription.assistant_id is not None:
            return self._by_assistant, subscription.assistant_id
        return None, ""

    def publish(self, event: Event) -> None:
        for subscription in tuple(self._everything):
            subscription.queue.put_nowait(event)
        for index, key in (
            (self._by_run, event.run_id),
            (self._by_thread, event.thread_id),
            (self._by_assistant, event.assistant_id),
        ):
            if key is None:
                continue
            subscribers = index.get(key)
            if subscribers:
                for subscription in tuple(subscribers):
                    if subscription.matches(event):
                        subscription.queue.put_nowait(event)
