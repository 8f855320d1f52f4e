"""Per-user limits: concurrent runs (engine and `/v1`) and failed logins, with messages that say what to do."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from assistants.engine import Engine
from assistants.exceptions import TooManyRequestsError
from assistants.store import ListParams, SqlStore
from assistants.types import Run, RunStatus
from assistants.types.requests import AssistantCreate, MessageCreate, RunCreate, ThreadCreate
from assistants.ui.auth import (
    FAILURES_PER_ADDRESS,
    FAILURES_PER_NAME,
    THROTTLE_WINDOW_SECONDS,
    LoginThrottle,
    SignInRefused,
)
from tests.conftest import StartRuntime, instances_on_new_postgres
from tests.scripted_model import ScriptedModel
from tests.server import Server, start_server


async def start_run(engine: Engine, owner: str, assistant_id: str) -> Run:
    thread = await engine.create_thread(owner, ThreadCreate())
    await engine.create_message(owner, thread.id, MessageCreate(role="user", content="Take your time."))
    return await engine.create_run(owner, thread.id, RunCreate(assistant_id=assistant_id))


async def finished(engine: Engine, owner: str, run: Run) -> RunStatus:
    """The run's status once its task has ended."""
    async with asyncio.timeout(20):
        await engine.wait_for_run(run.id)
    return (await engine.get_run(owner, run.thread_id, run.id)).status


async def test_a_user_may_run_only_so_many_runs_at_once(start_runtime: StartRuntime, model: ScriptedModel) -> None:
    engine = (await start_runtime(ASSISTANTS_MAX_RUNS_PER_USER=2)).engine
    alice = await engine.create_assistant("user_alice", AssistantCreate(model="scripted-model"))
    bob = await engine.create_assistant("user_bob", AssistantCreate(model="scripted-model"))
    model.add_hang(30)
    model.add_hang(30)
    first = await start_run(engine, "user_alice", alice.id)
    second = await start_run(engine, "user_alice", alice.id)

    with pytest.raises(TooManyRequestsError, match="already have 2 runs in progress.*ASSISTANTS_MAX_RUNS_PER_USER") as refused:
        await start_run(engine, "user_alice", alice.id)
    assert refused.value.status_code == 429 and refused.value.code == "too_many_runs"
    # Another user is not held back by Alice's runs.
    model.add_text("Bob's answer.")
    assert await finished(engine, "user_bob", await start_run(engine, "user_bob", bob.id)) is RunStatus.completed

    # Once one of Alice's runs ends, she may start another.
    await engine.cancel_run("user_alice", first.thread_id, first.id)
    async with asyncio.timeout(20):
        await engine.wait_for_run(first.id)
    model.add_text("Done.")
    assert await finished(engine, "user_alice", await start_run(engine, "user_alice", alice.id)) is RunStatus.completed
    await engine.cancel_run("user_alice", second.thread_id, second.id)


async def test_the_run_limit_holds_when_many_runs_are_started_at_the_same_moment(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """Starts racing each other (several connections, and on PostgreSQL several transactions at
    once) still leave exactly the limit running; the others are refused and leave nothing behind."""
    engine = (await start_runtime(ASSISTANTS_MAX_RUNS_PER_USER=2)).engine
    assistant = await engine.create_assistant("user_carol", AssistantCreate(model="scripted-model"))
    threads = []
    for _ in range(12):
        thread = await engine.create_thread("user_carol", ThreadCreate())
        await engine.create_message("user_carol", thread.id, MessageCreate(role="user", content="Take your time."))
        threads.append(thread)
    model.add_hang(30)
    model.add_hang(30)

    async def start(thread_id: str) -> Run | TooManyRequestsError:
        body = RunCreate(
            assistant_id=assistant.id, additional_messages=[{"role": "user", "content": "One more thing."}]
        )
        try:
            return await engine.create_run("user_carol", thread_id, body)
        except TooManyRequestsError as exc:
            return exc

    outcomes = await asyncio.gather(*(start(t.id) for t in threads))
    started = [o for o in outcomes if isinstance(o, Run)]
    refused = [o for o in outcomes if isinstance(o, TooManyRequestsError)]
    assert len(started) == 2 and len(refused) == 10, outcomes
    # A refused start wrote nothing: its thread still holds only the first message and no run.
    for thread, outcome in zip(threads, outcomes, strict=True):
        messages = await engine.list_messages("user_carol", thread.id, ListParams(limit=10))
        runs = await engine.list_runs("user_carol", thread.id, ListParams(limit=10))
        if isinstance(outcome, TooManyRequestsError):
            assert [m.role for m in messages.data] == ["user"] and runs.data == []
        else:
            assert [m.role for m in messages.data].count("user") == 2 and [r.id for r in runs.data] == [outcome.id]
    for run in started:
        await engine.cancel_run("user_carol", run.thread_id, run.id)
        assert await finished(engine, "user_carol", run) is RunStatus.cancelled


def test_the_api_answers_429_in_the_openai_error_shape(model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> None:
    srv = start_server(
        tmp_path_factory.mktemp("limits"), model_url=model.base_url, extra_env={"ASSISTANTS_MAX_RUNS_PER_USER": "1"}
    )
    try:
        client = openai.OpenAI(base_url=srv.api_url, api_key=srv.key_for("limited"), max_retries=0, _strict_response_validation=True)
        assistant = client.beta.assistants.create(model="scripted-model")
        model.add_hang(30)
        busy = client.beta.threads.create_and_run(assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "Hi"}]})
        with pytest.raises(openai.RateLimitError) as refused:
            client.beta.threads.create_and_run(assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "Hi"}]})
        error = refused.value.body
        assert isinstance(error, dict)
        assert error["code"] == "too_many_runs" and "ASSISTANTS_MAX_RUNS_PER_USER" in error["message"]
        client.beta.threads.runs.cancel(run_id=busy.id, thread_id=busy.thread_id)
    finally:
        srv.stop()


