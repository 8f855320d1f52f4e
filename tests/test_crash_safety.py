"""Crash safety: the server is killed with SIGKILL mid-work and started again on the same data.

A code execution: the sandboxed kernel dies with the server (nothing is left running), and after
the restart the run is ended `failed` with a reason, its step too, and the session goes on with a
fresh kernel. An ingestion: the file is indexed after the restart. (A streamed answer cut by a
kill is covered with two processes in tests/test_assistant_events.py.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import sdk_client
from tests.scripted_model import ScriptedModel
from tests.server import Server, start_server
from tests.test_api_vector_stores import wait_until
from tests.test_code_interpreter import code_call

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning")

ENV = {"ASSISTANTS_RUN_LEASE_SECONDS": "3", "ASSISTANTS_CODE_WARM_KERNELS": "0"}


def descendants(pids: set[int]) -> set[int]:
    """The processes under these ones (kernels run inside bubblewrap's process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def kill(server: Server) -> None:
    server.process.kill()
    server.process.wait()


def restart(tmp: Path, old: Server, model: ScriptedModel) -> Server:
    new = start_server(tmp, model_url=model.base_url, extra_env=ENV)
    new.keys = old.keys
    return new


def test_a_server_killed_mid_code_execution_leaves_no_kernel_and_the_run_ends_failed(
    scripted_model: ScriptedModel, tmp_path: Path
) -> None:
    model = scripted_model
    model.reset()
    server = start_server(tmp_path, model_url=model.base_url, extra_env=ENV)
    try:
        client = sdk_client(server, "crash")
        assistant = client.beta.assistants.create(model="scripted-model", tools=[{"type": "code_interpreter"}])
        model.add_tool_calls([code_call("import time\nprint('started', flush=True)\ntime.sleep(120)")])
        run = client.beta.threads.create_and_run(assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "Wait"}]})
        wait_until(
            lambda: any(s.type == "tool_calls" for s in client.beta.threads.runs.steps.list(run_id=run.id, thread_id=run.thread_id).data),
            "the code step",
        )
        kernels = wait_until(
            lambda: {p for p in descendants({server.process.pid}) if b"ipykernel" in Path(f"/proc/{p}/cmdline").read_bytes()},
            "the kernel to start",
        )
        time.sleep(1.0)  # The code is sleeping inside the kernel now.

        kill(server)

        # Bubblewrap takes the kernel down with the server: nothing is left running.
        wait_until(lambda: not any(alive(p) for p in kernels), "the orphaned kernel to die", seconds=10)
        server = restart(tmp_path, server, model)
        client = sdk_client(server, "crash")
        ended = wait_until(
            lambda: (r := client.beta.threads.runs.retrieve(run_id=run.id, thread_id=run.thread_id)).status != "in_progress" and r,
            "the cut-off run to be ended",
        )
        assert ended.status == "failed" and ended.last_error is not None
        assert "stopped before it finished" in ended.last_error.message
        steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=run.thread_id).data
        assert [s.status for s in steps if s.type == "tool_calls"] == ["failed"]

        # The session goes on: a new run gets a fresh kernel.
        model.add_tool_calls([code_call("print(6 * 7)")])
        model.add_text("42 it is.")
        again = client.beta.threads.runs.create_and_poll(thread_id=run.thread_id, assistant_id=assistant.id, poll_interval_ms=50)
        assert again.status == "completed", again.last_error
        [call] = [
            c for s in client.beta.threads.runs.steps.list(run_id=again.id, thread_id=run.thread_id).data
            if s.step_details.type == "tool_calls" for c in s.step_details.tool_calls
        ]
        assert call.type == "code_interpreter" and "42" in "".join(
            o.logs for o in call.code_interpreter.outputs if o.type == "logs"
        )
    finally:
        if server.process.poll() is None:
            server.stop()


def test_a_server_killed_mid_ingestion_indexes_the_file_after_the_restart(scripted_model: ScriptedModel, tmp_path: Path) -> None:
    model = scripted_model
    server = start_server(tmp_path, model_url=model.base_url, extra_env=ENV)
    try:
        client = sdk_client(server, "ingest")
        words = " ".join(f"word{n % 5000}" for n in range(3_000_000)) + " kettle descaling"
        file = client.files.create(file=("big.txt", words.encode()), purpose="assistants")
        store = client.vector_stores.create(name="big", file_ids=[file.id])
        assert client.vector_stores.files.retrieve(file.id, vector_store_id=store.id).status == "in_progress"

        kill(server)

        server = restart(tmp_path, server, model)
        client = sdk_client(server, "ingest")
        entry = wait_until(
            lambda: (f := client.vector_stores.files.retrieve(file.id, vector_store_id=store.id)).status != "in_progress" and f,
            "the file to be indexed",
            seconds=120,
        )
        assert entry.status == "completed", entry.last_error
        hits = client.vector_stores.search(store.id, query="kettle descaling").data
        assert hits and hits[0].file_id == file.id
    except openai.APIError:
        raise
    finally:
        if server.process.poll() is None:
            server.stop()


def test_a_file_whose_ingestion_takes_the_server_down_every_time_fails_after_three_starts(
    scripted_model: ScriptedModel, tmp_path: Path
) -> None:
    """The server is killed three times while it indexes the same file (caught waiting for the
    embedding model, after its start was counted); at the fourth start the file fails, untried."""
    model = scripted_model
    model.reset()
    env = {**ENV, "ASSISTANTS_EMBEDDING_MODEL": "toy-embed"}

    def embeddings() -> int:
        return sum(1 for r in model.requests if r.path.endswith("/embeddings"))

    server = start_server(tmp_path, model_url=model.base_url, extra_env=env)
    try:
        client = sdk_client(server, "doomed")
        file = client.files.create(file=("doomed.md", b"Descale the kettle every month.\n"), purpose="assistants")
        model.add_embedding_hang(120, times=3)
        store = client.vector_stores.create(name="doomed", file_ids=[file.id])
        for start in range(1, 4):
            wait_until(lambda start=start: embeddings() == start, f"ingestion start {start} to reach the embedding model")  # type: ignore[misc]
            kill(server)
            keys = server.keys
            server = start_server(tmp_path, model_url=model.base_url, extra_env=env)
            server.keys = keys
            client = sdk_client(server, "doomed")

        entry = wait_until(
            lambda: (f := client.vector_stores.files.retrieve(file.id, vector_store_id=store.id)).status != "in_progress" and f,
            "the file to be given up on",
        )
        assert entry.status == "failed" and entry.last_error is not None, entry
        assert entry.last_error.code == "server_error"
        assert "Indexing doomed.md was interrupted repeatedly (3 times)" in entry.last_error.message
        assert embeddings() == 3, "no fourth try"
        counts = client.vector_stores.retrieve(store.id).file_counts
        assert (counts.failed, counts.in_progress, counts.total) == (1, 0, 1)
    finally:
        if server.process.poll() is None:
            server.stop()
