"""The SQL store, on SQLite and on PostgreSQL (the `store` fixture runs each test on both)."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from assistants.exceptions import InvalidRequestError, NotFoundError
from assistants.ids import new_id
from assistants.store import ActiveRunConflict, ListParams, MessageCounts, SqlStore
from assistants.types import (
    Assistant,
    File,
    Message,
    MessageStatus,
    Run,
    RunStatus,
    RunStep,
    Session,
    TextContent,
    TextValue,
    Thread,
)
from assistants.types.objects import MessageCreation, MessageCreationDetails

OWNER = "user_alice"
OTHER = "user_bob"
T0 = 1_700_000_000


# Builders ------------------------------------------------------------------------------------


def make_assistant(**kw: Any) -> Assistant:
    return Assistant(**{"id": new_id("assistant"), "created_at": T0, "model": "gpt-4o-mini", **kw})


def make_thread(**kw: Any) -> Thread:
    return Thread(**{"id": new_id("thread"), "created_at": T0, **kw})


def make_session(**kw: Any) -> Session:
    return Session(
        **{"id": new_id("thread"), "created_at": T0, "user": OWNER, "assistant_id": "asst_x", **kw}
    )


def make_message(thread_id: str, text: str = "hello", **kw: Any) -> Message:
    return Message(
        **{
            "id": new_id("message"),
            "created_at": T0,
            "thread_id": thread_id,
            "role": "user",
            "content": [TextContent(text=TextValue(value=text))],
            **kw,
        }
    )


def make_run(thread_id: str, status: RunStatus = RunStatus.queued, **kw: Any) -> Run:
    return Run(
        **{
            "id": new_id("run"),
            "created_at": T0,
            "thread_id": thread_id,
            "assistant_id": "asst_x",
            "model": "gpt-4o-mini",
            "status": status,
            **kw,
        }
    )


def make_step(run: Run, message_id: str) -> RunStep:
    return RunStep(
        id=new_id("step"),
        created_at=T0,
        assistant_id=run.assistant_id,
        thread_id=run.thread_id,
        run_id=run.id,
        type="message_creation",
        step_details=MessageCreationDetails(
            message_creation=MessageCreation(message_id=message_id)
        ),
    )


def make_file(**kw: Any) -> File:
    return File(
        **{
            "id": new_id("file"),
            "bytes": 11,
            "created_at": T0,
            "filename": "notes.txt",
            "purpose": "assistants",
            **kw,
        }
    )


async def insert(store: SqlStore, *objs: Any, owner: str = OWNER) -> None:
    async with store.transaction() as tx:
        for obj in objs:
            await tx.insert(obj, owner=owner)


# CRUD ----------------------------------------------------------------------------------------


async def test_assistant_insert_get_find_save_delete(store: SqlStore) -> None:
    assistant = make_assistant(
        name="Helper", instructions="Be brief.", metadata={"team": "a"}, temperature=0.2
    )
    await insert(store, assistant)

    async with store.read() as tx:
        got = await tx.get(Assistant, assistant.id, owner=OWNER)
        assert got == assistant
        assert await tx.find(Assistant, assistant.id, owner=OWNER) == assistant
        assert await tx.find(Assistant, assistant.id, owner=None) == assistant
        assert await tx.owner_of(Assistant, assistant.id) == OWNER

    changed = got.with_updates(name="Renamed", metadata={"team": "b"})
    async with store.transaction() as tx:
        await tx.save(changed)
    async with store.read() as tx:
        again = await tx.get(Assistant, assistant.id, owner=OWNER)
    assert again.name == "Renamed"
    assert again.metadata == {"team": "b"}
    assert again.instructions == "Be brief."

    async with store.transaction() as tx:
        assert await tx.delete(Assistant, assistant.id, owner=OWNER) is True
        assert await tx.delete(Assistant, assistant.id, owner=OWNER) is False
    async with store.read() as tx:
        assert await tx.find(Assistant, assistant.id, owner=OWNER) is None
        assert await tx.owner_of(Assistant, assistant.id) is None
        with pytest.raises(NotFoundError):
            await tx.get(Assistant, assistant.id, owner=OWNER)


async def test_thread_message_run_step_file_round_trip(store: SqlStore) -> None:
    thread = make_thread(metadata={"k": "v"}, tool_resources={"code_interpreter": {"file_ids": []}})
    message = make_message(thread.id, "What is 2+2?")
    run = make_run(thread.id, RunStatus.in_progress, started_at=T0 + 1, temperature=0.5)
    step = make_step(run, message.id)
    file = make_file()
    async with store.transaction() as tx:
        await tx.insert(thread, owner=OWNER)
        await tx.insert(message, owner=OWNER)
        await tx.insert(run, owner=OWNER)
        await tx.insert(step, owner=OWNER)
        await tx.insert(file, owner=OWNER, path="/data/files/notes.txt")

    async with store.read() as tx:
        assert await tx.get(Thread, thread.id, owner=OWNER) == thread
        got_message = await tx.get(Message, message.id, owner=OWNER)
        assert got_message == message
        assert got_message.text == "What is 2+2?"
        got_run = await tx.get(Run, run.id, owner=OWNER)
        assert got_run == run
        assert got_run.status is RunStatus.in_progress
        assert await tx.get(RunStep, step.id, owner=OWNER) == step
        assert await tx.get(File, file.id, owner=OWNER) == file
        assert await tx.file_path(file.id, owner=OWNER) == "/data/files/notes.txt"
        with pytest.raises(NotFoundError):
            await tx.file_path(file.id, owner=OWNER + "x")
        assert await tx.count_messages(thread.id) == 1

    async with store.transaction() as tx:
        await tx.save(
            run.model_copy(update={"status": RunStatus.completed, "completed_at": T0 + 5})
        )
        await tx.save(message.model_copy(update={"metadata": {"edited": "yes"}}))
    async with store.read() as tx:
        saved = await tx.get(Run, run.id, owner=OWNER)
        assert saved.status is RunStatus.completed and saved.completed_at == T0 + 5
        assert (await tx.get(Message, message.id, owner=OWNER)).metadata == {"edited": "yes"}
        # The run's status column follows the object: the run is no longer active.
        assert await tx.active_run(thread.id) is None

    for cls, obj in (
        (RunStep, step),
        (Run, run),
        (Message, message),
        (File, file),
        (Thread, thread),
    ):
        async with store.transaction() as tx:
            assert await tx.delete(cls, obj.id, owner=OWNER) is True
        async with store.read() as tx:
            assert await tx.find(cls, obj.id, owner=OWNER) is None


async def test_session_is_stored_and_read_as_thread_or_session(store: SqlStore) -> None:
    session = make_session(title="Stored", context_n=3, temperature=0.7)
    await insert(store, session)
    async with store.read() as tx:
        as_session = await tx.get(Session, session.id, owner=OWNER)
        as_thread = await tx.get(Thread, session.id, owner=OWNER)
    assert as_session == session
    assert as_session.context_n == 3 and as_session.temperature == 0.7
    assert type(as_thread) is Thread
    assert as_thread.metadata == session.metadata


async def test_get_not_found_uses_openai_words(store: SqlStore) -> None:
    async with store.read() as tx:
        with pytest.raises(NotFoundError) as info:
            await tx.get(Assistant, "asst_missing", owner=OWNER)
        assert info.value.message == "No assistant found with id 'asst_missing'."
        assert info.value.status_code == 404
        with pytest.raises(NotFoundError) as info:
            await tx.get(RunStep, "step_missing", owner=OWNER, param="step_id")
        assert info.value.message == "No run step found with id 'step_missing'."
        assert info.value.param == "step_id"


# Owners --------------------------------------------------------------------------------------


async def test_owner_isolation(store: SqlStore) -> None:
    mine = make_assistant(name="mine")
    theirs = make_assistant(name="theirs")
    await insert(store, mine)
    await insert(store, theirs, owner=OTHER)

    async with store.read() as tx:
        assert await tx.find(Assistant, theirs.id, owner=OWNER) is None
        with pytest.raises(NotFoundError) as info:
            await tx.get(Assistant, theirs.id, owner=OWNER)
        assert info.value.message == f"No assistant found with id '{theirs.id}'."
        assert (await tx.get(Assistant, theirs.id, owner=OTHER)).name == "theirs"
        page = await tx.list(Assistant, owner=OWNER, params=ListParams(limit=100))
        assert [a.id for a in page.data] == [mine.id]

    async with store.transaction() as tx:
        assert await tx.delete(Assistant, theirs.id, owner=OWNER) is False
    async with store.read() as tx:
        assert await tx.find(Assistant, theirs.id, owner=OTHER) == theirs
        assert await tx.owner_of(Assistant, theirs.id) == OTHER


async def test_deleting_thread_by_wrong_owner_keeps_its_children(store: SqlStore) -> None:
    thread = make_thread()
    message = make_message(thread.id)
    await insert(store, thread, message)
    async with store.transaction() as tx:
        assert await tx.delete(Thread, thread.id, owner=OTHER) is False
    async with store.read() as tx:
        assert await tx.find(Thread, thread.id, owner=OWNER) == thread
        assert await tx.find(Message, message.id, owner=OWNER) == message


async def test_deleting_thread_removes_messages_runs_and_steps(store: SqlStore) -> None:
    thread = make_thread()
    keep = make_thread()
    messages = [make_message(thread.id, f"m{i}") for i in range(3)]
    run = make_run(thread.id, RunStatus.completed)
    step = make_step(run, messages[0].id)
    keep_message = make_message(keep.id)
    keep_run = make_run(keep.id)
    keep_step = make_step(keep_run, keep_message.id)
    await insert(store, thread, keep, *messages, run, step, keep_message, keep_run, keep_step)

    async with store.transaction() as tx:
        assert await tx.delete(Thread, thread.id, owner=OWNER) is True

    async with store.read() as tx:
        assert await tx.find(Thread, thread.id, owner=OWNER) is None
        for m in messages:
            assert await tx.find(Message, m.id, owner=OWNER) is None
        assert await tx.find(Run, run.id, owner=OWNER) is None
        assert await tx.find(RunStep, step.id, owner=OWNER) is None
        assert await tx.count_messages(thread.id) == 0
        assert await tx.messages_page_desc(thread.id, limit=100, before_seq=None) == []
        assert await tx.run_steps(run.id) == []
        # Another thread's children are untouched.
        assert await tx.find(Thread, keep.id, owner=OWNER) == keep
        assert await tx.find(Message, keep_message.id, owner=OWNER) == keep_message
        assert await tx.find(Run, keep_run.id, owner=OWNER) == keep_run
        assert await tx.find(RunStep, keep_step.id, owner=OWNER) == keep_step

    # The kept thread still has its active run.
    async with store.read() as tx:
        assert (await tx.active_run(keep.id)).id == keep_run.id  # type: ignore[union-attr]


# Pagination ----------------------------------------------------------------------------------


@pytest.fixture
async def twenty_five(store: SqlStore) -> list[str]:
    """25 assistants of OWNER in insertion order (all with the same created_at) plus noise."""
    assistants = [make_assistant(name=f"a{i:02d}") for i in range(25)]
    # Insert one at a time, interleaved with another owner's objects.
    for i, assistant in enumerate(assistants):
        await insert(store, assistant)
        if i % 5 == 0:
            await insert(store, make_assistant(name="noise"), owner=OTHER)
    return [a.id for a in assistants]


async def _walk(store: SqlStore, order: Literal["asc", "desc"], limit: int) -> list[str]:
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        async with store.read() as tx:
            page = await tx.list(
                Assistant, owner=OWNER, params=ListParams(limit=limit, order=order, after=after)
            )
        pages += 1
        assert len(page.data) <= limit
        assert page.first_id == (page.data[0].id if page.data else None)
        assert page.last_id == (page.data[-1].id if page.data else None)
        seen.extend(a.id for a in page.data)
        if not page.has_more:
            break
        assert len(page.data) == limit
        after = page.last_id
        assert pages < 100
    return seen


def test_list_params_bounds() -> None:
    assert ListParams(limit=1).limit == 1
    assert ListParams(limit=100).limit == 100
    assert ListParams().limit == 20 and ListParams().order == "desc"
    for bad in (0, 101, -1):
        with pytest.raises(InvalidRequestError) as info:
            ListParams(limit=bad)
        assert info.value.param == "limit"
        assert str(bad) in info.value.message
    with pytest.raises(InvalidRequestError) as info:
        ListParams(order="sideways")  # type: ignore[arg-type]
    assert info.value.param == "order"


async def test_list_orders_and_limits(store: SqlStore, twenty_five: list[str]) -> None:
    async with store.read() as tx:
        asc = await tx.list(Assistant, owner=OWNER, params=ListParams(limit=100, order="asc"))
        desc = await tx.list(Assistant, owner=OWNER, params=ListParams(limit=100, order="desc"))
        default = await tx.list(Assistant, owner=OWNER, params=ListParams())
        one = await tx.list(Assistant, owner=OWNER, params=ListParams(limit=1))
        exact = await tx.list(Assistant, owner=OWNER, params=ListParams(limit=25, order="asc"))
        one_less = await tx.list(Assistant, owner=OWNER, params=ListParams(limit=24, order="asc"))

    assert [a.id for a in asc.data] == twenty_five
    assert asc.has_more is False
    assert (asc.first_id, asc.last_id) == (twenty_five[0], twenty_five[-1])
    assert [a.id for a in desc.data] == twenty_five[::-1]
    assert desc.has_more is False
    assert (desc.first_id, desc.last_id) == (twenty_five[-1], twenty_five[0])

    assert [a.id for a in default.data] == twenty_five[::-1][:20]
    assert default.has_more is True

    assert [a.id for a in one.data] == [twenty_five[-1]]
    assert one.has_more is True
    assert one.first_id == one.last_id == twenty_five[-1]

    assert [a.id for a in exact.data] == twenty_five and exact.has_more is False
    assert [a.id for a in one_less.data] == twenty_five[:24] and one_less.has_more is True


@pytest.mark.parametrize("limit", [1, 4, 7, 25, 100])
async def test_after_walks_whole_list_in_both_orders(
    store: SqlStore, twenty_five: list[str], limit: int
) -> None:
    asc = await _walk(store, "asc", limit)
    assert asc == twenty_five
    assert len(set(asc)) == 25
    desc = await _walk(store, "desc", limit)
    assert desc == twenty_five[::-1]


async def test_after_and_before_cursors(store: SqlStore, twenty_five: list[str]) -> None:
    ids_desc = twenty_five[::-1]
    async with store.read() as tx:
        after = await tx.list(
            Assistant, owner=OWNER, params=ListParams(limit=5, order="desc", after=ids_desc[9])
        )
        assert [a.id for a in after.data] == ids_desc[10:15]
        assert after.has_more is True

        tail = await tx.list(
            Assistant, owner=OWNER, params=ListParams(limit=5, order="desc", after=ids_desc[21])
        )
        assert [a.id for a in tail.data] == ids_desc[22:25]
        assert tail.has_more is False
        past_end = await tx.list(
            Assistant, owner=OWNER, params=ListParams(limit=5, order="desc", after=ids_desc[24])
        )
        assert past_end.data == [] and past_end.has_more is False
        assert past_end.first_id is None and past_end.last_id is None

        # `before` returns the page just ahead of the cursor, still in the list's order.
        before = await tx.list(
            Assistant, owner=OWNER, params=ListParams(limit=5, order="desc", before=ids_desc[10])
        )
        assert [a.id for a in before.data] == ids_desc[5:10]
        assert before.has_more is True
        assert (before.first_id, before.last_id) == (ids_desc[5], ids_desc[9])

        before_head = await tx.list(
            Assistant, owner=OWNER, params=ListParams(limit=5, order="desc", before=ids_desc[3])
        )
        assert [a.id for a in before_head.data] == ids_desc[0:3]
        assert before_head.has_more is False

        before_asc = await tx.list(
            Assistant, owner=OWNER, params=ListParams(limit=4, order="asc", before=twenty_five[12])
        )
        assert [a.id for a in before_asc.data] == twenty_five[8:12]
        assert before_asc.has_more is True

        between = await tx.list(
            Assistant,
            owner=OWNER,
            params=ListParams(limit=100, order="asc", after=twenty_five[3], before=twenty_five[9]),
        )
        assert [a.id for a in between.data] == twenty_five[4:9]
        assert between.has_more is False


async def test_before_walks_back_to_the_start(store: SqlStore, twenty_five: list[str]) -> None:
    orders: list[tuple[Literal["asc", "desc"], list[str]]] = [
        ("desc", twenty_five[::-1]),
        ("asc", twenty_five),
    ]
    for order, expected in orders:
        collected = [expected[-1]]
        before: str | None = expected[-1]
        while True:
            async with store.read() as tx:
                page = await tx.list(
                    Assistant, owner=OWNER, params=ListParams(limit=6, order=order, before=before)
                )
            collected[0:0] = [a.id for a in page.data]
            if not page.has_more:
                break
            before = page.first_id
        assert collected == expected


async def test_unknown_cursor_names_the_param(store: SqlStore, twenty_five: list[str]) -> None:
    foreign = make_assistant()
    await insert(store, foreign, owner=OTHER)
    async with store.read() as tx:
        for param in ("after", "before"):
            for cursor in ("asst_doesnotexist", foreign.id):
                with pytest.raises(InvalidRequestError) as info:
                    await tx.list(Assistant, owner=OWNER, params=ListParams(**{param: cursor}))
                assert info.value.param == param
                assert cursor in info.value.message
    # A thread id is not a cursor into the assistants list.
    thread = make_thread()
    await insert(store, thread)
    async with store.read() as tx:
        with pytest.raises(InvalidRequestError) as info:
            await tx.list(Assistant, owner=OWNER, params=ListParams(after=thread.id))
        assert info.value.param == "after"


async def test_list_messages_of_one_thread(store: SqlStore) -> None:
    t1, t2 = make_thread(), make_thread()
    m1 = [make_message(t1.id, f"one-{i}") for i in range(4)]
    m2 = [make_message(t2.id, f"two-{i}") for i in range(3)]
    await insert(store, t1, t2, *[m for pair in zip(m1, m2, strict=False) for m in pair], m1[3])
    async with store.read() as tx:
        page = await tx.list(
            Message, owner=OWNER, params=ListParams(order="asc"), where={"thread_id": t1.id}
        )
        assert [m.id for m in page.data] == [m.id for m in m1]
        page2 = await tx.list(
            Message, owner=OWNER, params=ListParams(order="desc"), where={"thread_id": t2.id}
        )
        assert [m.id for m in page2.data] == [m.id for m in m2][::-1]
        # A cursor from another thread is not in this list.
        with pytest.raises(InvalidRequestError):
            await tx.list(
                Message, owner=OWNER, params=ListParams(after=m2[0].id), where={"thread_id": t1.id}
            )


# Filters -------------------------------------------------------------------------------------


async def test_metadata_filter(store: SqlStore) -> None:
    a = make_thread(metadata={"user": "u1", "kind": "chat"})
    b = make_thread(metadata={"user": "u1", "kind": "task"})
    c = make_thread(metadata={"user": "u2", "kind": "chat"})
    d = make_thread()
    e = make_thread(metadata={"user": "u1", "kind": "chat"})
    await insert(store, a, b, c, d)
    await insert(store, e, owner=OTHER)

    async with store.read() as tx:
        u1 = await tx.list(
            Thread, owner=OWNER, params=ListParams(order="asc"), metadata={"user": "u1"}
        )
        assert [t.id for t in u1.data] == [a.id, b.id]
        both = await tx.list(
            Thread,
            owner=OWNER,
            params=ListParams(order="asc"),
            metadata={"user": "u1", "kind": "chat"},
        )
        assert [t.id for t in both.data] == [a.id]
        none = await tx.list(Thread, owner=OWNER, params=ListParams(), metadata={"user": "u3"})
        assert none.data == [] and none.has_more is False
        missing_key = await tx.list(
            Thread, owner=OWNER, params=ListParams(), metadata={"absent": "x"}
        )
        assert missing_key.data == []
        all_threads = await tx.list(Thread, owner=OWNER, params=ListParams(order="asc"))
        assert [t.id for t in all_threads.data] == [a.id, b.id, c.id, d.id]
        # Paginating within a filtered list.
        first = await tx.list(
            Thread, owner=OWNER, params=ListParams(limit=1, order="asc"), metadata={"user": "u1"}
        )
        assert [t.id for t in first.data] == [a.id] and first.has_more is True
        second = await tx.list(
            Thread,
            owner=OWNER,
            params=ListParams(limit=1, order="asc", after=first.last_id),
            metadata={"user": "u1"},
        )
        assert [t.id for t in second.data] == [b.id] and second.has_more is False
        # A cursor outside the filtered list is unknown to it.
        with pytest.raises(InvalidRequestError) as info:
            await tx.list(
                Thread, owner=OWNER, params=ListParams(after=c.id), metadata={"user": "u1"}
            )
        assert info.value.param == "after"


async def test_typed_metadata_filter_on_sessions(store: SqlStore) -> None:
    s1 = make_session(user="u1", context_n=5, temperature=0.5)
    s2 = make_session(user="u1", context_n=6)
    s3 = make_session(user="u2", context_n=5, temperature=0.5)
    await insert(store, s1, s2, s3)
    async with store.read() as tx:
        page = await tx.list(
            Session,
            owner=OWNER,
            params=ListParams(order="asc"),
            metadata=Session.metadata_filter(user="u1", context_n=5),
        )
        assert page.data == [s1]
        assert isinstance(page.data[0], Session)
        page = await tx.list(
            Session,
            owner=OWNER,
            params=ListParams(order="asc"),
            metadata=Session.metadata_filter(temperature=0.5),
        )
        assert [s.id for s in page.data] == [s1.id, s3.id]


async def test_title_contains(store: SqlStore) -> None:
    titles = [
        "Hello World",
        "say HELLO",
        "100% sure",
        "100 percent",
        "snake_case",
        "snakeXcase",
        "plain",
    ]
    sessions = [make_session(title=t) for t in titles]
    await insert(store, *sessions)

    async def search(text: str) -> list[str]:
        async with store.read() as tx:
            page = await tx.list(
                Session, owner=OWNER, params=ListParams(limit=100, order="asc"), title_contains=text
            )
        return [s.title for s in page.data]

    assert await search("hello") == ["Hello World", "say HELLO"]
    assert await search("WORLD") == ["Hello World"]
    assert await search("%") == ["100% sure"]
    assert await search("100%") == ["100% sure"]
    assert await search("_") == ["snake_case"]
    assert await search("e_c") == ["snake_case"]
    assert await search("nothing") == []
    assert await search("") == titles  # An empty search is no filter.


async def test_title_contains_treats_backslash_literally(store: SqlStore) -> None:
    # The search text is user input; a backslash in it must match a backslash, not escape the next
    # character ("k\s" must not turn into the pattern "ks").
    sessions = [make_session(title="back\\slash"), make_session(title="backslash")]
    await insert(store, *sessions)
    async with store.read() as tx:
        page = await tx.list(
            Session, owner=OWNER, params=ListParams(order="asc"), title_contains="k\\s"
        )
        assert [s.title for s in page.data] == ["back\\slash"]
        page = await tx.list(
            Session, owner=OWNER, params=ListParams(order="asc"), title_contains="\\"
        )
        assert [s.title for s in page.data] == ["back\\slash"]


# Message history -----------------------------------------------------------------------------
# (`messages_tail`, newest N oldest-first, became `messages_page_desc`: newest N newest-first as
# `(seq, message)` pairs, so callers can walk further back.)


async def test_messages_page_desc_newest_first_and_walks_back(store: SqlStore) -> None:
    thread, other = make_thread(), make_thread()
    messages = [make_message(thread.id, f"m{i}") for i in range(10)]
    await insert(store, thread, other)
    for i, m in enumerate(messages):
        await insert(store, m)
        if i % 3 == 0:
            await insert(store, make_message(other.id, "noise"))

    async with store.read() as tx:
        newest = await tx.messages_page_desc(thread.id, limit=3, before_seq=None)
        assert [m.text for _, m in newest] == ["m9", "m8", "m7"]
        # Reversed, it is the newest three oldest-first, as a chat model reads them.
        assert [m.text for _, m in reversed(newest)] == ["m7", "m8", "m9"]
        seqs = [seq for seq, _ in newest]
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 3
        assert [
            m.text for _, m in await tx.messages_page_desc(thread.id, limit=1, before_seq=None)
        ] == ["m9"]
        everything = await tx.messages_page_desc(thread.id, limit=50, before_seq=None)
        assert [m.text for _, m in everything] == [f"m{i}" for i in range(9, -1, -1)]
        assert all(isinstance(m, Message) and m.thread_id == thread.id for _, m in everything)

        # Walking back from the oldest seq of each batch visits every message exactly once.
        walked: list[str] = []
        before: int | None = None
        while True:
            batch = await tx.messages_page_desc(thread.id, limit=4, before_seq=before)
            if not batch:
                break
            walked.extend(m.text for _, m in batch)
            before = batch[-1][0]
        assert walked == [f"m{i}" for i in range(9, -1, -1)]

        assert await tx.messages_page_desc("thread_none", limit=5, before_seq=None) == []
        assert await tx.count_messages(thread.id) == 10
        assert await tx.count_messages(other.id) == 4


async def test_partial_texts_change_only_the_content_of_answers_still_streaming(store: SqlStore) -> None:
    thread = make_thread()
    streaming = make_message(thread.id, "", role="assistant", status="in_progress", content=[], metadata={"k": "v"})
    silent = make_message(thread.id, "", role="assistant", status="in_progress", content=[])
    ended = make_message(thread.id, "The whole answer.", role="assistant", status="completed")
    async with store.transaction() as tx:
        await tx.insert(thread, owner=OWNER)
        for message in (streaming, silent, ended):
            await tx.insert(message, owner=OWNER)

    text = 'Quotes " and \\ and ünïcode, so far'
    async with store.transaction() as tx:
        await tx.save_partial_texts({streaming.id: text, silent.id: "", ended.id: "an older part"})

    async with store.read() as tx:
        stored = [await tx.get(Message, m.id, owner=OWNER) for m in (streaming, silent, ended)]
    assert stored[0] == streaming.model_copy(update={"content": [TextContent(text=TextValue(value=text, annotations=[]))]})
    assert stored[1] == silent, "an empty text is no content"
    assert stored[2] == ended, "an answer that has ended keeps its final text"


async def test_an_answer_is_saved_whole_only_while_it_is_still_streaming(store: SqlStore) -> None:
    thread = make_thread()
    streaming = make_message(thread.id, "", role="assistant", status="in_progress", content=[])
    ended = make_message(thread.id, "Kept as the sweep ended it.", role="assistant", status="incomplete")
    await insert(store, thread, streaming, ended)
    async with store.transaction() as tx:
        done = streaming.model_copy(update={"status": MessageStatus.completed, "content": [TextContent(text=TextValue(value="All of it."))]})
        assert await tx.save_while_in_progress(done)
        assert not await tx.save_while_in_progress(ended.model_copy(update={"status": MessageStatus.completed}))
        assert not await tx.save_while_in_progress(done.model_copy(update={"content": []}))  # ended by the first save
    async with store.read() as tx:
        assert await tx.get(Message, streaming.id, owner=OWNER) == done
        assert await tx.get(Message, ended.id, owner=OWNER) == ended


async def test_delete_messages_after(store: SqlStore) -> None:
    thread, other = make_thread(), make_thread()
    messages = [make_message(thread.id, f"m{i}") for i in range(5)]
    other_message = make_message(other.id, "later, elsewhere")
    await insert(store, thread, other, *messages, other_message)
    async with store.transaction() as tx:
        assert await tx.delete_messages_after(thread.id, messages[1].id) == 3
        assert await tx.delete_messages_after(thread.id, "msg_unknown") == 0
    async with store.read() as tx:
        left = await tx.messages_page_desc(thread.id, limit=10, before_seq=None)
        assert [m.text for _, m in left] == ["m1", "m0"]
        assert await tx.find(Message, other_message.id, owner=OWNER) == other_message


async def test_a_thread_counts_its_messages_through_every_insert_and_delete(store: SqlStore) -> None:
    """`count_messages` reads the thread's own count, kept by each write of messages; the counts
    and the messages of `messages_counted` come from one statement."""
    thread, other = make_thread(), make_thread()
    messages = [make_message(thread.id, f"m{i}") for i in range(6)]
    await insert(store, thread, other, *messages, make_message(other.id, "elsewhere"))

    async def counted(after: int | None = None, limit: int = 10) -> tuple[MessageCounts, list[str]]:
        async with store.read() as tx:
            counts, rows = await tx.messages_counted(thread.id, after=after, limit=limit)
            assert counts.held == await tx.count_messages(thread.id)
            assert counts.held == len(await tx.messages_page_desc(thread.id, limit=100, before_seq=None))
            return counts, [m.text for _, m in rows]

    assert await counted() == (MessageCounts(6, 0), ["m5", "m4", "m3", "m2", "m1", "m0"])
    assert await counted(limit=2) == (MessageCounts(6, 0), ["m5", "m4"])
    async with store.read() as tx:
        seqs = {m.text: seq for seq, m in await tx.messages_page_desc(thread.id, limit=10, before_seq=None)}
    assert (await counted(after=seqs["m3"]))[1] == ["m4", "m5"]  # oldest first after a seq
    assert await counted(after=seqs["m5"]) == (MessageCounts(6, 0), [])

    async with store.transaction() as tx:
        assert await tx.delete(Message, messages[0].id, owner=OWNER)
        assert not await tx.delete(Message, messages[0].id, owner=OWNER)  # gone already: not counted twice
        assert not await tx.delete(Message, messages[1].id, owner="user_else")
    assert (await counted())[0] == MessageCounts(5, 1)
    async with store.transaction() as tx:
        assert await tx.delete_messages_after(thread.id, messages[2].id) == 3
        await tx.insert(make_message(thread.id, "m6"), owner=OWNER)
    assert await counted() == (MessageCounts(3, 4), ["m6", "m2", "m1"])
    # A refused transaction changes neither the messages nor the counts.
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.insert(make_message(thread.id, "never"), owner=OWNER)
            await tx.delete(Message, messages[1].id, owner=OWNER)
            raise RuntimeError("refused")
    assert await counted() == (MessageCounts(3, 4), ["m6", "m2", "m1"])
    async with store.read() as tx:
        assert await tx.count_messages(other.id) == 1
        assert (await tx.messages_counted(other.id, after=None, limit=5))[0] == MessageCounts(1, 0)
    async with store.transaction() as tx:
        assert await tx.delete(Thread, thread.id, owner=OWNER)
    async with store.read() as tx:
        assert await tx.count_messages(thread.id) == 0
        assert await tx.messages_counted(thread.id, after=None, limit=5) == (MessageCounts(0, 0), [])


async def test_run_steps_in_creation_order(store: SqlStore) -> None:
    thread = make_thread()
    run, other_run = (
        make_run(thread.id, RunStatus.completed),
        make_run(thread.id, RunStatus.completed),
    )
    message = make_message(thread.id)
    steps = [make_step(run, message.id) for _ in range(4)]
    await insert(
        store,
        thread,
        run,
        other_run,
        message,
        steps[0],
        make_step(other_run, message.id),
        *steps[1:],
    )
    async with store.read() as tx:
        assert await tx.run_steps(run.id) == steps
        assert len(await tx.run_steps(other_run.id)) == 1
        assert await tx.run_steps("run_none") == []


# Active runs ---------------------------------------------------------------------------------


async def test_second_active_run_conflicts(store: SqlStore) -> None:
    thread = make_thread()
    first = make_run(thread.id, RunStatus.queued)
    await insert(store, thread, first)

    second = make_run(thread.id, RunStatus.queued)
    with pytest.raises(ActiveRunConflict):
        await insert(store, second)
    for status in (RunStatus.in_progress, RunStatus.requires_action, RunStatus.cancelling):
        with pytest.raises(ActiveRunConflict):
            await insert(store, make_run(thread.id, status))

    async with store.read() as tx:
        assert await tx.find(Run, second.id, owner=OWNER) is None
        active = await tx.active_run(thread.id)
        assert active is not None and active.id == first.id

    # Another thread may have its own active run.
    other = make_thread()
    other_run = make_run(other.id, RunStatus.in_progress)
    await insert(store, other, other_run)
    async with store.read() as tx:
        assert (await tx.active_run(other.id)).id == other_run.id  # type: ignore[union-attr]


async def test_finished_runs_do_not_block_a_new_run(store: SqlStore) -> None:
    thread = make_thread()
    finished = [
        make_run(thread.id, status)
        for status in (
            RunStatus.completed,
            RunStatus.failed,
            RunStatus.cancelled,
            RunStatus.expired,
            RunStatus.incomplete,
        )
    ]
    await insert(store, thread, *finished)
    async with store.read() as tx:
        assert await tx.active_run(thread.id) is None
    new = make_run(thread.id, RunStatus.queued)
    await insert(store, new)
    async with store.read() as tx:
        assert (await tx.active_run(thread.id)).id == new.id  # type: ignore[union-attr]

    # Once it finishes (saved), the next one may start.
    async with store.transaction() as tx:
        await tx.save(new.model_copy(update={"status": RunStatus.completed}))
    newer = make_run(thread.id, RunStatus.queued)
    await insert(store, newer)
    async with store.read() as tx:
        assert (await tx.active_run(thread.id)).id == newer.id  # type: ignore[union-attr]


async def test_saving_a_run_into_an_active_status_conflicts(store: SqlStore) -> None:
    thread = make_thread()
    active = make_run(thread.id, RunStatus.in_progress)
    done = make_run(thread.id, RunStatus.completed)
    await insert(store, thread, active, done)

    with pytest.raises(ActiveRunConflict):
        async with store.transaction() as tx:
            await tx.save(done.model_copy(update={"status": RunStatus.queued}))
    async with store.read() as tx:
        assert (await tx.get(Run, done.id, owner=OWNER)).status is RunStatus.completed
        assert (await tx.active_run(thread.id)).id == active.id  # type: ignore[union-attr]

    # Saving the active run in another active status is fine (it does not conflict with itself).
    async with store.transaction() as tx:
        await tx.save(active.model_copy(update={"status": RunStatus.requires_action}))
    async with store.read() as tx:
        current = await tx.active_run(thread.id)
        assert (
            current is not None
            and current.id == active.id
            and current.status is RunStatus.requires_action
        )


async def test_expired_runs(store: SqlStore) -> None:
    now = T0 + 1000
    cases = {
        "past": (RunStatus.requires_action, now - 10, True),
        "exactly_now": (RunStatus.requires_action, now, True),
        "future": (RunStatus.requires_action, now + 1, False),
        "no_deadline": (RunStatus.requires_action, None, False),
        "in_progress_past": (RunStatus.in_progress, now - 10, False),
        "queued_past": (RunStatus.queued, now - 10, False),
        "completed_past": (RunStatus.completed, now - 10, False),
        "expired_past": (RunStatus.expired, now - 10, False),
    }
    runs: dict[str, Run] = {}
    for label, (status, expires_at, _) in cases.items():
        thread = make_thread()
        run = make_run(thread.id, status, expires_at=expires_at, metadata={"case": label})
        runs[label] = run
        await insert(store, thread, run, owner=OTHER if label == "past" else OWNER)

    async with store.read() as tx:
        expired = await tx.expired_runs(now)
    got = {run.id: owner for owner, run in expired}
    wanted = {runs[label].id for label, (_, _, hit) in cases.items() if hit}
    assert set(got) == wanted
    assert got[runs["past"].id] == OTHER
    assert got[runs["exactly_now"].id] == OWNER
    assert all(
        isinstance(run, Run) and run.status is RunStatus.requires_action for _, run in expired
    )

    async with store.read() as tx:
        unfinished = {run.id for _, run in await tx.unfinished_runs()}
    assert unfinished == {
        runs[label].id
        for label, (status, _, _) in cases.items()
        if status in ("requires_action", "in_progress", "queued")
    }


# Users and API keys --------------------------------------------------------------------------


async def test_users_and_api_keys(store: SqlStore) -> None:
    async with store.transaction() as tx:
        assert await tx.count_users() == 0
        await tx.insert_user("user_1", "alice", "hash1", T0)
        await tx.insert_user("user_2", "bob", None, T0)

    with pytest.raises(InvalidRequestError) as info:
        async with store.transaction() as tx:
            await tx.insert_user("user_3", "alice", None, T0)
    assert info.value.param == "name"
    assert "alice" in info.value.message

    async with store.transaction() as tx:
        assert await tx.count_users() == 2
        alice = await tx.user_by_name("alice")
        assert alice is not None
        assert (alice["id"], alice["password_hash"], alice["created_at"]) == ("user_1", "hash1", T0)
        assert (await tx.user_by_id("user_2"))["name"] == "bob"  # type: ignore[index]
        assert await tx.user_by_name("carol") is None
        assert await tx.user_by_id("user_3") is None
        await tx.set_password("user_2", "hash2")
        await tx.insert_api_key("key_1", "user_1", "laptop", "khash1", T0)
        await tx.insert_api_key("key_2", "user_2", "ci", "khash2", T0)

    async with store.read() as tx:
        assert (await tx.user_by_id("user_2"))["password_hash"] == "hash2"  # type: ignore[index]
        assert await tx.user_id_for_key("khash1") == "user_1"
        assert await tx.user_id_for_key("khash2") == "user_2"
        assert await tx.user_id_for_key("nope") is None


# Transactions --------------------------------------------------------------------------------


class Boom(Exception):
    pass


async def test_exception_rolls_back_the_whole_transaction(store: SqlStore) -> None:
    before = make_assistant(name="committed")
    await insert(store, before)

    assistant = make_assistant()
    thread = make_thread()
    message = make_message(thread.id)
    run = make_run(thread.id)
    with pytest.raises(Boom):
        async with store.transaction() as tx:
            await tx.insert(assistant, owner=OWNER)
            await tx.insert(thread, owner=OWNER)
            await tx.insert(message, owner=OWNER)
            await tx.insert(run, owner=OWNER)
            await tx.insert_user("user_9", "zed", None, T0)
            await tx.save(before.with_updates(name="changed"))
            # Everything is visible inside the transaction...
            assert await tx.find(Message, message.id, owner=OWNER) == message
            raise Boom

    async with store.read() as tx:
        assert await tx.find(Assistant, assistant.id, owner=OWNER) is None
        assert await tx.find(Thread, thread.id, owner=OWNER) is None
        assert await tx.find(Message, message.id, owner=OWNER) is None
        assert await tx.find(Run, run.id, owner=OWNER) is None
        assert await tx.active_run(thread.id) is None
        assert await tx.user_by_name("zed") is None
        assert (await tx.get(Assistant, before.id, owner=OWNER)).name == "committed"


async def test_rolled_back_delete_keeps_the_thread_and_children(store: SqlStore) -> None:
    thread = make_thread()
    message = make_message(thread.id)
    await insert(store, thread, message)
    with pytest.raises(Boom):
        async with store.transaction() as tx:
            assert await tx.delete(Thread, thread.id, owner=OWNER) is True
            raise Boom
    async with store.read() as tx:
        assert await tx.find(Thread, thread.id, owner=OWNER) == thread
        assert await tx.find(Message, message.id, owner=OWNER) == message


async def test_committed_transaction_is_visible_to_new_connections(store: SqlStore) -> None:
    thread = make_thread()
    async with store.transaction() as tx:
        await tx.insert(thread, owner=OWNER)
        await tx.insert(make_message(thread.id), owner=OWNER)
    async with store.read() as tx:
        assert await tx.count_messages(thread.id) == 1
        assert await tx.find(Thread, thread.id, owner=OWNER) == thread


async def test_objects_an_earlier_version_stored_with_loose_tool_settings_still_load(store: SqlStore) -> None:
    """Requests are now checked against the spec's shapes for file_search settings and attachment
    tools; what an earlier version accepted and stored still loads, and runs read it leniently."""
    from assistants.tools.file_search import options

    assistant = Assistant.model_validate(
        {"id": new_id("assistant"), "created_at": 1, "model": "m",
         "tools": [{"type": "file_search", "file_search": {"max_num_results": 100, "ranking_options": {"ranker": "auto"}, "foo": 1}}]}
    )
    message = Message.model_validate(
        {"id": new_id("message"), "created_at": 1, "thread_id": "thread_x", "role": "user", "content": [],
         "attachments": [{"file_id": "file-x", "tools": [{"type": "file_search", "file_search": {}}]}]}
    )
    async with store.transaction() as tx:
        await tx.insert(assistant, owner="user_1")
        await tx.insert(Thread(id="thread_x", created_at=1), owner="user_1")
        await tx.insert(message, owner="user_1")
    async with store.read() as tx:
        loaded = await tx.get(Assistant, assistant.id, owner="user_1")
        assert (await tx.get(Message, message.id, owner="user_1")).attachments == message.attachments
    assert loaded.tools == assistant.tools
    run = Run.model_validate({"id": "run_x", "created_at": 1, "thread_id": "thread_x", "assistant_id": assistant.id,
                              "status": "queued", "model": "m", "tools": [t.model_dump() for t in loaded.tools]})
    assert options(run) == (50, 0.0)
    loose = run.model_copy(update={"tools": [Assistant.model_validate(
        {"id": "a", "created_at": 1, "model": "m",
         "tools": [{"type": "file_search", "file_search": {"max_num_results": "abc", "ranking_options": "x"}}]}).tools[0]]})
    assert options(loose) == (20, 0.0)
