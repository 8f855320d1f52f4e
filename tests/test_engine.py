"""The engine in-process: run status transitions, event subscriptions, sessions, crash recovery
and server-side function tools.

Tests that need a database build the real engine (`Runtime`) on SQLite and on PostgreSQL, talking
over HTTP to the scripted model; the transition table, the event bus and the function registry
are also checked on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any, Literal

import pytest

from assistants.engine import Engine
from assistants.events import Event, EventBus, Subscription, merge_text_deltas
from assistants.exceptions import InvalidRequestError, InvalidTransitionError, NotFoundError
from assistants.ids import new_id, now
from assistants.runs._status import ACTIVE, TERMINAL, TRANSITIONS, transition
from assistants.runtime import Runtime
from assistants.sessions import Sessions
from assistants.store import ListParams
from assistants.tools import FunctionRegistry
from assistants.types import (
    ContextMode,
    Message,
    MessageStatus,
    Run,
    RunStatus,
    RunStep,
    Session,
    StepStatus,
)
from assistants.types.objects import (
    FunctionCall,
    MessageCreation,
    MessageCreationDetails,
    RequiredAction,
    RequiredToolCall,
    SubmitToolOutputs,
    ToolCallsDetails,
)
from assistants.types.requests import (
    AssistantCreate,
    MessageCreate,
    MessageUpdate,
    RunCreate,
    SubmitToolOutputsRequest,
    ThreadCreate,
    ToolOutput,
)
from tests.conftest import StartRuntime
from tests.scripted_model import ScriptedModel, TextReply, echo_text

S = RunStatus
T0 = 1_700_000_000
WAIT = 20.0
"""Upper bound for any awaited event; a test that hits it has failed, not slept."""

LOOKUP_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up an order (answered by the client).",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    },
}



# Fixtures and helpers ------------------------------------------------------------------------




@pytest.fixture
async def runtime(start_runtime: StartRuntime) -> Runtime:
    return await start_runtime()


async def make_assistant(engine: Engine, owner: str, name: str = "helper", **kw: Any) -> str:
    assistant = await engine.create_assistant(
        owner, AssistantCreate(model="scripted-model", name=name, instructions=f"You are {name}.", **kw)
    )
    return assistant.id


async def say(engine: Engine, owner: str, thread_id: str, text: str, role: str = "user") -> Message:
    return await engine.create_message(owner, thread_id, MessageCreate(role=role, content=text))  # type: ignore[arg-type]


async def collect(subscription: Subscription) -> list[Event]:
    """The subscription's events up to the one that pauses or ends its run."""
    async with asyncio.timeout(WAIT):
        return [event async for event in subscription.until_run_pauses()]


async def stream(engine: Engine, owner: str, thread_id: str, assistant_id: str) -> list[Event]:
    async with asyncio.timeout(WAIT):
        return [e async for e in engine.stream_run(owner, thread_id, RunCreate(assistant_id=assistant_id))]


def names(events: list[Event]) -> list[str]:
    return [e.event for e in events]


def delta_text(events: list[Event]) -> str:
    return "".join(
        part["text"]["value"]
        for e in events
        if e.event == "thread.message.delta"
        for part in e.data["delta"]["content"]
    )


# The transition table ------------------------------------------------------------------------


def make_run(status: RunStatus) -> Run:
    waiting = status is S.requires_action
    return Run(
        id="run_transition",
        created_at=T0,
        thread_id="thread_t",
        assistant_id="asst_t",
        model="scripted-model",
        status=status,
        started_at=None if status is S.queued else T0 + 1,
        expires_at=T0 + 600,
        required_action=RequiredAction(
            submit_tool_outputs=SubmitToolOutputs(
                tool_calls=[RequiredToolCall(id="call_1", function=FunctionCall(name="f", arguments="{}"))]
            )
        )
        if waiting
        else None,
    )


LEGAL = [(a, b) for a in RunStatus for b in sorted(TRANSITIONS[a])]
ILLEGAL = [(a, b) for a in RunStatus for b in RunStatus if b not in TRANSITIONS[a]]
END_STAMP = {S.completed: "completed_at", S.incomplete: "completed_at", S.failed: "failed_at", S.cancelled: "cancelled_at"}


def test_the_table_names_every_status_and_the_terminal_ones_lead_nowhere() -> None:
    assert set(TRANSITIONS) == set(RunStatus)
    assert {S.cancelled, S.failed, S.completed, S.incomplete, S.expired} == TERMINAL
    assert {S.queued, S.in_progress, S.requires_action, S.cancelling} == ACTIVE
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
    # Every active status can still reach an end.
    for status in ACTIVE:
        assert TRANSITIONS[status] & TERMINAL or TRANSITIONS[status] & {S.cancelling}


