"""The code interpreter through `/v1`: the official SDK, the real server, real sandboxed kernels.

The scripted model asks for `code_interpreter(code)`; the engine runs the code in the thread's
kernel under bubblewrap and reports it with the Assistants shape. These tests check what an SDK
user sees (streamed step deltas, stored steps, image and written files) and what the model got back.
Hostile code at the kernel level (fork bombs, memory, output floods) is in `test_kernels.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AssistantEventHandler
from openai.types.beta.threads.runs import CodeInterpreterToolCall, ToolCall, ToolCallDelta

from tests.scripted_model import ScriptedModel
from tests.test_api_runs import new_assistant, sent_messages, text_of

pytestmark = pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning")

POLL_MS = 50


def code_call(code: str, call_id: str = "call_code") -> dict[str, str]:
    return {"name": "code_interpreter", "arguments": json.dumps({"code": code}), "id": call_id}


def run_code(client: openai.OpenAI, model: ScriptedModel, thread_id: str, assistant_id: str, code: str, answer: str = "Done.") -> Any:
    model.add_tool_calls([code_call(code)])
    model.add_text(answer)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id, poll_interval_ms=POLL_MS)
    assert run.status == "completed", run.last_error
    return run


def code_calls(client: openai.OpenAI, thread_id: str, run_id: str) -> list[CodeInterpreterToolCall]:
    steps = client.beta.threads.runs.steps.list(run_id=run_id, thread_id=thread_id, order="asc").data
    calls: list[CodeInterpreterToolCall] = []
    for step in steps:
        if step.step_details.type == "tool_calls":
            calls.extend(c for c in step.step_details.tool_calls if isinstance(c, CodeInterpreterToolCall))
    return calls


def logs_of(call: CodeInterpreterToolCall) -> str:
    return "".join(o.logs or "" for o in call.code_interpreter.outputs if o.type == "logs")


@pytest.fixture
def coder(client: openai.OpenAI) -> Any:
    return new_assistant(client, tools=[{"type": "code_interpreter"}])


class StepRecorder(AssistantEventHandler):
    """Keeps the code as it streams, every output delta, and the finished calls."""

    def __init__(self) -> None:
        super().__init__()
        self.code = ""
        self.output_deltas: list[dict[str, Any]] = []
        self.done: list[ToolCall] = []

    def on_tool_call_delta(self, delta: ToolCallDelta, snapshot: ToolCall) -> None:
        assert delta.type == "code_interpreter"
        if delta.code_interpreter is None:
            return
        self.code += delta.code_interpreter.input or ""
        self.output_deltas.extend(o.model_dump(exclude_none=True) for o in delta.code_interpreter.outputs or [])

    def on_tool_call_done(self, tool_call: ToolCall) -> None:
        self.done.append(tool_call)


def test_streamed_code_call_parses_in_the_sdk(client: openai.OpenAI, model: ScriptedModel, coder: Any) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "What is 6 times 7?"}])
    code = 'x = 6 * 7\nprint("answer:", x)\nx'
    model.add_tool_calls([code_call(code)])
    model.add_text("It is 42.")
    handler = StepRecorder()

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=coder.id, event_handler=handler) as stream:
        stream.until_done()

    assert handler.code == code, "the code streams as the model writes it, decoded from the JSON arguments"
    assert handler.output_deltas and all(d["type"] == "logs" for d in handler.output_deltas)
    streamed_logs = "".join(d["logs"] for d in handler.output_deltas)
    assert "answer: 42" in streamed_logs and "42" in streamed_logs.split("answer: 42", 1)[1]
    # The SDK reports a finished tool call again at each later step and at the run's end.
    assert {call.id for call in handler.done} == {"call_code"}
    done = handler.done[-1]
    assert isinstance(done, CodeInterpreterToolCall) and done.id == "call_code"
    assert done.code_interpreter.input == code

    run = client.beta.threads.runs.list(thread_id=thread.id).data[0]
    [stored] = code_calls(client, thread.id, run.id)
    assert stored.code_interpreter.input == code
    assert logs_of(stored) == streamed_logs
    # The model got the logs back as the tool result, after its own call (as a function call).
    second = sent_messages(model, -1)
    assert second[-2]["tool_calls"][0]["function"] == {"name": "code_interpreter", "arguments": json.dumps({"code": code})}
    assert second[-1]["role"] == "tool" and "answer: 42" in second[-1]["content"]
    tool = next(t for t in model.requests[-2].body["tools"] if t["function"]["name"] == "code_interpreter")
    assert tool["function"]["parameters"]["required"] == ["code"]


def test_variables_and_files_persist_across_runs_of_a_session(client: openai.OpenAI, model: ScriptedModel, coder: Any) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Remember a number."}])
    run_code(client, model, thread.id, coder.id, "secret = 1234\nopen('note.txt', 'w').write('kept')")
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="What was it?")
    run = run_code(client, model, thread.id, coder.id, "print(secret, open('/mnt/data/note.txt').read())")
    [call] = code_calls(client, thread.id, run.id)
    assert logs_of(call).startswith("1234 kept")


def test_an_attached_csv_is_read_with_pandas(client: openai.OpenAI, model: ScriptedModel, coder: Any) -> None:
    csv = b"city,sales\nOslo,10\nLima,32\n"
    uploaded = client.files.create(file=("sales.csv", io.BytesIO(csv)), purpose="assistants")
    thread = client.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": "Total sales?",
                "attachments": [{"file_id": uploaded.id, "tools": [{"type": "code_interpreter"}]}],
            }
        ]
    )
    run = run_code(client, model, thread.id, coder.id, "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.sales.sum())")
    [call] = code_calls(client, thread.id, run.id)
    assert logs_of(call).strip() == "42"
    tool = next(t for t in model.requests[-2].body["tools"] if t["function"]["name"] == "code_interpreter")
    assert "sales.csv" in tool["function"]["description"], "the model is told which files it has"


def test_a_plot_comes_back_as_an_image_file(client: openai.OpenAI, model: ScriptedModel, coder: Any, other_client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Plot a line."}])
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.title('line')\nplt.show()"
    run = run_code(client, model, thread.id, coder.id, code)
    [call] = code_calls(client, thread.id, run.id)
    images = [o for o in call.code_interpreter.outputs if o.type == "image"]
    assert len(images) == 1
    file_id = images[0].image.file_id
    assert client.files.content(file_id).read().startswith(b"\x89PNG")
    assert client.files.retrieve(file_id).purpose == "assistants_output"
    with pytest.raises(openai.NotFoundError):
        other_client.files.retrieve(file_id)
    assert "[image file-" in sent_messages(model, -1)[-1]["content"], "the model learns that a figure was shown"


def test_files_the_code_writes_become_file_objects(client: openai.OpenAI, model: ScriptedModel, coder: Any) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Write a report."}])
    answer = "Here it is: [report](sandbox:/mnt/data/report.csv)."
    code = "with open('report.csv', 'w') as f:\n    f.write('a,b\\n1,2\\n')"
    run = run_code(client, model, thread.id, coder.id, code, answer=answer)
    [call] = code_calls(client, thread.id, run.id)
    logs = logs_of(call)
    assert "Saved /mnt/data/report.csv as file-" in logs
    file_id = logs.split("as ", 1)[1].split(".", 1)[0].strip()
    assert client.files.retrieve(file_id).filename == "report.csv"
    assert client.files.content(file_id).read() == b"a,b\n1,2\n"
    # The link in the answer carries a `file_path` annotation, as the hosted API gave.
    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    assert reply.content[0].type == "text" and reply.content[0].text.value == answer
    [note] = reply.content[0].text.annotations
    assert note.type == "file_path" and note.file_path.file_id == file_id
    assert note.text == "sandbox:/mnt/data/report.csv"
    assert answer[note.start_index : note.end_index] == note.text


def test_floods_of_images_and_files_are_capped_with_a_note(client: openai.OpenAI, model: ScriptedModel, coder: Any) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Flood."}])
    code = (
        "import matplotlib.pyplot as plt\n"
        "for i in range(12):\n"
        "    plt.plot([0, i])\n"
        "    plt.show()\n"
        "for i in range(25):\n"
        "    open(f'f{i:02}.txt', 'w').write(str(i))\n"
        "with open('sparse.bin', 'wb') as f:\n"
        "    f.truncate(90 * 1024 * 1024)\n"
    )
    run = run_code(client, model, thread.id, coder.id, code)
    [call] = code_calls(client, thread.id, run.id)
    assert len([o for o in call.code_interpreter.outputs if o.type == "image"]) == 10
    logs = logs_of(call)
    assert "Limit: only the first 10 images" in logs
    assert logs.count("Saved /mnt/data/") == 20
    assert "Not saved (over 20 files" in logs


def test_errors_reach_the_model_and_the_run_goes_on(client: openai.OpenAI, model: ScriptedModel, coder: Any) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Divide by zero."}])
    run = run_code(client, model, thread.id, coder.id, "1 / 0", answer="That fails.")
    [call] = code_calls(client, thread.id, run.id)
    assert "ZeroDivisionError" in logs_of(call)
    assert "ZeroDivisionError" in sent_messages(model, -1)[-1]["content"]
    assert text_of(client.beta.threads.messages.list(thread_id=thread.id).data[0]) == "That fails."


def test_invalid_arguments_are_reported_to_the_model(client: openai.OpenAI, model: ScriptedModel, coder: Any) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Go."}])
    model.add_tool_calls([{"name": "code_interpreter", "arguments": "print(1)", "id": "call_raw"}])
    model.add_text("Sorry.")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=coder.id, poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    assert "not valid JSON" in sent_messages(model, -1)[-1]["content"]


def test_the_sandbox_hides_the_servers_secrets(client: openai.OpenAI, model: ScriptedModel, coder: Any) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Look around."}])
    code = (
        "import os, glob\n"
        "print(sorted(os.environ))\n"
        "for p in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        print(open(p, 'rb').read())\n"
        "    except OSError as e:\n"
        "        print(p, e)\n"
        "print(os.listdir('/'))\n"
    )
    run = run_code(client, model, thread.id, coder.id, code)
    [call] = code_calls(client, thread.id, run.id)
    logs = logs_of(call)
    assert "OPENAI_API_KEY" not in logs and "sk-test-provider-secret" not in logs
    assert "ASSISTANTS_DATA_DIR" not in logs


def test_deleting_the_thread_deletes_its_sandbox_files(client: openai.OpenAI, model: ScriptedModel, coder: Any) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Write."}])
    run_code(client, model, thread.id, coder.id, "open('left.txt', 'w').write('x')")
    assert client.beta.threads.delete(thread.id).deleted
    other = client.beta.threads.create(messages=[{"role": "user", "content": "Look."}])
    run = run_code(client, model, other.id, coder.id, "import os\nprint(sorted(os.listdir('.')))")
    [call] = code_calls(client, other.id, run.id)
    assert "left.txt" not in logs_of(call), "a new session starts with an empty folder"


# In-process engine: configuration, limits and cancel ---------------------------------------------

from assistants.engine import Engine  # noqa: E402
from assistants.events import Event  # noqa: E402
from assistants.store import ListParams  # noqa: E402
from assistants.types import CodeInterpreterToolCall as StoredCodeCall  # noqa: E402
from assistants.types import RunStatus  # noqa: E402
from assistants.types.objects import Attachment, CodeInterpreterTool, ToolCallsDetails  # noqa: E402
from assistants.types.requests import AssistantCreate, MessageCreate, RunCreate, ThreadCreate  # noqa: E402
from tests.conftest import StartRuntime  # noqa: E402

WAIT = 60


async def engine_thread(engine: Engine, owner: str) -> tuple[str, str]:
    assistant = await engine.create_assistant(owner, AssistantCreate(model="scripted-model", tools=[CodeInterpreterTool()]))
    thread = await engine.create_thread(owner, ThreadCreate(messages=[MessageCreate(role="user", content="go")]))
    return assistant.id, thread.id


async def stored_code_calls(engine: Engine, owner: str, thread_id: str, run_id: str) -> list[tuple[str, StoredCodeCall]]:
    steps = await engine.list_steps(owner, thread_id, run_id, ListParams(order="asc"))
    return [
        (step.status.value, call)
        for step in steps.data
        if isinstance(step.step_details, ToolCallsDetails)
        for call in step.step_details.tool_calls
        if isinstance(call, StoredCodeCall)
    ]


def outputs_of(event: Event) -> list[Any]:
    """The code-interpreter outputs a step delta carries (not the code being written)."""
    calls = event.data["delta"].get("step_details", {}).get("tool_calls", [])
    return [o for c in calls for o in (c.get("code_interpreter") or {}).get("outputs") or []]


async def test_without_a_usable_sandbox_the_tool_refuses_with_a_clear_message(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    runtime = await start_runtime(ASSISTANTS_CODE_PYTHON="/nonexistent/python3")
    engine, alice = runtime.engine, await runtime.accounts.ensure_user("alice")
    assistant_id, thread_id = await engine_thread(engine, alice)
    model.add_tool_calls([code_call("print(1)")])
    model.add_text("I cannot run code here.")

    async with asyncio.timeout(WAIT):
        events = [e async for e in engine.stream_run(alice, thread_id, RunCreate(assistant_id=assistant_id))]

    assert events[-1].event == "thread.run.completed"
    tool = [m for m in model.last_messages or [] if m["role"] == "tool"]
    assert tool[0]["content"].startswith("Error: ") and "/nonexistent/python3" in tool[0]["content"]
    assert "ASSISTANTS_CODE_SANDBOX" in tool[0]["content"] or "bubblewrap" in tool[0]["content"]


async def test_a_limit_hit_is_reported_and_the_next_call_works(start_runtime: StartRuntime, model: ScriptedModel) -> None:
    runtime = await start_runtime(ASSISTANTS_CODE_TIMEOUT=2)
    engine, alice = runtime.engine, await runtime.accounts.ensure_user("alice")
    assistant_id, thread_id = await engine_thread(engine, alice)
    model.add_tool_calls([code_call("x = 5\nwhile True:\n    pass", "call_loop")])
    model.add_tool_calls([code_call("print('still here', x)", "call_after")])
    model.add_text("The loop was stopped.")

    async with asyncio.timeout(WAIT):
        events = [e async for e in engine.stream_run(alice, thread_id, RunCreate(assistant_id=assistant_id))]

    assert events[-1].event == "thread.run.completed"
    calls = await stored_code_calls(engine, alice, thread_id, events[0].data["id"])
    loop_logs = "".join(o.logs for o in calls[0][1].code_interpreter.outputs if o.type == "logs")
    assert "Limit: " in loop_logs and "2 s" in loop_logs, loop_logs
    after_logs = "".join(o.logs for o in calls[1][1].code_interpreter.outputs if o.type == "logs")
    assert after_logs.startswith("still here 5"), "an interrupted kernel keeps its state"


async def test_cancel_interrupts_running_code_and_keeps_its_output(start_runtime: StartRuntime, model: ScriptedModel) -> None:
    runtime = await start_runtime()
    engine, alice = runtime.engine, await runtime.accounts.ensure_user("alice")
    assistant_id, thread_id = await engine_thread(engine, alice)
    model.add_tool_calls([code_call("import time\nprint('started', flush=True)\ntime.sleep(60)")])
    run = await engine.create_run(alice, thread_id, RunCreate(assistant_id=assistant_id))
    seen: list[Event] = []
    with contextlib.closing(engine.subscribe(run_id=run.id)) as subscription:
        async with asyncio.timeout(WAIT):
            async for event in subscription:
                seen.append(event)
                if event.event == "thread.run.step.delta" and "started" in json.dumps(outputs_of(event)):
                    break
        await engine.cancel_run(alice, thread_id, run.id)
        async with asyncio.timeout(10):
            await engine.wait_for_run(run.id)

    assert (await engine.get_run(alice, thread_id, run.id)).status is RunStatus.cancelled
    [(status, call)] = await stored_code_calls(engine, alice, thread_id, run.id)
    assert status == "cancelled"
    assert "started" in "".join(o.logs for o in call.code_interpreter.outputs if o.type == "logs")
    # The kernel was interrupted, not left sleeping: the next run's code answers at once.
    model.add_tool_calls([code_call("print('awake')")])
    model.add_text("ok")
    async with asyncio.timeout(20):
        events = [e async for e in engine.stream_run(alice, thread_id, RunCreate(assistant_id=assistant_id))]
    [(_, after)] = await stored_code_calls(engine, alice, thread_id, events[0].data["id"])
    assert "awake" in "".join(o.logs for o in after.code_interpreter.outputs if o.type == "logs")


async def test_stored_files_are_found_where_the_data_folder_is_now(
    start_runtime: StartRuntime, model: ScriptedModel, tmp_path: Path
) -> None:
    # The data folder as another host mounts it, or a backup restored elsewhere: the file rows
    # still name the first path, and the bytes must be found under the new one.
    first = await start_runtime()
    engine, alice = first.engine, await first.accounts.ensure_user("alice")
    csv = b"city,sales\nOslo,10\nLima,32\n"
    file = await engine.create_file(alice, filename="sales.csv", purpose="assistants", content=csv)
    assistant = await engine.create_assistant(alice, AssistantCreate(model="scripted-model", tools=[CodeInterpreterTool()]))
    attachment = Attachment(file_id=file.id, tools=[{"type": "code_interpreter"}])
    thread = await engine.create_thread(
        alice, ThreadCreate(messages=[MessageCreate(role="user", content="Total sales?", attachments=[attachment])])
    )
    await first.close()
    (tmp_path / "data").rename(tmp_path / "moved")

    second = await start_runtime(ASSISTANTS_DATA_DIR=tmp_path / "moved")
    engine = second.engine
    assert (await engine.file_content(alice, file.id))[1] == csv
    model.add_tool_calls([code_call("import pandas as pd\nprint(pd.read_csv('sales.csv').sales.sum())")])
    model.add_text("42.")
    async with asyncio.timeout(WAIT):
        events = [e async for e in engine.stream_run(alice, thread.id, RunCreate(assistant_id=assistant.id))]
    [(status, call)] = await stored_code_calls(engine, alice, thread.id, events[0].data["id"])
    logs = "".join(o.logs for o in call.code_interpreter.outputs if o.type == "logs")
    assert (status, logs.strip()) == ("completed", "42")
    assert await engine.delete_file(alice, file.id)
    assert not list((tmp_path / "moved" / "files").rglob(file.id))
