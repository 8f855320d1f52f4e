"""File search in runs through `/v1`: the official SDK, the real server, real ingestion and index.

The scripted model calls `file_search(query)`; the engine searches the assistant's vector store
and reports a `file_search` step with results; the answer's `[n]` markers become `file_citation`
annotations pointing at the cited file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import openai
import pytest
from openai.types import VectorStore
from openai.types.beta import Assistant, AssistantStreamEvent
from openai.types.beta.threads.runs import FileSearchToolCall

from tests.scripted_model import ScriptedModel
from tests.test_api_runs import sent_messages
from tests.test_api_vector_stores import GARDEN, MANUAL, settled_store, upload

pytestmark = pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning")

INCLUDE_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"


def search_call(query: str, call_id: str = "call_search") -> dict[str, str]:
    return {"name": "file_search", "arguments": json.dumps({"query": query}), "id": call_id}


def searching_assistant(
    client: openai.OpenAI, tools: list[dict[str, Any]] | None = None, **store: Any
) -> tuple[VectorStore, Assistant]:
    """A vector store made of `store`'s arguments, settled, and an assistant with `tools` (file
    search alone by default) that searches it."""
    made = client.vector_stores.create(**store)
    settled_store(client, made.id)
    assistant = client.beta.assistants.create(
        model="scripted-model",
        tools=tools or [{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [made.id]}},
    )
    return made, assistant


def test_a_run_searches_the_assistants_store_and_cites_the_file(client: openai.OpenAI, model: ScriptedModel) -> None:
    manual = upload(client, "manual.md", MANUAL)
    garden = upload(client, "garden.txt", GARDEN)
    store, assistant = searching_assistant(client, name="home", file_ids=[manual, garden])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "How do I descale my kettle?"}])
    model.add_tool_calls([search_call("descale kettle vinegar")])
    answer = "Boil equal parts white vinegar and water [1], then rinse three times [1]."
    model.add_text(answer)

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)

    assert run.status == "completed", run.last_error
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    [call] = [c for s in steps if s.step_details.type == "tool_calls" for c in s.step_details.tool_calls]
    assert isinstance(call, FileSearchToolCall) and call.id == "call_search"
    results = call.file_search.results or []
    assert results and results[0].file_id == manual and results[0].file_name == "manual.md"
    assert 0 < results[0].score <= 1
    assert all(r.content is None for r in results), "passages only with include[]"

    detailed = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, include=[INCLUDE_CONTENT]).data
    [with_content] = [c for s in detailed if s.step_details.type == "tool_calls" for c in s.step_details.tool_calls]
    assert isinstance(with_content, FileSearchToolCall)
    passage = (with_content.file_search.results or [])[0].content
    assert passage and "vinegar" in (passage[0].text or "")

    # The model read the passages under their markers.
    tool = sent_messages(model, -1)[-1]
    assert tool["role"] == "tool" and tool["content"].startswith("[1] manual.md") and "vinegar" in tool["content"]
    search_tool = next(t for t in model.requests[-2].body["tools"] if t["function"]["name"] == "file_search")
    assert search_tool["function"]["parameters"]["required"] == ["query"]

    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    text = reply.content[0]
    assert text.type == "text" and text.text.value == answer
    notes = text.text.annotations
    assert [n.type for n in notes] == ["file_citation", "file_citation"]
    for note in notes:
        assert note.type == "file_citation" and note.file_citation.file_id == manual
        assert answer[note.start_index : note.end_index] == note.text == "[1]"


def test_without_stores_the_search_finds_nothing_and_the_run_goes_on(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = client.beta.assistants.create(model="scripted-model", tools=[{"type": "file_search"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Anything in my files?"}])
    model.add_tool_calls([search_call("anything")])
    model.add_text("I found nothing [3].")

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)

    assert run.status == "completed", run.last_error
    assert sent_messages(model, -1)[-1]["content"].startswith("No passages matched")
    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    assert reply.content[0].type == "text" and reply.content[0].text.annotations == [], "no result, no citation"


def test_a_file_attached_for_file_search_goes_into_the_threads_store_and_is_found(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    manual = upload(client, "kettle.md", MANUAL)
    assistant = client.beta.assistants.create(model="scripted-model", tools=[{"type": "file_search"}])
    thread = client.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": "How often should I descale?",
                "attachments": [{"file_id": manual, "tools": [{"type": "file_search"}]}],
            }
        ]
    )
    resources = client.beta.threads.retrieve(thread.id).tool_resources
    assert resources is not None and resources.file_search is not None
    [store_id] = resources.file_search.vector_store_ids or []
    store = client.vector_stores.retrieve(store_id)
    assert store.expires_after is not None and store.expires_after.days == 7
    model.add_tool_calls([search_call("descale every month")])
    model.add_text("Every month [1].")

    # The run starts at once; the search waits for the attached file to be indexed.
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)

    assert run.status == "completed", run.last_error
    assert "[1] kettle.md" in sent_messages(model, -1)[-1]["content"]
    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    assert reply.content[0].type == "text"
    [note] = reply.content[0].text.annotations
    assert note.type == "file_citation" and note.file_citation.file_id == manual

    # A second attachment joins the same store.
    garden = upload(client, "garden.txt", GARDEN)
    client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="And tomatoes?", attachments=[{"file_id": garden, "tools": [{"type": "file_search"}]}]
    )
    after = client.beta.threads.retrieve(thread.id).tool_resources
    assert after is not None and after.file_search is not None and after.file_search.vector_store_ids == [store_id]
    assert {f.id for f in client.vector_stores.files.list(store_id).data} == {manual, garden}


def test_the_tools_max_num_results_bounds_the_results(client: openai.OpenAI, model: ScriptedModel) -> None:
    """`file_search.max_num_results` of the assistant's tool, and of a run's own tools, is what a search returns at most."""
    copies = [upload(client, f"manual-{n}.md", MANUAL) for n in range(3)]
    store, assistant = searching_assistant(client, [{"type": "file_search", "file_search": {"max_num_results": 1}}], file_ids=copies)

    def results(**run: object) -> int:
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "How do I descale?"}])
        model.add_tool_calls([search_call("descale kettle vinegar")])
        model.add_text("Like this [1].")
        done = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50, **run  # type: ignore[arg-type]
        )
        assert done.status == "completed", done.last_error
        steps = client.beta.threads.runs.steps.list(run_id=done.id, thread_id=thread.id).data
        [call] = [c for s in steps if s.step_details.type == "tool_calls" for c in s.step_details.tool_calls]
        assert isinstance(call, FileSearchToolCall)
        return len(call.file_search.results or [])

    assert results() == 1
    assert results(tools=[{"type": "file_search", "file_search": {"max_num_results": 2}}]) == 2
    assert results(tools=[{"type": "file_search"}]) == 3


def streamed_passages(events: Iterable[AssistantStreamEvent]) -> list[str | None]:
    """The passage of each file-search result in a stream's run-step events (None where it was left out)."""
    found: list[str | None] = []
    for event in events:
        if event.event in ("thread.run.step.created", "thread.run.step.in_progress", "thread.run.step.completed"):
            details = event.data.step_details
            for call in details.tool_calls if details.type == "tool_calls" else []:
                if isinstance(call, FileSearchToolCall):
                    for result in call.file_search.results or []:
                        found.append(None if result.content is None else "".join(p.text or "" for p in result.content))
    return found