@pytest.mark.parametrize(("start", "to"), LEGAL, ids=[f"{a.value}->{b.value}" for a, b in LEGAL])
def test_a_legal_transition_sets_the_matching_timestamp(start: RunStatus, to: RunStatus) -> None:
    run = make_run(start)
    before = now()
    moved = transition(run, to)
    after = now()

    assert moved.status is to
    assert run.status is start, "transition returns a new run and leaves the old one alone"
    if to is S.in_progress:
        if start is S.queued:
            assert moved.started_at is not None and before <= moved.started_at <= after
        else:
            assert moved.started_at == T0 + 1, "resuming keeps the first start time"
    else:
        assert moved.started_at == run.started_at
    for status, stamp in END_STAMP.items():
        value = getattr(moved, stamp)
        if to is status:
            assert value is not None and before <= value <= after, f"{stamp} must be set on {to.value}"
        elif stamp != END_STAMP.get(to):
            assert value is None, f"{stamp} must not be set on {to.value}"
    if to is S.requires_action:
        assert moved.required_action == run.required_action
    else:
        assert moved.required_action is None, "leaving requires_action clears the pending calls"
    if to in TERMINAL:
        assert moved.expires_at is None
    else:
        assert moved.expires_at == T0 + 600


@pytest.mark.parametrize(("start", "to"), ILLEGAL, ids=[f"{a.value}->{b.value}" for a, b in ILLEGAL])
def test_an_illegal_transition_raises_naming_both_statuses(start: RunStatus, to: RunStatus) -> None:
    run = make_run(start)
    with pytest.raises(InvalidTransitionError) as raised:
        transition(run, to)
    message = str(raised.value)
    assert f"from {start.value} to {to.value}" in message
    assert run.id in message


def test_the_named_illegal_transitions() -> None:
    with pytest.raises(InvalidTransitionError, match="from completed to in_progress"):
        transition(make_run(S.completed), S.in_progress)
    with pytest.raises(InvalidTransitionError, match="from cancelled to queued"):
        transition(make_run(S.cancelled), S.queued)


def test_transition_applies_the_given_changes() -> None:
    from assistants.types import LastError

    error = LastError(code="server_error", message="boom")
    failed = transition(make_run(S.in_progress), S.failed, last_error=error)
    assert failed.last_error == error
    assert failed.failed_at is not None


# The event bus -------------------------------------------------------------------------------


def bus_event(name: str, run_id: str = "run_a", thread_id: str = "thread_a", assistant_id: str = "asst_a") -> Event:
    return Event(name, {"id": run_id}, thread_id=thread_id, run_id=run_id, assistant_id=assistant_id)  # type: ignore[arg-type]


def drain(subscription: Subscription) -> list[Event]:
    events = []
    while not subscription.queue.empty():
        events.append(subscription.queue.get_nowait())
    return events


def test_the_bus_delivers_to_every_matching_subscriber() -> None:
    bus = EventBus()
    first = bus.subscribe()
    second = bus.subscribe()
    same_run_twice = [bus.subscribe(run_id="run_a"), bus.subscribe(run_id="run_a")]
    other_run = bus.subscribe(run_id="run_b")
    by_thread = bus.subscribe(thread_id="thread_a")
    by_assistant = bus.subscribe(assistant_id="asst_a")
    both = bus.subscribe(run_id="run_a", thread_id="thread_other")

    event = bus_event("thread.run.created")
    bus.publish(event)

    for subscription in (first, second, *same_run_twice, by_thread, by_assistant):
        assert drain(subscription) == [event]
    assert drain(other_run) == []
    assert drain(both) == [], "every given filter must match"


def test_a_closed_subscription_stops_receiving_and_others_go_on() -> None:
    bus = EventBus()
    kept = bus.subscribe(run_id="run_a")
    closed = bus.subscribe(run_id="run_a")
    closed.close()
    bus.publish(bus_event("thread.run.queued"))
    assert names(drain(kept)) == ["thread.run.queued"]
    assert drain(closed) == []


async def test_leaving_async_with_unsubscribes() -> None:
    bus = EventBus()
    async with bus.subscribe() as subscription:
        bus.publish(bus_event("thread.run.created"))
    bus.publish(bus_event("thread.run.queued"))
    assert names(drain(subscription)) == ["thread.run.created"]


async def test_until_run_pauses_stops_at_requires_action() -> None:
    bus = EventBus()
    subscription = bus.subscribe(run_id="run_a")
    for name in ("thread.run.in_progress", "thread.run.step.created", "thread.run.requires_action", "thread.run.queued"):
        bus.publish(bus_event(name))
    events = await collect(subscription)
    assert names(events) == ["thread.run.in_progress", "thread.run.step.created", "thread.run.requires_action"]
    assert names(drain(subscription)) == ["thread.run.queued"], "what follows the pause stays queued"


def text_delta(text: str, *, run_id: str = "run_a", message_id: str = "msg_a", first: bool = False) -> Event:
    value: dict[str, Any] = {"value": text, **({"annotations": []} if first else {})}
    data = {"id": message_id, "object": "thread.message.delta", "delta": {"content": [{"index": 0, "type": "text", "text": value}]}}
    return Event("thread.message.delta", data, thread_id="thread_a", run_id=run_id, assistant_id="asst_a")


