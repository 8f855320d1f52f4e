from __future__ import annotations

import openai

from tests.scripted_model import ScriptedModel


def test_polled_run_round_trip(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = client.beta.assistants.create(model="scripted-model", instructions="Be brief.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hello there"}])
    model.add_text("Hi! How can I help?")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "completed", run.last_error
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc")
    assert [m.role for m in messages.data] == ["user", "assistant"]
    assert messages.data[1].content[0].text.value == "Hi! How can I help?"
    assert model.last_messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]