def test_streams_carry_file_search_passages_only_when_include_asks(client: openai.OpenAI, model: ScriptedModel) -> None:
    """Create-run, create-thread-and-run and submit-tool-outputs streams honour `include[]`, as listing steps does."""
    manual = upload(client, "manual.md", MANUAL)
    store, assistant = searching_assistant(client, [{"type": "file_search"}, {"type": "function", "function": {"name": "kettle_model"}}], file_ids=[manual])
    question = [{"role": "user", "content": "How do I descale my kettle?"}]

    def search_then_answer() -> None:
        model.add_tool_calls([search_call("descale kettle vinegar")])
        model.add_text("With vinegar [1].")

    for asked in (False, True):
        include = {"include": [INCLUDE_CONTENT]} if asked else {}

        thread = client.beta.threads.create(messages=question)  # type: ignore[arg-type]
        search_then_answer()
        created = list(client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, stream=True, **include))  # type: ignore[arg-type]

        search_then_answer()
        both = list(client.beta.threads.create_and_run(
            assistant_id=assistant.id, thread={"messages": question}, stream=True, extra_query=include  # type: ignore[typeddict-item]
        ))

        thread = client.beta.threads.create(messages=question)  # type: ignore[arg-type]
        model.add_tool_calls([{"name": "kettle_model", "arguments": "{}", "id": "call_model"}])
        search_then_answer()
        paused = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
        assert paused.status == "requires_action", paused.last_error
        submitted = list(client.beta.threads.runs.submit_tool_outputs(
            run_id=paused.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_model", "output": "K-200"}],
            stream=True, extra_query=include,
        ))

        for events in (created, both, submitted):
            assert events[-1].event == "thread.run.completed"
            passages = streamed_passages(events)
            assert passages, "the search's step events carry its results"
            if asked:
                assert all(p is not None and "vinegar" in p for p in passages), passages
            else:
                assert all(p is None for p in passages), passages

    # The stored steps keep their passages for whoever asks later.
    steps = client.beta.threads.runs.steps.list(run_id=paused.id, thread_id=thread.id, include=[INCLUDE_CONTENT]).data
    [call] = [c for s in steps if s.step_details.type == "tool_calls" for c in s.step_details.tool_calls if isinstance(c, FileSearchToolCall)]
    assert all(r.content for r in call.file_search.results or [])


def search_results(client: openai.OpenAI, thread_id: str, run_id: str) -> list[FileSearchToolCall]:
    """The run's file-search calls, in the order they were made."""
    steps = client.beta.threads.runs.steps.list(run_id=run_id, thread_id=thread_id, order="asc").data
    return [
        c for s in steps if s.step_details.type == "tool_calls" for c in s.step_details.tool_calls if isinstance(c, FileSearchToolCall)
    ]