def fragment_text(event: Event) -> str:
    return str(event.data["delta"]["content"][0]["text"]["value"])


def test_merging_deltas_joins_each_messages_consecutive_text_and_keeps_everything_else() -> None:
    other = bus_event("thread.run.step.created", run_id="run_c")
    annotated = text_delta("[1]")
    annotated.data["delta"]["content"][0]["text"]["annotations"] = [{"type": "file_citation", "text": "[1]"}]
    events = [
        text_delta("Hel", first=True),
        text_delta("Bon", run_id="run_b", message_id="msg_b", first=True),
        other,  # another run's event between two deltas does not split a run's text
        text_delta("lo"),
        text_delta("jour", run_id="run_b", message_id="msg_b"),
        text_delta(" there"),
        annotated,
        text_delta(" again"),
        bus_event("thread.message.completed"),
        text_delta("!", run_id="run_b", message_id="msg_b"),
    ]
    original = [dict(e.data) for e in events]

    merged = merge_text_deltas(events)

    assert [(e.event, e.run_id) for e in merged] == [
        ("thread.message.delta", "run_a"),
        ("thread.message.delta", "run_b"),
        ("thread.run.step.created", "run_c"),
        ("thread.message.delta", "run_a"),
        ("thread.message.delta", "run_a"),
        ("thread.message.completed", "run_a"),
    ]
    assert [fragment_text(e) for e in merged if e.event == "thread.message.delta"] == ["Hello there", "Bonjour!", "[1]", " again"]
    assert merged[0].data["delta"]["content"][0]["text"]["annotations"] == [], "the first delta's empty annotations stay"
    assert merged[3] is annotated
    assert [dict(e.data) for e in events] == original, "the events given are never changed"


def test_batches_bring_every_queued_event_and_stop_at_the_pause() -> None:
    bus = EventBus()
    subscription = bus.subscribe(run_id="run_a")

    async def follow() -> list[list[str]]:
        return [names(batch) async for batch in subscription.batches_until_run_pauses()]

    async def publish_then_follow() -> list[list[str]]:
        reader = asyncio.create_task(follow())
        bus.publish(bus_event("thread.run.in_progress"))
        await asyncio.sleep(0)  # The reader takes the first event alone...
        for name in ("thread.run.step.created", "thread.message.delta", "thread.run.completed", "thread.run.queued"):
            bus.publish(bus_event(name))  # ...and then what queued meanwhile, up to the end.
        return await asyncio.wait_for(reader, 5)

    assert asyncio.run(publish_then_follow()) == [
        ["thread.run.in_progress"],
        ["thread.run.step.created", "thread.message.delta", "thread.run.completed"],
    ]
    assert names(drain(subscription)) == ["thread.run.queued"], "what follows the pause stays queued"


def test_closed_subscriptions_leave_nothing_behind() -> None:
    bus = EventBus()
    opened = [bus.subscribe(run_id=f"run_{i}") for i in range(3)]
    opened += [bus.subscribe(), bus.subscribe(thread_id="thread_a"), bus.subscribe(assistant_id="asst_a")]
    assert bus.subscriptions == 6
    for subscription in opened:
        subscription.close()
    assert bus.subscriptions == 0


# Events of real runs -------------------------------------------------------------------------