def throttle_on(store: SqlStore, clock: list[float]) -> LoginThrottle:
    async def the_store() -> SqlStore:
        return store

    return LoginThrottle(the_store, clock=lambda: clock[0])


async def refused_for(throttle: LoginThrottle, name: str, address: str) -> int:
    with pytest.raises(SignInRefused) as refused:
        await throttle.attempt(name, address)
    return refused.value.retry_after


async def test_login_throttle_counts_per_name_and_per_address_within_the_window(store: SqlStore) -> None:
    clock = [1000.0]
    throttle = throttle_on(store, clock)
    for _ in range(FAILURES_PER_NAME - 1):
        await throttle.attempt("Alice", "10.0.0.1")
    await throttle.attempt("alice", "10.0.0.2")
    # Names are counted without regard to case, across addresses.
    assert await refused_for(throttle, "ALICE", "10.0.0.9") == THROTTLE_WINDOW_SECONDS
    clock[0] += 60
    assert await refused_for(throttle, "alice", "10.0.0.9") == THROTTLE_WINDOW_SECONDS - 60
    # Refused tries are not counted: once the first failures age out of the window, the name may
    # try again, however often it was refused meanwhile.
    clock[0] = 1000.0 + THROTTLE_WINDOW_SECONDS - 10
    for _ in range(FAILURES_PER_NAME):
        assert await refused_for(throttle, "alice", "10.0.0.9") == 10
    clock[0] = 1000.0 + THROTTLE_WINDOW_SECONDS + 1
    await throttle.attempt("alice", "10.0.0.9")

    # A success clears the name's count, and does not count against its address.
    for _ in range(FAILURES_PER_NAME - 1):
        await throttle.attempt("bob", "10.0.0.3")
    token = await throttle.attempt("Bob", "10.0.0.3")
    await throttle.succeeded("Bob", token)
    for _ in range(FAILURES_PER_NAME):
        await throttle.attempt("bob", "10.0.0.3")
    # The address holds 4 + 5 failures: 11 more tries of other names fit under its limit of 20.
    for n in range(FAILURES_PER_ADDRESS - 2 * FAILURES_PER_NAME + 1):
        await throttle.attempt(f"carol{n}", "10.0.0.3")
    assert await refused_for(throttle, "dave", "10.0.0.3") > 0

    # One address trying many names is refused too, whatever name it tries next.
    for n in range(FAILURES_PER_ADDRESS):
        await throttle.attempt(f"user{n}", "10.6.6.6")
    assert await refused_for(throttle, "someone-new", "10.6.6.6") > 0
    await throttle.attempt("someone-new", "10.0.0.4")


async def test_login_tries_sent_at_once_cannot_slip_past_the_limit_together(store: SqlStore) -> None:
    throttle = throttle_on(store, [time.time()])

    async def one_try(address: str) -> bool:
        try:
            await throttle.attempt("erin", address)
        except SignInRefused:
            return False
        return True

    allowed = await asyncio.gather(*(one_try(f"10.1.0.{n}") for n in range(15)))
    assert allowed.count(True) == FAILURES_PER_NAME, allowed


def test_every_instance_counts_the_same_failed_sign_ins(
    scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Behind a load balancer, tries spread over two instances count together (one PostgreSQL)."""
    with instances_on_new_postgres(tmp_path_factory.mktemp("throttle"), scripted_model.base_url) as (a, b):
        a.cli("users", "add", "frank", "--password", "the-right-one")

        def sign_in(srv: Server, password: str) -> httpx.Response:
            return httpx.post(f"{srv.url}/login", data={"username": "frank", "password": password}, timeout=30)

        for srv in (a, b, a, b, a):
            assert sign_in(srv, "wrong").status_code == 401
        for srv in (b, a):
            refused = sign_in(srv, "the-right-one")
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
            assert "Too many failed sign-ins" in refused.text