def test_citations_from_two_searches_point_at_their_files_past_non_ascii_text(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    """Markers numbered through the run: `[1]` and `[2]` from the first search's two files, `[3]` from the second search."""
    manual = upload(client, "manual.md", MANUAL)
    garden = upload(client, "garden.txt", GARDEN)
    prices = upload(client, "prices.txt", "Le détartrant coûte 5 € chez le quincaillier.\n".encode())
    store, assistant = searching_assistant(client, [{"type": "file_search", "file_search": {"max_num_results": 2}}], name="three", file_ids=[manual, garden, prices])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Kettle, tomatoes and the price?"}])
    model.add_tool_calls([search_call("descale kettle vinegar tomatoes sun", "call_first")])
    model.add_tool_calls([search_call("détartrant quincaillier", "call_second")])
    answer = "Ça coûte 5 € — voilà [3]. Détartrez au vinaigre [1] ; tomates au soleil « six heures » [2]."
    model.add_text(answer)

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)

    assert run.status == "completed", run.last_error
    first, second = search_results(client, thread.id, run.id)
    assert {r.file_id for r in first.file_search.results or []} == {manual, garden}
    assert [r.file_id for r in second.file_search.results or []][:1] == [prices]
    by_marker = {
        "[1]": (first.file_search.results or [])[0].file_id,
        "[2]": (first.file_search.results or [])[1].file_id,
        "[3]": prices,
    }
    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    assert reply.content[0].type == "text"
    text = reply.content[0].text
    assert text.value == answer
    notes = text.annotations
    assert [n.text for n in notes] == ["[3]", "[1]", "[2]"]
    for note in notes:
        assert note.type == "file_citation"
        assert answer[note.start_index : note.end_index] == note.text, (note, answer[note.start_index : note.end_index])
        assert note.file_citation.file_id == by_marker[note.text]


def test_the_runs_score_threshold_leaves_low_scoring_results_out(client: openai.OpenAI, model: ScriptedModel) -> None:
    manual = upload(client, "manual.md", MANUAL)
    # Mentions the kettle once in passing: it matches the query, but far less well than the manual.
    aside = upload(client, "aside.txt", b"Tomatoes need sun. The kettle is in the shed with other garden tools and pots.\n")
    store, assistant = searching_assistant(client, name="threshold", file_ids=[manual, aside])

    def results(threshold: float | None = None) -> list[tuple[str, float]]:
        run = {} if threshold is None else {
            "tools": [{"type": "file_search", "file_search": {"ranking_options": {"score_threshold": threshold}}}]
        }
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "How do I descale my kettle?"}])
        model.add_tool_calls([search_call("descale kettle vinegar")])
        model.add_text("Like this [1].")
        done = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50, **run  # type: ignore[arg-type]
        )
        assert done.status == "completed", done.last_error
        [call] = search_results(client, thread.id, done.id)
        assert call.file_search.ranking_options is not None
        assert call.file_search.ranking_options.score_threshold == (threshold or 0.0)
        return [(r.file_id, r.score) for r in call.file_search.results or []]

    unfiltered = results()
    assert [file_id for file_id, _ in unfiltered] == [manual, aside], unfiltered
    (_, high), (_, low) = unfiltered
    assert low < high
    between = round((low + high) / 2, 4)
    filtered = results(between)
    assert [file_id for file_id, _ in filtered] == [manual], (between, filtered)
    assert all(score >= between for _, score in filtered)


def test_markers_in_code_and_grouped_markers_are_not_citations_and_the_text_is_as_streamed(client: openai.OpenAI, model: ScriptedModel) -> None:
    manual = upload(client, "manual.md", MANUAL)
    garden = upload(client, "garden.txt", GARDEN)
    store, assistant = searching_assistant(client, name="grouped", file_ids=[manual, garden])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Kettle and tomatoes?"}])
    model.add_tool_calls([search_call("descale kettle vinegar tomatoes sun")])
    streamed = "Both — voilà [1] and [1, 2]; again [1-2]. Code: `notes[1]` and\n```\nrows = grid[1, 2]\n```\n"
    model.add_text(streamed)

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)

    assert run.status == "completed", run.last_error
    [call] = search_results(client, thread.id, run.id)
    files = [r.file_id for r in call.file_search.results or []]
    assert sorted(files) == sorted([manual, garden])
    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    assert reply.content[0].type == "text"
    text = reply.content[0].text
    assert text.value == streamed
    notes = text.annotations
    assert [(n.text, n.file_citation.file_id, n.start_index) for n in notes if n.type == "file_citation"] == [
        ("[1]", files[0], streamed.index("[1]"))
    ]
    assert all(text.value[n.start_index : n.end_index] == n.text for n in notes)
    assert max(n.end_index for n in notes) < text.value.index("`notes")