async def test_subscriptions_by_run_thread_and_assistant_see_exactly_their_events(
    runtime: Runtime, model: ScriptedModel
) -> None:
    engine = runtime.engine
    owner = await runtime.accounts.ensure_user("alice")
    sessions = Sessions(engine)
    # Replies stream word by word with a pause, so the two runs overlap.
    model.add_responder(lambda body: TextReply(echo_text(body) + " and some more words to stream", delay=0.01))
    sides: dict[str, dict[str, Any]] = {}
    for side in ("a", "b"):
        assistant_id = await make_assistant(engine, owner, f"assistant-{side}")
        session = await sessions.create(owner, assistant_id)
        await say(engine, owner, session.id, f"question from {side}")
        run_id = new_id("run")
        sides[side] = {
            "assistant_id": assistant_id,
            "thread_id": session.id,
            "run_id": run_id,
            "subs": {
                "run": engine.subscribe(run_id=run_id),
                "thread": engine.subscribe(thread_id=session.id),
                "assistant": engine.subscribe(assistant_id=assistant_id),
            },
        }
    everything = engine.subscribe()

    for side in sides.values():
        await engine.create_run(owner, side["thread_id"], RunCreate(assistant_id=side["assistant_id"]), run_id=side["run_id"])
    collected = {
        (side, kind): asyncio.ensure_future(collect(sub))
        for side, info in sides.items()
        for kind, sub in info["subs"].items()
    }
    results = {key: await task for key, task in collected.items()}
    for info in sides.values():
        await engine.wait_for_run(info["run_id"])

    for side, info in sides.items():
        by_run = results[(side, "run")]
        assert names(by_run)[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
        assert names(by_run)[-1] == "thread.run.completed"
        assert by_run[-1].data["status"] == "completed"
        assert delta_text(by_run) == f"echo: question from {side} and some more words to stream"
        for event in by_run:
            assert (event.run_id, event.thread_id, event.assistant_id) == (
                info["run_id"],
                info["thread_id"],
                info["assistant_id"],
            )
        assert results[(side, "thread")] == by_run
        assert results[(side, "assistant")] == by_run
        for subscription in info["subs"].values():
            assert subscription.queue.empty(), "nothing of the other run leaked in after the end"
            subscription.close()

    seen = drain(everything)
    everything.close()
    run_order = [e.run_id for e in seen]
    assert set(run_order) == {sides["a"]["run_id"], sides["b"]["run_id"]}
    for side, info in sides.items():
        assert [e for e in seen if e.run_id == info["run_id"]] == results[(side, "run")]
    # The two runs really streamed at the same time: their text deltas interleave.
    deltas = [e.run_id for e in seen if e.event == "thread.message.delta"]
    spans = {
        side: (deltas.index(info["run_id"]), len(deltas) - 1 - deltas[::-1].index(info["run_id"]))
        for side, info in sides.items()
    }
    assert spans["a"][0] < spans["b"][1] and spans["b"][0] < spans["a"][1], deltas


async def test_a_stream_pauses_at_requires_action_and_resumes_after_outputs(
    runtime: Runtime, model: ScriptedModel
) -> None:
    engine = runtime.engine
    owner = await runtime.accounts.ensure_user("alice")
    assistant_id = await make_assistant(engine, owner, tools=[LOOKUP_TOOL])
    session = await Sessions(engine).create(owner, assistant_id)
    await say(engine, owner, session.id, "Where is order A1?")
    model.add_tool_calls([{"name": "lookup_order", "arguments": '{"order_id": "A1"}', "id": "call_lookup"}])
    model.add_text("Order A1 has shipped.")

    events = await stream(engine, owner, session.id, assistant_id)

    assert names(events)[-1] == "thread.run.requires_action"
    run_id = events[-1].run_id
    assert run_id is not None
    pending = events[-1].data["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert pending == [
        {"id": "call_lookup", "type": "function", "function": {"name": "lookup_order", "arguments": '{"order_id": "A1"}'}}
    ]
    run = await engine.get_run(owner, session.id, run_id)
    assert run.status is S.requires_action

    with contextlib.closing(engine.subscribe(run_id=run_id)) as subscription:
        await engine.submit_tool_outputs(
            owner,
            session.id,
            run_id,
            SubmitToolOutputsRequest(tool_outputs=[ToolOutput(tool_call_id="call_lookup", output="shipped")]),
        )
        resumed = await collect(subscription)

    assert names(resumed)[0] == "thread.run.step.completed"
    assert names(resumed)[-1] == "thread.run.completed"
    assert delta_text(resumed) == "Order A1 has shipped."
    assert model.last_messages is not None
    assert model.last_messages[-1] == {"role": "tool", "tool_call_id": "call_lookup", "content": "shipped"}


# Sessions ------------------------------------------------------------------------------------


async def test_sessions_are_listed_newest_first_by_user_and_by_assistant(runtime: Runtime) -> None:
    engine = runtime.engine
    sessions = Sessions(engine)
    alice = await runtime.accounts.ensure_user("alice")
    bob = await runtime.accounts.ensure_user("bob")
    first_assistant = await make_assistant(engine, alice, "first")
    second_assistant = await make_assistant(engine, alice, "second")
    s1 = await sessions.create(alice, first_assistant, title="Trip to Lisbon")
    s2 = await sessions.create(alice, second_assistant, title="Tax questions")
    s3 = await sessions.create(alice, first_assistant)
    # A plain thread of the same user is not a session.
    await engine.create_thread(alice, ThreadCreate())

    everything = await sessions.list(alice)
    assert [s.id for s in everything.data] == [s3.id, s2.id, s1.id]
    assert all(isinstance(s, Session) for s in everything.data)
    assert [s.title for s in everything.data] == ["New chat", "Tax questions", "Trip to Lisbon"]
    by_first = await sessions.list(alice, assistant_id=first_assistant)
    assert [s.id for s in by_first.data] == [s3.id, s1.id]
    by_second = await sessions.list(alice, assistant_id=second_assistant)
    assert [s.id for s in by_second.data] == [s2.id]
    page = await sessions.list(alice, params=ListParams(limit=2))
    assert [s.id for s in page.data] == [s3.id, s2.id] and page.has_more
    found = await sessions.list(alice, title_contains="lisbon")
    assert [s.id for s in found.data] == [s1.id]
    assert (await sessions.list(bob)).data == []

    resumed = await sessions.get(alice, s1.id)
    assert (resumed.id, resumed.user, resumed.assistant_id, resumed.title) == (s1.id, alice, first_assistant, "Trip to Lisbon")


async def test_renaming_and_changing_settings_survive_a_reload(runtime: Runtime, model: ScriptedModel) -> None:
    engine = runtime.engine
    sessions = Sessions(engine)
    alice = await runtime.accounts.ensure_user("alice")
    assistant_id = await make_assistant(engine, alice)
    session = await sessions.create(alice, assistant_id)
    assert (session.context_mode, session.context_n, session.model, session.temperature) == (ContextMode.full, 20, None, None)

    await sessions.rename(alice, session.id, "  Weekend plans  ")
    await sessions.update(
        alice, session.id, context_mode="summary", context_n=6, model="scripted-model-2", temperature=0.3
    )

    reloaded = await sessions.get(alice, session.id)
    assert reloaded.title == "Weekend plans"
    assert reloaded.context_mode is ContextMode.summary
    assert reloaded.context_n == 6 and isinstance(reloaded.context_n, int)
    assert reloaded.temperature == 0.3 and isinstance(reloaded.temperature, float)
    assert reloaded.model == "scripted-model-2"
    assert reloaded.updated_at is not None and reloaded.updated_at >= session.created_at
    # On the wire (and to /v1 clients) the settings are plain metadata strings.
    thread = await engine.get_thread(alice, session.id)
    assert {k: thread.metadata[k] for k in ("title", "context_mode", "context_n", "model", "temperature")} == {
        "title": "Weekend plans",
        "context_mode": "summary",
        "context_n": "6",
        "model": "scripted-model-2",
        "temperature": "0.3",
    }
    assert (await sessions.rename(alice, session.id, "   ")).title == "New chat"

    # The next run uses the session's model and temperature.
    await say(engine, alice, session.id, "hello")
    model.add_text("hi")
    events = await stream(engine, alice, session.id, assistant_id)
    assert names(events)[-1] == "thread.run.completed"
    assert model.last_request is not None
    assert model.last_request.body["model"] == "scripted-model-2"
    assert model.last_request.body["temperature"] == 0.3


async def test_bad_session_settings_are_refused_and_change_nothing(runtime: Runtime, model: ScriptedModel) -> None:
    engine = runtime.engine
    sessions = Sessions(engine)
    alice = await runtime.accounts.ensure_user("alice")
    assistant_id = await make_assistant(engine, alice)
    session = await sessions.create(alice, assistant_id, context_mode=ContextMode.last_n, context_n=3)

    with pytest.raises(InvalidRequestError) as raised:
        await sessions.update(alice, session.id, context_mode="everything")
    assert raised.value.param == "context_mode"
    with pytest.raises(InvalidRequestError) as raised:
        await sessions.update(alice, session.id, context_n=0)
    assert raised.value.param == "context_n"
    with pytest.raises(InvalidRequestError):
        await sessions.create(alice, assistant_id, context_mode=ContextMode.last_n, context_n=0)
    with pytest.raises(ValueError, match="user"):
        await sessions.update(alice, session.id, user="someone-else")

    reloaded = await sessions.get(alice, session.id)
    assert (reloaded.context_mode, reloaded.context_n, reloaded.user) == (ContextMode.last_n, 3, alice)
    # The session still runs.
    await say(engine, alice, session.id, "still fine?")
    model.add_text("yes")
    events = await stream(engine, alice, session.id, assistant_id)
    assert names(events)[-1] == "thread.run.completed"


async def test_deleting_a_session_removes_its_thread_messages_and_runs(runtime: Runtime, model: ScriptedModel) -> None:
    engine = runtime.engine
    sessions = Sessions(engine)
    alice = await runtime.accounts.ensure_user("alice")
    assistant_id = await make_assistant(engine, alice)
    session = await sessions.create(alice, assistant_id)
    kept = await sessions.create(alice, assistant_id)
    await say(engine, alice, session.id, "remember this")
    model.add_text("noted")
    events = await stream(engine, alice, session.id, assistant_id)
    run_id = events[0].data["id"]

    assert await sessions.delete(alice, session.id) is True

    with pytest.raises(NotFoundError):
        await sessions.get(alice, session.id)
    with pytest.raises(NotFoundError):
        await engine.get_thread(alice, session.id)
    with pytest.raises(NotFoundError):
        await engine.list_messages(alice, session.id, ListParams())
    with pytest.raises(NotFoundError):
        await engine.get_run(alice, session.id, run_id)
    async with engine.store.read() as tx:
        assert await tx.count_messages(session.id) == 0
        assert await tx.find(Run, run_id, owner=None) is None
    assert [s.id for s in (await sessions.list(alice)).data] == [kept.id]
    with pytest.raises(NotFoundError):
        await sessions.delete(alice, session.id)


@pytest.mark.parametrize("ending", ["completed", "cancelled"])
async def test_metadata_set_on_an_answer_while_it_streams_is_kept_when_the_answer_ends(
    runtime: Runtime, model: ScriptedModel, ending: str
) -> None:
    """The run ends its answer from what it holds in memory; the metadata a client set on the
    answer meanwhile is what is stored and published at its end, not what the run started with."""
    engine = runtime.engine
    assistant_id = await make_assistant(engine, "alice")
    thread = await engine.create_thread("alice", ThreadCreate())
    await say(engine, "alice", thread.id, "Take your time.")
    if ending == "completed":
        model.add_text("one two three four five six seven eight", delay=0.05)
    else:
        model.add_endless(0.02)
    events: list[Event] = []
    message_id = ""
    async with asyncio.timeout(WAIT):
        async for event in engine.stream_run("alice", thread.id, RunCreate(assistant_id=assistant_id)):
            events.append(event)
            if event.event == "thread.message.delta" and not message_id:  # the answer's first words
                message_id = event.data["id"]
                await engine.update_message("alice", thread.id, message_id, MessageUpdate(metadata={"tag": "kept"}))
                if ending == "cancelled":
                    await engine.cancel_run("alice", thread.id, events[0].data["id"])

    [end] = [e for e in events if e.event in ("thread.message.completed", "thread.message.incomplete")]
    assert end.event == ("thread.message.completed" if ending == "completed" else "thread.message.incomplete")
    assert end.data["metadata"] == {"tag": "kept"}
    stored = await engine.get_message("alice", thread.id, message_id)
    assert stored.metadata == {"tag": "kept"} and stored.status.value == end.data["status"]
    assert stored.text == end.data["content"][0]["text"]["value"]


async def test_another_user_cannot_see_or_touch_a_session(runtime: Runtime) -> None:
    engine = runtime.engine
    sessions = Sessions(engine)
    alice = await runtime.accounts.ensure_user("alice")
    bob = await runtime.accounts.ensure_user("bob")
    assistant_id = await make_assistant(engine, alice)
    session = await sessions.create(alice, assistant_id, title="Private")

    with pytest.raises(NotFoundError):
        await sessions.get(bob, session.id)
    assert (await sessions.list(bob)).data == []
    assert (await sessions.list(bob, assistant_id=assistant_id)).data == []
    with pytest.raises(NotFoundError):
        await sessions.rename(bob, session.id, "Mine now")
    with pytest.raises(NotFoundError):
        await sessions.update(bob, session.id, context_mode=ContextMode.one_off)
    with pytest.raises(NotFoundError):
        await sessions.delete(bob, session.id)
    with pytest.raises(NotFoundError):
        await sessions.create(bob, assistant_id)

    untouched = await sessions.get(alice, session.id)
    assert (untouched.title, untouched.context_mode) == ("Private", ContextMode.full)


async def test_a_plain_thread_is_not_a_session(runtime: Runtime) -> None:
    engine = runtime.engine
    sessions = Sessions(engine)
    alice = await runtime.accounts.ensure_user("alice")
    thread = await engine.create_thread(alice, ThreadCreate(metadata={"topic": "plain"}))

    with pytest.raises(NotFoundError):
        await sessions.get(alice, thread.id)
    with pytest.raises(NotFoundError):
        await sessions.update(alice, thread.id, title="Now a session?")
    with pytest.raises(NotFoundError):
        await sessions.delete(alice, thread.id)
    assert (await engine.get_thread(alice, thread.id)).metadata == {"topic": "plain"}


# Crash recovery ------------------------------------------------------------------------------


@pytest.mark.parametrize("cut_off", [S.in_progress, S.queued])
async def test_a_run_cut_off_by_a_restart_is_failed_and_the_thread_runs_again(
    start_runtime: StartRuntime, model: ScriptedModel, cut_off: RunStatus
) -> None:
    first = await start_runtime()
    engine = first.engine
    alice = await first.accounts.ensure_user("alice")
    assistant_id = await make_assistant(engine, alice)
    session = await Sessions(engine).create(alice, assistant_id)
    await say(engine, alice, session.id, "before the crash")
    # What a crashed process leaves behind: an active run, its open step and the message that step
    # was writing (its text is only stored when it ends, so it has none).
    stamp = now()
    crashed = Run(
        id=new_id("run"),
        created_at=stamp,
        thread_id=session.id,
        assistant_id=assistant_id,
        status=cut_off,
        started_at=stamp if cut_off is S.in_progress else None,
        expires_at=stamp + 600,
        model="scripted-model",
        instructions="You are helper.",
    )
    unfinished = Message(
        id=new_id("message"),
        created_at=stamp,
        thread_id=session.id,
        status=MessageStatus.in_progress,
        role="assistant",
        content=[],
        assistant_id=assistant_id,
        run_id=crashed.id,
    )
    step = RunStep(
        id=new_id("step"),
        created_at=stamp,
        assistant_id=assistant_id,
        thread_id=session.id,
        run_id=crashed.id,
        type="message_creation",
        step_details=MessageCreationDetails(message_creation=MessageCreation(message_id=unfinished.id)),
    )
    async with engine.store.transaction() as tx:
        await tx.insert(crashed, owner=alice)
        await tx.insert(step, owner=alice)
        await tx.insert(unfinished, owner=alice)
    with pytest.raises(InvalidRequestError):
        await say(engine, alice, session.id, "the thread is busy")
    await first.close()

    second = await start_runtime()
    engine = second.engine
    recovered = await engine.get_run(alice, session.id, crashed.id)
    assert recovered.status is S.failed
    assert recovered.last_error is not None
    assert recovered.last_error.code == "server_error"
    assert "stopped before it finished (a crash or restart)" in recovered.last_error.message
    assert recovered.failed_at is not None
    steps = await engine.list_steps(alice, session.id, crashed.id, ListParams())
    assert [s.status for s in steps.data] == [StepStatus.failed]
    assert (await engine.get_message(alice, session.id, unfinished.id)).status is MessageStatus.incomplete

    # The thread is free again: a new message and a new run go through.
    await say(engine, alice, session.id, "after the restart")
    model.add_text("back again")
    events = await stream(engine, alice, session.id, assistant_id)
    assert names(events)[-1] == "thread.run.completed"
    assert delta_text(events) == "back again"
    # The crashed run's empty answer is not sent to the model as an empty assistant turn.
    assert model.last_messages is not None
    assert model.last_messages[1:] == [
        {"role": "user", "content": "before the crash"},
        {"role": "user", "content": "after the restart"},
    ]


async def test_a_run_waiting_for_tool_outputs_survives_a_restart(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    first = await start_runtime()
    engine = first.engine
    alice = await first.accounts.ensure_user("alice")
    assistant_id = await make_assistant(engine, alice, tools=[LOOKUP_TOOL])
    session = await Sessions(engine).create(alice, assistant_id)
    await say(engine, alice, session.id, "Where is order B2?")
    model.add_tool_calls([{"name": "lookup_order", "arguments": '{"order_id": "B2"}', "id": "call_b2"}])
    events = await stream(engine, alice, session.id, assistant_id)
    assert names(events)[-1] == "thread.run.requires_action"
    run_id = events[0].data["id"]
    waiting = await engine.get_run(alice, session.id, run_id)
    await first.close()

    second = await start_runtime()
    engine = second.engine
    after = await engine.get_run(alice, session.id, run_id)
    assert after == waiting
    assert after.status is S.requires_action

    # The outputs can still come, and the run finishes with them.
    model.add_text("Order B2 is on its way.")
    with contextlib.closing(engine.subscribe(run_id=run_id)) as subscription:
        await engine.submit_tool_outputs(
            alice,
            session.id,
            run_id,
            SubmitToolOutputsRequest(tool_outputs=[ToolOutput(tool_call_id="call_b2", output="in transit")]),
        )
        resumed = await collect(subscription)
    assert names(resumed)[-1] == "thread.run.completed"
    assert model.last_messages is not None
    assert model.last_messages[-1] == {"role": "tool", "tool_call_id": "call_b2", "content": "in transit"}
    messages = await engine.list_messages(alice, session.id, ListParams(order="asc"))
    assert [m.text for m in messages.data] == ["Where is order B2?", "Order B2 is on its way."]
    assert messages.data[-1].status is MessageStatus.completed


# Function tools ------------------------------------------------------------------------------


def test_the_schema_comes_from_type_hints() -> None:
    registry = FunctionRegistry()

    @registry.function
    def get_weather(city: str, unit: Literal["c", "f"] = "c", days: int = 1) -> str:
        """Current weather for a city."""
        return city

    @registry.function(name="ping_server")
    async def ping() -> str:
        return "pong"

    assert registry.names() == ["get_weather", "ping_server"]
    assert "get_weather" in registry and "nothing" not in registry
    definition = registry.definitions(["get_weather"])[0]
    assert definition["type"] == "function"
    function = definition["function"]
    assert (function["name"], function["description"]) == ("get_weather", "Current weather for a city.")
    parameters = function["parameters"]
    assert parameters["type"] == "object"
    assert parameters["required"] == ["city"]
    properties = parameters["properties"]
    assert set(properties) == {"city", "unit", "days"}
    assert properties["city"]["type"] == "string"
    assert properties["unit"]["enum"] == ["c", "f"]
    assert properties["unit"]["default"] == "c"
    assert properties["days"]["type"] == "integer"
    assert properties["days"]["default"] == 1
    assert all("title" not in p for p in properties.values())
    ping_parameters = registry.definitions(["ping_server"])[0]["function"]["parameters"]
    assert ping_parameters["required"] == [] and ping_parameters.get("properties", {}) == {}


async def test_a_sync_function_runs_in_a_worker_thread_without_blocking_the_loop() -> None:
    registry = FunctionRegistry()
    entered = threading.Event()
    release = threading.Event()
    loop_thread = threading.get_ident()

    @registry.function
    def slow_lookup(key: str) -> dict[str, Any]:
        entered.set()
        released = release.wait(timeout=WAIT)
        return {"key": key, "released": released, "in_loop_thread": threading.get_ident() == loop_thread}

    call = asyncio.ensure_future(registry.call("slow_lookup", '{"key": "k1"}', time_limit=WAIT))
    # The loop is free while the function blocks: it sees the function start, then lets it go.
    assert await asyncio.to_thread(entered.wait, WAIT)
    release.set()
    result = await call
    assert not result.is_error
    assert result.output == '{"key": "k1", "released": true, "in_loop_thread": false}'


async def test_a_timeout_is_reported_as_an_error_result() -> None:
    registry = FunctionRegistry()
    never = asyncio.Event()
    unblock = threading.Event()

    @registry.function
    async def wait_forever() -> str:
        await never.wait()
        return "unreachable"

    @registry.function
    def block_forever() -> str:
        unblock.wait(timeout=WAIT)
        return "late"

    started = time.monotonic()
    result = await registry.call("wait_forever", "{}", time_limit=0.05)
    assert result.is_error
    assert result.output == "Error: the tool 'wait_forever' timed out after 0.05 seconds."
    sync_result = await registry.call("block_forever", "", time_limit=0.05)
    unblock.set()
    assert sync_result.is_error
    assert sync_result.output == "Error: the tool 'block_forever' timed out after 0.05 seconds."
    assert time.monotonic() - started < WAIT / 2, "the timeout ends the wait, not the function"


async def test_failures_become_error_outputs() -> None:
    registry = FunctionRegistry()

    @registry.function
    def lookup(city: str, days: int = 1) -> str:
        if city == "Atlantis":
            raise LookupError("no such city")
        return f"{city} for {days} days"

    ok = await registry.call("lookup", '{"city": "Oslo", "days": 2}', time_limit=WAIT)
    assert (ok.output, ok.is_error) == ("Oslo for 2 days", False)
    raised = await registry.call("lookup", '{"city": "Atlantis"}', time_limit=WAIT)
    assert raised.is_error
    assert raised.output == "Error: the tool 'lookup' failed: LookupError: no such city"
    missing = await registry.call("lookup", '{"days": 2}', time_limit=WAIT)
    assert missing.is_error and "city" in missing.output and "required" in missing.output.lower()
    wrong_type = await registry.call("lookup", '{"city": "Oslo", "days": "many"}', time_limit=WAIT)
    assert wrong_type.is_error and "days" in wrong_type.output
    not_json = await registry.call("lookup", '{"city": ', time_limit=WAIT)
    assert not_json.is_error and "not valid JSON" in not_json.output
    not_object = await registry.call("lookup", '["Oslo"]', time_limit=WAIT)
    assert not_object.is_error and "JSON object" in not_object.output
    unknown = await registry.call("nothing", "{}", time_limit=WAIT)
    assert unknown.is_error and "no tool named 'nothing'" in unknown.output


async def test_a_failing_tool_does_not_fail_the_run(start_runtime: StartRuntime, model: ScriptedModel) -> None:
    registry = FunctionRegistry()

    @registry.function
    def explode(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(reason)

    @registry.function
    async def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    runtime = await start_runtime(registry=registry)
    engine = runtime.engine
    alice = await runtime.accounts.ensure_user("alice")
    assistant_id = await make_assistant(engine, alice, tools=registry.definitions())
    thread = await engine.create_thread(alice, ThreadCreate(messages=[MessageCreate(role="user", content="go")]))
    model.add_tool_calls(
        [
            {"name": "explode", "arguments": '{"reason": "kaboom"}', "id": "call_explode"},
            {"name": "double", "arguments": '{"x": 21}', "id": "call_double"},
        ]
    )
    model.add_text("One tool failed; the other said 42.")

    events = await stream(engine, alice, thread.id, assistant_id)

    assert names(events)[-1] == "thread.run.completed"
    assert model.last_messages is not None
    tool_messages = [m for m in model.last_messages if m["role"] == "tool"]
    assert tool_messages == [
        {"role": "tool", "tool_call_id": "call_explode", "content": "Error: the tool 'explode' failed: RuntimeError: kaboom"},
        {"role": "tool", "tool_call_id": "call_double", "content": "42"},
    ]
    run_id = events[0].data["id"]
    steps = await engine.list_steps(alice, thread.id, run_id, ListParams(order="asc"))
    tool_step = next(s for s in steps.data if s.type == "tool_calls")
    assert tool_step.status is StepStatus.completed
    assert isinstance(tool_step.step_details, ToolCallsDetails)
    assert {c.id: c.function.output for c in tool_step.step_details.tool_calls} == {
        "call_explode": "Error: the tool 'explode' failed: RuntimeError: kaboom",
        "call_double": "42",
    }

