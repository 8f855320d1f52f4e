"""`GET /v1/assistants/{id}/events`: an assistant's run events from the durable log, with a cursor.

Real servers, real HTTP: the stream is read as a client would (`id:` / `event:` / `data:` frames),
a reconnect with `Last-Event-ID` resumes exactly after the last event seen, and on PostgreSQL a
second server process sharing the database streams the runs the first one executes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import (
    create_pg_database,
    drop_pg_database,
    instances_on_new_postgres,
    sdk_client,
)
from tests.scripted_model import ScriptedModel
from tests.server import Server, clock_ahead, start_server
from tests.test_api_vector_stores import wait_until


@dataclass
class Frame:
    id: int
    event: str
    data: dict[str, Any]


def frames(response: httpx.Response) -> Iterator[Frame]:
    """The event frames of an SSE response (comments skipped), as they arrive."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "event" in fields:
                yield Frame(int(fields["id"]), fields["event"], json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def follow(server: Server, user: str, assistant_id: str, **headers: str) -> Any:
    # Keep-alive comments come every 15 s, so a read that waits 10 s fails if the server missed a
    # wake-up (on PostgreSQL: another process's NOTIFY) and only noticed new events by timing out.
    client = httpx.Client(base_url=server.api_url, timeout=httpx.Timeout(30, read=10))
    request = client.build_request(
        "GET", f"/assistants/{assistant_id}/events", headers={"authorization": f"Bearer {server.key_for(user)}", **headers}
    )
    response = client.send(request, stream=True)
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    return client, response


def until_run_ends(stream: Iterator[Frame]) -> list[Frame]:
    seen = []
    for frame in stream:
        seen.append(frame)
        if frame.event in ("thread.run.completed", "thread.run.failed"):
            return seen
    raise AssertionError(f"the stream ended early: {[f.event for f in seen]}")


def run_while_following(watched: Server, user: str, client: openai.OpenAI, assistant_id: str) -> tuple[Any, list[Frame]]:
    """Follow the assistant's events on `watched` while `client` runs it on a new thread."""
    http, response = follow(watched, user, assistant_id)
    try:
        stream = frames(response)
        run = client.beta.threads.create_and_run_poll(
            assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": "Go"}]}, poll_interval_ms=50
        )
        return run, until_run_ends(stream)
    finally:
        response.close()
        http.close()


def streamed_text(seen: list[Frame]) -> str:
    return "".join(
        part["text"]["value"] for f in seen if f.event == "thread.message.delta" for part in f.data["delta"]["content"]
    )


def test_an_assistants_events_stream_live_and_resume_after_the_last_id(server: Server, model: ScriptedModel) -> None:
    client = sdk_client(server, "watcher")
    assistant = client.beta.assistants.create(model="scripted-model")
    model.add_text("One two three four.")
    run, seen = run_while_following(server, "watcher", client, assistant.id)
    assert run.status == "completed"

    names = [f.event for f in seen]
    assert names[:4] == ["thread.created", "thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    assert "thread.message.delta" in names and names[-1] == "thread.run.completed"
    assert [f.id for f in seen] == sorted({f.id for f in seen}), "ids increase, one per event"
    assert streamed_text(seen) == "One two three four."
    assert seen[-1].data["id"] == run.id and seen[-1].data["status"] == "completed"

    # A reconnect with the id of an event seen resumes right after it, with nothing missed.
    middle = seen[len(seen) // 2]
    http, response = follow(server, "watcher", assistant.id, **{"Last-Event-ID": str(middle.id)})
    try:
        resumed = until_run_ends(frames(response))
    finally:
        response.close()
        http.close()
    assert [(f.id, f.event) for f in resumed] == [(f.id, f.event) for f in seen if f.id > middle.id]


def test_event_stream_errors(server: Server, model: ScriptedModel) -> None:
    client = sdk_client(server, "watcher")
    other = sdk_client(server, "intruder")
    assistant = client.beta.assistants.create(model="scripted-model")
    with pytest.raises(openai.BadRequestError) as refused:
        client.get(f"/assistants/{assistant.id}/events?after=yesterday", cast_to=object)
    assert refused.value.body["param"] == "after"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        other.get(f"/assistants/{assistant.id}/events", cast_to=object)
    assert httpx.get(f"{server.api_url}/assistants/{assistant.id}/events", timeout=10).status_code == 401


@pytest.fixture(scope="module")
def two_servers(scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two server processes on one PostgreSQL database, as behind a load balancer."""
    with instances_on_new_postgres(tmp_path_factory.mktemp("instances"), scripted_model.base_url) as (first, second):
        yield first, second


def test_a_run_on_one_instance_streams_from_another(two_servers: tuple[Server, Server], model: ScriptedModel) -> None:
    a, b = two_servers
    on_a = sdk_client(a, "shared")
    on_b = sdk_client(b, "shared")
    assistant = on_a.beta.assistants.create(model="scripted-model")
    model.add_text("Made on A, seen on B.")
    run, seen = run_while_following(b, "shared", on_a, assistant.id)
    assert seen[-1].data["id"] == run.id
    assert streamed_text(seen) == "Made on A, seen on B."
    # The thread and its answer are B's to read too.
    [answer] = [m for m in on_b.beta.threads.messages.list(thread_id=run.thread_id).data if m.role == "assistant"]
    assert answer.content[0].type == "text" and answer.content[0].text.value == "Made on A, seen on B."


def test_deleting_a_thread_on_one_instance_stops_its_run_on_the_other(
    two_servers: tuple[Server, Server], model: ScriptedModel
) -> None:
    """A deletes nothing itself: B deletes the thread whose run A executes. A stops calling the
    model, and whoever follows the run hears that it ended, and why."""
    a, b = two_servers
    on_a, on_b = sdk_client(a, "deleting"), sdk_client(b, "deleting")
    assistant = on_a.beta.assistants.create(model="scripted-model")
    model.add_hang(60, "The first words")
    disconnects = model.disconnects
    http, response = follow(a, "deleting", assistant.id)
    try:
        stream = frames(response)
        run = on_a.beta.threads.create_and_run(assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "Go"}]})
        next(f for f in stream if f.event == "thread.message.delta")
        assert on_b.beta.threads.delete(run.thread_id).deleted
        seen = until_run_ends(stream)
    finally:
        response.close()
        http.close()
    assert seen[-1].event == "thread.run.failed" and seen[-1].data["id"] == run.id
    assert "thread was deleted" in seen[-1].data["last_error"]["message"]
    assert model.wait_for(lambda m: m.disconnects > disconnects)


def wait_for_status(client: openai.OpenAI, thread_id: str, run_id: str, statuses: set[str]) -> Any:
    return wait_until(
        lambda: (run := client.beta.threads.runs.retrieve(run_id=run_id, thread_id=thread_id)).status in statuses and run,
        f"run {run_id} to be {' or '.join(sorted(statuses))}",
    )


def test_instances_cancel_each_others_runs_restart_safely_and_take_over_after_a_crash(
    scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = scripted_model
    model.reset()
    url = asyncio.run(create_pg_database())
    env = {"ASSISTANTS_DATABASE_URL": url, "ASSISTANTS_RUN_LEASE_SECONDS": "3"}
    started: list[Server] = []

    def start(name: str) -> Server:
        srv = start_server(tmp_path_factory.mktemp(name), model_url=model.base_url, extra_env=env)
        started.append(srv)
        return srv

    try:
        a, b = start("lease-a"), start("lease-b")
        b.keys = a.keys
        on_a, on_b = sdk_client(a, "crew"), sdk_client(b, "crew")
        assistant = on_a.beta.assistants.create(model="scripted-model")

        # 1. A run executing on A is cancelled through B: A stops it and closes the provider stream.
        model.add_hang(60)
        run = on_a.beta.threads.create_and_run(assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "1"}]})
        wait_for_status(on_b, run.thread_id, run.id, {"in_progress"})
        # The answer has begun streaming (its message step exists) before the cancel comes.
        deadline = time.monotonic() + 30
        while not on_b.beta.threads.runs.steps.list(run_id=run.id, thread_id=run.thread_id).data:
            assert time.monotonic() < deadline, "the run never started answering"
            time.sleep(0.1)
        assert on_b.beta.threads.runs.cancel(run_id=run.id, thread_id=run.thread_id).status == "cancelling"
        assert wait_for_status(on_b, run.thread_id, run.id, {"cancelled"}).status == "cancelled"
        assert model.wait_for(lambda m: m.disconnects >= 1)

        # 2. Restarting B while A executes a run leaves A's run alone, for longer than a lease.
        model.add_endless(0.05)
        run = on_a.beta.threads.create_and_run(assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "2"}]})
        wait_for_status(on_a, run.thread_id, run.id, {"in_progress"})
        b.stop()
        b = start("lease-b2")
        b.keys = a.keys
        on_b = sdk_client(b, "crew")
        time.sleep(4.0)  # B's start-up recovery and a few sweeps, past one 3-second lease.
        assert on_b.beta.threads.runs.retrieve(run_id=run.id, thread_id=run.thread_id).status == "in_progress"
        on_b.beta.threads.runs.cancel(run_id=run.id, thread_id=run.thread_id)
        assert wait_for_status(on_b, run.thread_id, run.id, {"cancelled"}).status == "cancelled"

        # 3. A is killed mid-answer: once its lease runs out, B ends the run, keeping the partial
        # answer marked, and the thread runs again on B.
        model.add_endless(0.05)
        run = on_a.beta.threads.create_and_run(assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "3"}]})
        # Killed once some of the answer has been stored (checkpoints come every second).
        wait_until(
            lambda: any(
                m.role == "assistant" and m.content for m in on_b.beta.threads.messages.list(thread_id=run.thread_id).data
            ),
            "part of the answer to be stored",
        )
        a.process.kill()
        a.process.wait()
        failed = wait_for_status(on_b, run.thread_id, run.id, {"failed"})
        assert failed.last_error is not None and "stopped before it finished" in failed.last_error.message
        model.add_text("B answers now.")
        again = on_b.beta.threads.runs.create_and_poll(thread_id=run.thread_id, assistant_id=assistant.id, poll_interval_ms=50)
        assert again.status == "completed"
        texts = [
            (m.status, m.content[0].text.value if m.content and m.content[0].type == "text" else "")
            for m in on_b.beta.threads.messages.list(thread_id=run.thread_id, order="asc").data
            if m.role == "assistant"
        ]
        assert texts[-1] == ("completed", "B answers now.")
        # The words A had streamed (stored at least every second) are kept, marked incomplete.
        # The kill may come between two words, so the kept text is any non-empty prefix of the stream.
        [(status, partial)] = texts[:-1]
        assert status == "incomplete" and partial.strip() and ("and so on " * 1000).startswith(partial)
    finally:
        for srv in started:
            if srv.process.poll() is None:
                srv.stop()
        asyncio.run(drop_pg_database(url))


def test_leases_hold_between_instances_whose_clocks_disagree(
    scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Leases are stamped and compared on the database's clock: an instance whose clock runs a
    minute ahead neither ends another's live run nor keeps its own crashed run alive a minute."""
    model = scripted_model
    model.reset()
    url = asyncio.run(create_pg_database())
    env = {"ASSISTANTS_DATABASE_URL": url, "ASSISTANTS_RUN_LEASE_SECONDS": "3", "ASSISTANTS_CODE_WARM_KERNELS": "0"}
    started: list[Server] = []
    try:
        a = start_server(tmp_path_factory.mktemp("clock-a"), model_url=model.base_url, extra_env=env)
        started.append(a)
        ahead = start_server(tmp_path_factory.mktemp("clock-b"), model_url=model.base_url, extra_env={**env, **clock_ahead(60)})
        started.append(ahead)
        ahead.keys = a.keys
        on_a, on_ahead = sdk_client(a, "crew"), sdk_client(ahead, "crew")
        created = on_ahead.beta.assistants.create(model="scripted-model")
        assert created.created_at > time.time() + 50  # The clock really is ahead.

        # A's run outlives several of the other instance's sweeps (every second with 3-second leases).
        model.add_endless(0.05)
        run = on_a.beta.threads.create_and_run(assistant_id=created.id, thread={"messages": [{"role": "user", "content": "1"}]})
        wait_for_status(on_ahead, run.thread_id, run.id, {"in_progress"})
        time.sleep(5.0)
        assert on_ahead.beta.threads.runs.retrieve(run_id=run.id, thread_id=run.thread_id).status == "in_progress"
        on_ahead.beta.threads.runs.cancel(run_id=run.id, thread_id=run.thread_id)
        assert wait_for_status(on_a, run.thread_id, run.id, {"cancelled"}).status == "cancelled"

        # The instance ahead is killed mid-run: A ends its run once the lease runs out, not a minute
        # later (waiting for it gives up after 30 s).
        model.add_endless(0.05)
        run = on_ahead.beta.threads.create_and_run(assistant_id=created.id, thread={"messages": [{"role": "user", "content": "2"}]})
        wait_for_status(on_a, run.thread_id, run.id, {"in_progress"})
        ahead.process.kill()
        ahead.process.wait()
        failed = wait_for_status(on_a, run.thread_id, run.id, {"failed"})
        assert failed.last_error is not None and "stopped before it finished" in failed.last_error.message
    finally:
        for srv in started:
            if srv.process.poll() is None:
                srv.stop()
        asyncio.run(drop_pg_database(url))

