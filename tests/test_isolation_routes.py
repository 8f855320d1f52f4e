"""Isolation through the chat: a second user gets nothing of the first user's objects.

Alice uses the chat for real in a browser (Debian's Chromium): she uploads a document, and one run
calls a function tool, the code interpreter (which reads the document, draws a figure and writes a
file into her kernel folder) and file search (her session's own vector store), then answers citing
the passage. She also votes on the answer. That gives one of each object kind: assistant, session
(thread), messages, run, steps, files (uploaded, written, drawn), vector store, kernel folder, and
her chat's websocket session with a file uploaded into it.

Bob, logged in with his own cookie (and his own API key where `/v1` is involved), then tries every
route besides `/v1`'s own that accepts one of those objects: Chainlit's HTTP routes, ours, and
Chainlit's socket.io events, which a small client in Bob's browser speaks directly so it can send
ids the page never would. Each try is a row of a table: Bob must get a refusal or nothing of
Alice's (no text, name or id of hers that he did not send himself), and afterwards Alice's view
of everything (her chat's routes, `/v1` with her key, her kernel folder on disk) must be exactly
what it was. Where a row reads, Alice making the same request gets her data: the row does reach
her object. `/v1` itself is covered by the API tests.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests import test_chat_browser
from tests.conftest import sdk_client
from tests.scripted_model import HangReply, ScriptedModel
from tests.server import Server
from tests.test_chat_browser import (
    TIMEOUT_MS,
    chat_requests,
    login,
    messages,
    send,
    text_of,
    thread_id,
)

# The chat tests' server (on SQLite: the routes' checks are above the store) and browser (Debian's
# Chromium), started once for this module too.
chat_server = test_chat_browser.chat_server
playwright_instance = test_chat_browser.playwright_instance
browser = test_chat_browser.browser

# The world: what Alice made, and Bob's own chat ---------------------------------------------------


@dataclass
class Person:
    """A user with a browser context (the chat's cookies), an httpx client on those cookies, and the SDK."""

    name: str
    context: BrowserContext
    page: Page
    http: httpx.Client
    api: openai.OpenAI
    key: str

    @property
    def websocket_session(self) -> str:
        """The id of the chat's websocket session in this browser (the page keeps it in a cookie)."""
        return next(c["value"] for c in self.context.cookies() if c["name"] == "X-Chainlit-Session-id")


@dataclass
class World:
    server: Server
    alice: Person
    bob: Person
    anonymous: httpx.Client
    ui_thread: str
    """Alice's session as the chat knows it (Chainlit's thread id)."""
    session_id: str
    """The same session as the engine knows it (a thread id)."""
    assistant_id: str
    question_id: str
    answer_id: str
    run_id: str
    step_ids: dict[str, str]
    """Chainlit's ids of the run's tool steps and of its summary, by step name."""
    engine_step_ids: list[str]
    uploaded_file: str
    written_file: str
    image_file: str
    chainlit_file: str
    """The id Chainlit gave Alice's upload inside her websocket session."""
    vector_store_id: str
    kernel_folder: Path
    bob_ui_thread: str
    bob_thread: str
    """A plain `/v1` thread of Bob's."""
    gone_session: str = field(default_factory=lambda: str(uuid.uuid4()))
    """A websocket session id that no live chat has (one that ended)."""
    secrets: list[str] = field(default_factory=list)
    """Everything of Alice's that must never reach Bob: texts, names and ids."""
    baseline: dict[str, Any] = field(default_factory=dict)


ALICE_DOCUMENT = "# Kettle\n\nThe zanzibar kettle needs descaling every month with quince vinegar.\n"
ALICE_QUESTION = "Alice's private question about the zanzibar kettle"
ALICE_ANSWER = "Descale the zanzibar kettle monthly [1]."
ALICE_REPORT = b"owner,balance\nalice,1000000\n"
ALICE_CODE = (
    "import matplotlib.pyplot as plt\n"
    "print(open('alice-kettle.md').read())\n"
    "plt.plot([1, 2, 3], [3, 1, 2])\nplt.show()\n"
    f"open('alice-report.csv', 'wb').write({ALICE_REPORT!r})\n"
)


def cookie_client(srv: Server, context: BrowserContext) -> httpx.Client:
    """An httpx client carrying the browser's own chat cookies."""
    cookies = httpx.Cookies()
    for cookie in context.cookies():
        cookies.set(cookie["name"], cookie["value"])
    return httpx.Client(base_url=srv.url, cookies=cookies, timeout=30)


def person(srv: Server, browser: Browser, prefix: str) -> Person:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    api = sdk_client(srv, name)  # creates the user, with the password `{name}-password`
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    login(page, srv, name, f"{name}-password")
    return Person(name=name, context=context, page=page, http=cookie_client(srv, context), api=api, key=srv.key_for(name))


@pytest.fixture(scope="module")
def world(
    chat_server: Server, browser: Browser, scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    srv, model = chat_server, scripted_model
    model.reset()
    files = tmp_path_factory.mktemp("isolation-files")
    alice = person(srv, browser, "alice")
    bob = person(srv, browser, "bob")
    anonymous = httpx.Client(base_url=srv.url, timeout=30)
    try:
        # Alice's turn: one upload, three tools, a cited answer, and a vote on it.
        document = files / "alice-kettle.md"
        document.write_text(ALICE_DOCUMENT)
        with alice.page.expect_response(re.compile(r"/project/file\?")) as uploaded:
            alice.page.set_input_files("#upload-button-input", str(document))
        chainlit_file = uploaded.value.json()["id"]
        expect(alice.page.locator("#attachments").get_by_text("alice-kettle.md")).to_be_visible()
        model.add_tool_calls([{"name": "calculate", "arguments": '{"expression": "6*7"}'}])
        model.add_tool_calls([{"name": "code_interpreter", "arguments": json.dumps({"code": ALICE_CODE})}])
        model.add_tool_calls([{"name": "file_search", "arguments": json.dumps({"query": "zanzibar kettle"})}])
        model.add_text(ALICE_ANSWER)
        send(alice.page, ALICE_QUESTION)
        answer = messages(alice.page, "assistant_message").filter(has_text="Descale the zanzibar kettle")
        expect(answer.locator("a", has_text="[1]")).to_have_count(1, timeout=60_000)
        ui_thread = thread_id(alice.page)
        expect(alice.page.locator(f"#thread-{ui_thread}")).to_be_visible()

        shown = alice.http.get(f"/project/thread/{ui_thread}").json()
        session_id = shown["metadata"]["session_id"]
        question_id, answer_id = (
            next(s["id"] for s in shown["steps"] if s["type"] == kind) for kind in ("user_message", "assistant_message")
        )
        step_ids = {s["name"]: s["id"] for s in shown["steps"] if s["type"] == "tool"}
        step_ids["summary"] = next(s["id"] for s in shown["steps"] if s["type"] == "run")
        assert set(step_ids) == {"calculate", "Python", "File search", "summary"}, step_ids
        elements = {e["name"]: e["id"] for e in shown["elements"]}
        [image_name] = [n for n in elements if n.endswith(".png")]
        vote = {"feedback": {"forId": answer_id, "value": 1, "comment": "spot on"}, "sessionId": alice.websocket_session}
        assert alice.http.put("/feedback", json=vote).status_code == 200

        [run] = alice.api.beta.threads.runs.list(thread_id=session_id).data
        assert run.status == "completed", run.last_error
        steps = alice.api.beta.threads.runs.steps.list(run.id, thread_id=session_id).data
        thread = alice.api.beta.threads.retrieve(session_id)
        assert thread.tool_resources and thread.tool_resources.file_search
        [vector_store_id] = thread.tool_resources.file_search.vector_store_ids
        kernel_folder = Path(srv.env["ASSISTANTS_DATA_DIR"]) / "sandbox" / "sessions" / session_id
        assert (kernel_folder / "alice-report.csv").read_bytes() == ALICE_REPORT

        # Bob's own chat, so his side of each route has something to show.
        send(bob.page, "Bob's own question")
        expect(messages(bob.page, "assistant_message").get_by_text("echo: Bob's own question")).to_be_visible()
        bob_ui_thread = thread_id(bob.page)

        w = World(
            server=srv,
            alice=alice,
            bob=bob,
            anonymous=anonymous,
            ui_thread=ui_thread,
            session_id=session_id,
            assistant_id=shown["metadata"]["assistant_id"],
            question_id=question_id,
            answer_id=answer_id,
            run_id=run.id,
            step_ids=step_ids,
            engine_step_ids=[s.id for s in steps],
            uploaded_file=elements["alice-kettle.md"],
            written_file=elements["alice-report.csv"],
            image_file=elements[image_name],
            chainlit_file=chainlit_file,
            vector_store_id=vector_store_id,
            kernel_folder=kernel_folder,
            bob_ui_thread=bob_ui_thread,
            bob_thread=bob.api.beta.threads.create().id,
        )
        w.secrets = [
            "zanzibar", "quince", "1000000", "alice-kettle.md", "alice-report.csv", "spot on", alice.name,
            ui_thread, session_id, w.assistant_id, question_id, answer_id, run.id, *step_ids.values(),
            *w.engine_step_ids, w.uploaded_file, w.written_file, w.image_file, chainlit_file, vector_store_id,
            alice.websocket_session, shown["userId"],
        ]  # fmt: skip
        w.baseline = alice_view(w)
        assert w.baseline["feedback"] == {"feedback": "1", "feedback_comment": "spot on"}
        yield w
    finally:
        anonymous.close()
        for p in (alice, bob):
            p.http.close()
            p.context.close()


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def alice_view(w: World) -> dict[str, Any]:
    """Everything of Alice's, as she sees it through the chat, `/v1` and her kernel folder."""
    http, api = w.alice.http, w.alice.api
    thread = http.get(f"/project/thread/{w.ui_thread}")
    assert thread.status_code == 200, thread.text
    listed = http.post("/project/threads", json={"pagination": {"first": 100}, "filter": {}})
    assert listed.status_code == 200, listed.text
    upload = http.get(f"/project/file/{w.chainlit_file}", params={"session_id": w.alice.websocket_session})
    files = api.files.list(limit=100).data
    stores = api.vector_stores.list(limit=100).data
    messages_ = api.beta.threads.messages.list(thread_id=w.session_id, order="asc").data
    return {
        "chat thread": thread.json(),
        "chat threads": [(t["id"], t["name"]) for t in listed.json()["data"]],
        "chat upload": (upload.status_code, digest(upload.content)),
        "session": api.beta.threads.retrieve(w.session_id).model_dump(),
        "messages": [m.model_dump() for m in messages_],
        "feedback": {k: v for k, v in messages_[-1].metadata.items() if k.startswith("feedback")},
        "runs": [r.model_dump() for r in api.beta.threads.runs.list(thread_id=w.session_id).data],
        "steps": [s.model_dump() for s in api.beta.threads.runs.steps.list(w.run_id, thread_id=w.session_id).data],
        "assistants": [a.model_dump() for a in api.beta.assistants.list(limit=100).data],
        "files": {f.id: (f.model_dump(), digest(api.files.content(f.id).read())) for f in files},
        "vector stores": [s.model_dump() for s in stores],
        "vector store files": [
            f.model_dump() for f in api.vector_stores.files.list(vector_store_id=w.vector_store_id).data
        ],
        "kernel folder": {p.name: digest(p.read_bytes()) for p in sorted(w.kernel_folder.iterdir())},
    }


def assert_alice_unchanged(w: World) -> None:
    assert alice_view(w) == w.baseline


def assert_nothing_of_alices(w: World, body: str, sent: str) -> None:
    """None of Alice's texts, names or ids appears in `body`, except those Bob sent himself."""
    leaked = [s for s in w.secrets if s in body and s not in sent]
    assert not leaked, f"{leaked} reached bob in: {body[:600]}"


# HTTP routes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None
    upload: tuple[str, bytes, str] | None = None
    headers: dict[str, str] | None = None
    api: bool = False
    """A `/v1` request, made with the caller's API key instead of the chat's cookie."""


@dataclass(frozen=True)
class Probe:
    """One try by Bob: which of Alice's objects, what he tries, through which route."""

    kind: str
    op: str
    route: str
    call: Callable[[World], Call]
    refused: tuple[int, ...] = (401, 403, 404)
    """What Bob may get back (a list route answers 200 with his own things only)."""
    owner_sees: bool = False
    """Alice making the same request gets her object: the row reaches it."""
    check: Callable[[World, httpx.Response], None] | None = None
    """More to assert on Bob's response."""
    public: bool = False
    """Answers without logging in (then with nothing of anyone's)."""

    def __str__(self) -> str:
        return f"{self.kind}|{self.op}|{self.route}"


def send_call(w: World, caller: Person | None, call: Call) -> httpx.Response:
    """`call` made by `caller` (None: someone who is not logged in)."""
    http = w.anonymous if caller is None else caller.http
    headers = dict(call.headers or {})
    if call.api:
        # Only the key: the request must not pass on the strength of a cookie.
        http = w.anonymous
        if caller is not None:
            headers["authorization"] = f"Bearer {caller.key}"
    files = {"file": call.upload} if call.upload else None
    return http.request(call.method, call.path, json=call.json, params=call.params, files=files, headers=headers)


def lists_only_bobs_threads(w: World, response: httpx.Response) -> None:
    assert {t["userIdentifier"] for t in response.json()["data"]} <= {w.bob.name}


def lists_bobs_own_thread(w: World, response: httpx.Response) -> None:
    lists_only_bobs_threads(w, response)
    assert w.bob_ui_thread in [t["id"] for t in response.json()["data"]]


def is_null(w: World, response: httpx.Response) -> None:
    assert response.json() is None


def thread_page(**filters: Any) -> Callable[[World], Call]:
    return lambda w: Call("POST", "/project/threads", json={"pagination": {"first": 100}, "filter": filters})


def feedback(for_id: Callable[[World], str]) -> Callable[[World], Call]:
    return lambda w: Call(
        "PUT", "/feedback", json={"feedback": {"forId": for_id(w), "value": 0, "comment": "bob"}, "sessionId": "x"}
    )


def unvote(for_id: Callable[[World], str]) -> Callable[[World], Call]:
    return lambda w: Call("DELETE", "/feedback", json={"feedbackId": for_id(w)})


def file_element(w: World) -> dict[str, Any]:
    return {"id": w.uploaded_file, "type": "file", "name": "alice-kettle.md", "display": "inline", "forId": w.question_id}


def custom_element(w: World) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "custom", "name": "Bob", "display": "inline", "forId": w.answer_id, "props": {}}


PROBES = [
    # Sessions (Chainlit's threads) ------------------------------------------------------------
    Probe("session", "read", "GET /project/thread/{id}", lambda w: Call("GET", f"/project/thread/{w.ui_thread}"), owner_sees=True),
    Probe("session", "read", "GET /project/thread/{engine id}", lambda w: Call("GET", f"/project/thread/{w.session_id}")),
    Probe("session", "read", "GET /project/share/{id}", lambda w: Call("GET", f"/project/share/{w.ui_thread}")),
    Probe("session", "list", "POST /project/threads", thread_page(), refused=(200,), check=lists_bobs_own_thread),
    Probe(
        "session", "list", "POST /project/threads (Alice's user id, her title)",
        lambda w: thread_page(userId=w.baseline["chat thread"]["userId"], search="zanzibar")(w),
        refused=(200,), check=lists_only_bobs_threads,
    ),
    Probe(
        "session", "list", "POST /project/threads (cursor: Alice's session)",
        lambda w: Call("POST", "/project/threads", json={"pagination": {"first": 100, "cursor": w.session_id}, "filter": {}}),
        refused=(200,), check=lists_only_bobs_threads,
    ),
    Probe("session", "change", "PUT /project/thread (rename)", lambda w: Call("PUT", "/project/thread", json={"threadId": w.ui_thread, "name": "bob was here"})),
    Probe("session", "change", "PUT /project/thread/share", lambda w: Call("PUT", "/project/thread/share", json={"threadId": w.ui_thread, "isShared": True})),
    Probe("session", "delete", "DELETE /project/thread", lambda w: Call("DELETE", "/project/thread", json={"threadId": w.ui_thread})),
    # The chat finds a session by its chat id alone: a `/v1` thread of Bob's cannot take Alice's.
    Probe(
        "session", "change", "POST /v1/threads (metadata.ui_thread: Alice's)",
        lambda w: Call("POST", "/v1/threads", json={"metadata": {"ui_thread": w.ui_thread}}, api=True), refused=(400,),
    ),
    Probe(
        "session", "change", "POST /v1/threads/{Bob's} (metadata.ui_thread: Alice's)",
        lambda w: Call("POST", f"/v1/threads/{w.bob_thread}", json={"metadata": {"ui_thread": w.ui_thread}}, api=True),
        refused=(400,),
    ),
    # Messages, runs and steps: read through the session and citations, changed through feedback --
    Probe("message", "read", "GET /assistants/citations/{message}/{n} (JSON)", lambda w: Call("GET", f"/assistants/citations/{w.answer_id}/1", headers={"accept": "application/json"}), owner_sees=True),
    Probe("message", "read", "GET /assistants/citations/{message}/{n} (page)", lambda w: Call("GET", f"/assistants/citations/{w.answer_id}/1"), owner_sees=True),
    Probe("message", "change", "PUT /feedback (answer)", feedback(lambda w: w.answer_id)),
    Probe("message", "delete", "DELETE /feedback (answer)", unvote(lambda w: w.answer_id)),
    Probe("message", "change", "PUT /feedback (question)", feedback(lambda w: w.question_id)),
    Probe("run", "read", "GET /assistants/citations/{run}/{n}", lambda w: Call("GET", f"/assistants/citations/{w.run_id}/1")),
    Probe("run", "change", "PUT /feedback (run)", feedback(lambda w: w.run_id)),
    Probe("run", "change", "PUT /feedback (run summary step)", feedback(lambda w: w.step_ids["summary"])),
    Probe("step", "change", "PUT /feedback (tool step)", feedback(lambda w: w.step_ids["calculate"])),
    Probe("step", "delete", "DELETE /feedback (tool step)", unvote(lambda w: w.step_ids["Python"])),
    Probe("step", "change", "PUT /feedback (engine step id)", feedback(lambda w: w.engine_step_ids[0])),
    # Files: uploaded, written by the code, drawn by the code; and Chainlit's copy of the upload --
    Probe("file", "read", "GET /assistants/files/{id} (uploaded)", lambda w: Call("GET", f"/assistants/files/{w.uploaded_file}"), owner_sees=True),
    Probe("file", "read", "GET /assistants/files/{id} (written)", lambda w: Call("GET", f"/assistants/files/{w.written_file}"), owner_sees=True),
    Probe("file", "read", "GET /assistants/files/{id} (image)", lambda w: Call("GET", f"/assistants/files/{w.image_file}")),
    Probe("file", "read", "GET /project/thread/{id}/element/{id}", lambda w: Call("GET", f"/project/thread/{w.ui_thread}/element/{w.written_file}"), owner_sees=True),
    Probe(
        "file", "read", "GET /project/thread/{Bob's id}/element/{Alice's id}",
        lambda w: Call("GET", f"/project/thread/{w.bob_ui_thread}/element/{w.uploaded_file}"), refused=(200,), check=is_null,
    ),
    Probe(
        "file", "read", "GET /project/file/{id}?session_id={Alice's}",
        lambda w: Call("GET", f"/project/file/{w.chainlit_file}", params={"session_id": w.alice.websocket_session}),
        owner_sees=True,
    ),
    Probe(
        "file", "read", "GET /project/file/{id}?session_id={Bob's}",
        lambda w: Call("GET", f"/project/file/{w.chainlit_file}", params={"session_id": w.bob.websocket_session}),
    ),
    Probe(
        "file", "change", "POST /project/file?session_id={Alice's}",
        lambda w: Call("POST", "/project/file", params={"session_id": w.alice.websocket_session}, upload=("bob.txt", b"bob's words\n", "text/plain")),
    ),
    Probe(
        "file", "delete", "DELETE /project/element (file)",
        lambda w: Call("DELETE", "/project/element", json={"sessionId": w.alice.websocket_session, "element": file_element(w)}),
    ),
    # Alice's websocket session: the routes that act on it by id ---------------------------------
    Probe(
        "chat session", "change", "PUT /project/element",
        lambda w: Call("PUT", "/project/element", json={"sessionId": w.alice.websocket_session, "element": custom_element(w)}),
    ),
    Probe(
        "chat session", "delete", "DELETE /project/element (custom)",
        lambda w: Call("DELETE", "/project/element", json={"sessionId": w.alice.websocket_session, "element": custom_element(w)}),
    ),
    Probe(
        "chat session", "change", "POST /project/action",
        lambda w: Call(
            "POST", "/project/action",
            json={"sessionId": w.alice.websocket_session, "action": {"id": "a1", "name": "anything", "payload": {}, "forId": w.answer_id}},
        ),
    ),
    Probe(
        "chat session", "change", "POST /mcp",
        lambda w: Call("POST", "/mcp", json={"sessionId": w.alice.websocket_session, "name": "bob", "clientType": "sse", "url": "http://127.0.0.1:9/sse"}),
    ),
    Probe("chat session", "delete", "DELETE /mcp", lambda w: Call("DELETE", "/mcp", json={"sessionId": w.alice.websocket_session, "name": "bob"})),
    # The same with the id of a chat that has ended: not found either (Chainlit alone fails with a 500).
    Probe(
        "chat session", "change", "PUT /project/element (ended chat)",
        lambda w: Call("PUT", "/project/element", json={"sessionId": w.gone_session, "element": custom_element(w)}),
    ),
    Probe(
        "chat session", "delete", "DELETE /project/element (ended chat)",
        lambda w: Call("DELETE", "/project/element", json={"sessionId": w.gone_session, "element": file_element(w)}),
    ),
    Probe(
        "chat session", "change", "POST /project/action (ended chat)",
        lambda w: Call("POST", "/project/action", json={"sessionId": w.gone_session, "action": {"id": "a1", "name": "anything", "payload": {}}}),
    ),
    Probe(
        "chat session", "change", "POST /mcp (ended chat)",
        lambda w: Call("POST", "/mcp", json={"sessionId": w.gone_session, "name": "bob", "clientType": "sse", "url": "http://127.0.0.1:9/sse"}),
    ),
    Probe("chat session", "delete", "DELETE /mcp (ended chat)", lambda w: Call("DELETE", "/mcp", json={"sessionId": w.gone_session, "name": "bob"})),
    Probe(
        "chat session", "read", "GET /project/file/{id}?session_id={ended chat}",
        lambda w: Call("GET", f"/project/file/{w.chainlit_file}", params={"session_id": w.gone_session}),
    ),
    Probe(
        "chat session", "change", "POST /project/file?session_id={ended chat}",
        lambda w: Call("POST", "/project/file", params={"session_id": w.gone_session}, upload=("bob.txt", b"bob's words\n", "text/plain")),
    ),
    # Users, auth and public pages: nothing of Alice's on them ------------------------------------
    Probe("user", "read", "GET /user", lambda w: Call("GET", "/user"), refused=(200,)),
    Probe("assistant", "list", "GET /project/settings", lambda w: Call("GET", "/project/settings"), refused=(200,)),
    Probe("user", "read", "GET /avatars/{Alice's name}", lambda w: Call("GET", f"/avatars/{w.alice.name}"), refused=(200,), public=True),
    Probe("user", "read", "GET /auth/config", lambda w: Call("GET", "/auth/config"), refused=(200,), public=True),
    Probe("user", "change", "POST /auth/jwt", lambda w: Call("POST", "/auth/jwt"), refused=(401,), public=True),
    Probe("user", "change", "POST /auth/header", lambda w: Call("POST", "/auth/header"), refused=(400,), public=True),
    Probe("user", "read", "GET /auth/oauth/{provider}", lambda w: Call("GET", "/auth/oauth/github"), refused=(400,), public=True),
]  # fmt: skip


@pytest.mark.parametrize("probe", PROBES, ids=str)
def test_bob_gets_nothing_of_alices_through_the_chats_http_routes(world: World, probe: Probe) -> None:
    w = world
    call = probe.call(w)
    sent = json.dumps([call.path, call.json, call.params])

    response = send_call(w, w.bob, call)

    assert response.status_code in probe.refused, (response.status_code, response.text[:300])
    assert_nothing_of_alices(w, response.text, sent)
    if probe.check is not None:
        probe.check(w, response)
    # Without logging in, the same request is refused (or shows nothing of anyone's).
    anonymous = send_call(w, None, call)
    assert anonymous.status_code in (probe.refused if probe.public else (401,)), anonymous.text[:300]
    assert_nothing_of_alices(w, anonymous.text, sent)

    assert_alice_unchanged(w)
    if probe.owner_sees:
        own = send_call(w, w.alice, call)
        assert own.status_code == 200, own.text[:300]
        assert any(s in own.text for s in ("zanzibar", "1000000", "alice-report.csv")), own.text[:300]


# Chainlit's socket.io events --------------------------------------------------------------------

SOCKET_CLIENT = """
() => {
  if (window.chatSocket) return;
  const sockets = {};
  window.chatSocket = {
    // Engine.IO 4 over a websocket: "0" opens, "40" connects (with `auth`), "44" refuses,
    // "42" carries an event, "2"/"3" are ping and pong.
    open(key, url, auth, timeoutMs) {
      return new Promise((resolve) => {
        const ws = new WebSocket(url);
        const socket = { ws, events: [], waiters: [] };
        sockets[key] = socket;
        const timer = setTimeout(() => resolve({ outcome: "timeout" }), timeoutMs);
        const end = (result) => { clearTimeout(timer); resolve(result); };
        ws.onmessage = (message) => {
          const data = String(message.data);
          if (data[0] === "0") ws.send("40" + JSON.stringify(auth));
          else if (data === "2") ws.send("3");
          else if (data.startsWith("44")) { end({ outcome: "refused", detail: data.slice(2) }); ws.close(); }
          else if (data.startsWith("40")) end({ outcome: "connected" });
          else if (data.startsWith("42")) { socket.events.push(data.slice(2)); socket.waiters.forEach((w) => w()); }
        };
        ws.onclose = () => { end({ outcome: "closed" }); socket.waiters.forEach((w) => w()); };
      });
    },
    emit(key, event) { sockets[key].ws.send("42" + JSON.stringify(event)); },
    waitFor(key, needle, count, timeoutMs) {
      const socket = sockets[key];
      return new Promise((resolve) => {
        const timer = setTimeout(() => done(false), timeoutMs);
        const done = (found) => {
          clearTimeout(timer);
          socket.waiters = socket.waiters.filter((w) => w !== check);
          resolve({ found, events: socket.events });
        };
        const check = () => {
          if (socket.events.filter((e) => e.includes(needle)).length >= count) done(true);
          else if (socket.ws.readyState > 1) done(false);
        };
        socket.waiters.push(check);
        check();
      });
    },
    close(key) { if (sockets[key]) sockets[key].ws.close(); delete sockets[key]; },
  };
}
"""


class ChatSocket:
    """One socket.io connection to the chat, opened from a page of the user's own browser (with
    the chat's cookies), able to send what the page itself never would."""

    def __init__(self, page: Page, srv: Server) -> None:
        self.page, self.srv = page, srv
        self.key = uuid.uuid4().hex
        self.session_id = ""
        page.evaluate(SOCKET_CLIENT)

    def open(self, *, session_id: str | None = None, thread: str = "") -> dict[str, str]:
        """Connect as Chainlit's page does (`auth` as it sends it); returns the outcome."""
        self.session_id = session_id or str(uuid.uuid4())
        auth = {"clientType": "webapp", "sessionId": self.session_id, "threadId": thread, "userEnv": "{}", "chatProfile": ""}
        url = self.srv.url.replace("http://", "ws://") + "/ws/socket.io/?EIO=4&transport=websocket"
        outcome: dict[str, str] = self.page.evaluate(
            "([key, url, auth, ms]) => window.chatSocket.open(key, url, auth, ms)", [self.key, url, auth, TIMEOUT_MS]
        )
        return outcome

    def emit(self, *event: Any) -> None:
        self.page.evaluate("([key, event]) => window.chatSocket.emit(key, event)", [self.key, list(event)])

    def wait_for(self, needle: str, count: int = 1) -> list[str]:
        """The events received so far, once `count` of them contain `needle`."""
        result = self.page.evaluate(
            "([key, needle, count, ms]) => window.chatSocket.waitFor(key, needle, count, ms)",
            [self.key, needle, count, TIMEOUT_MS],
        )
        assert result["found"], f"fewer than {count} events with {needle!r} in {result['events']}"
        return list(result["events"])

    def start(self) -> None:
        """Say the connection is up, as the page does, and wait for the chat to be ready."""
        self.emit("connection_successful")
        self.wait_for('"chat_settings"')

    def close(self) -> None:
        self.page.evaluate("key => window.chatSocket.close(key)", self.key)


def started_socket(page: Page, srv: Server) -> ChatSocket:
    """A new chat over a socket of `page`'s browser, connected and ready."""
    socket = ChatSocket(page, srv)
    assert socket.open()["outcome"] == "connected"
    socket.start()
    return socket


def origin_page(who: Person, srv: Server) -> Page:
    """A page of the user's browser on the chat's origin (not the chat itself: no socket of its own)."""
    page = who.context.new_page()
    page.goto(srv.url + "/auth/config")
    return page


@pytest.fixture
def bob_socket_page(world: World) -> Iterator[Page]:
    page = origin_page(world.bob, world.server)
    try:
        yield page
    finally:
        page.close()


def user_message(name: str, text: str) -> dict[str, Any]:
    """A `client_message` payload's message, as Chainlit's page builds it."""
    return {
        "threadId": "",
        "id": str(uuid.uuid4()),
        "name": name,
        "type": "user_message",
        "output": text,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "metadata": {},
    }


def test_bob_cannot_open_alices_session_over_the_socket(world: World, bob_socket_page: Page) -> None:
    w = world
    socket = ChatSocket(bob_socket_page, w.server)
    refused = socket.open(thread=w.ui_thread)
    assert refused["outcome"] == "refused", refused
    assert_nothing_of_alices(w, json.dumps(refused), w.ui_thread)
    # Bob's socket itself works: without Alice's id he connects.
    assert ChatSocket(bob_socket_page, w.server).open()["outcome"] == "connected"
    # The engine's id of her session is no chat id: Bob gets a new chat of his own and nothing of hers.
    by_engine_id = ChatSocket(bob_socket_page, w.server)
    assert by_engine_id.open(thread=w.session_id)["outcome"] == "connected"
    by_engine_id.start()
    events = by_engine_id.wait_for('"chat_settings"')
    assert any("resume_thread_error" in e for e in events), events
    assert_nothing_of_alices(w, json.dumps(events), w.session_id)
    assert_alice_unchanged(w)
    # The same request resumes the session for Alice.
    alices = ChatSocket(origin_page(w.alice, w.server), w.server)
    assert alices.open(thread=w.ui_thread)["outcome"] == "connected"
    alices.emit("connection_successful")
    assert any("zanzibar" in e for e in alices.wait_for('"resume_thread"'))
    alices.page.close()


def test_bob_cannot_take_over_alices_websocket_session(world: World, bob_socket_page: Page) -> None:
    w = world
    socket = ChatSocket(bob_socket_page, w.server)
    refused = socket.open(session_id=w.alice.websocket_session)
    assert refused["outcome"] == "refused", refused
    assert_nothing_of_alices(w, json.dumps(refused), w.alice.websocket_session)
    # Her chat session is still hers (her view reads her upload through it).
    assert_alice_unchanged(w)


def test_bobs_messages_cannot_carry_alices_uploads(world: World, bob_socket_page: Page, model: ScriptedModel) -> None:
    w = world
    socket = started_socket(bob_socket_page, w.server)
    own = w.bob.http.post(
        "/project/file", params={"session_id": socket.session_id}, files={"file": ("bob-own.txt", b"bob's words\n", "text/plain")}
    )
    assert own.status_code == 200, own.text
    model.add_text("Bob's files noted.")
    text = f"Bob sends files {uuid.uuid4().hex[:6]}"
    socket.emit(
        "client_message",
        {"message": user_message(w.bob.name, text), "fileReferences": [{"id": w.chainlit_file}, {"id": own.json()["id"]}]},
    )
    events = socket.wait_for("Bob's files noted.")
    socket.close()

    assert_nothing_of_alices(w, json.dumps(events), w.chainlit_file)
    assert_nothing_of_alices(w, json.dumps(chat_requests(model)), "")
    # Bob's stored message carries his own file only.
    threads = w.bob.http.post("/project/threads", json={"pagination": {"first": 100}, "filter": {"search": text}}).json()
    [session] = [t["metadata"]["session_id"] for t in threads["data"]]
    [sent] = w.bob.api.beta.threads.messages.list(thread_id=session, order="asc").data[:1]
    attached = [w.bob.api.files.retrieve(a.file_id).filename for a in sent.attachments or [] if a.file_id]
    assert attached == ["bob-own.txt"]
    assert_alice_unchanged(w)


def test_bobs_edits_and_votes_over_the_socket_do_not_reach_alices_messages(
    world: World, bob_socket_page: Page, model: ScriptedModel
) -> None:
    w = world
    socket = started_socket(bob_socket_page, w.server)
    for target in (w.question_id, w.answer_id):
        edited = {**user_message(w.bob.name, "bob was here"), "id": target}
        socket.emit("edit_message", {"message": edited})
        socket.emit("message_favorite", {"message": {**edited, "metadata": {"favorite": True}}})
    # A message of Bob's own afterwards: answered once the events before it were handled.
    model.add_text("Bob's own answer.")
    socket.emit("client_message", {"message": user_message(w.bob.name, "Anything new?"), "fileReferences": []})
    events = socket.wait_for("Bob's own answer.")
    socket.close()
    assert not any("bob was here" in e for e in events), events
    assert_alice_unchanged(w)


def test_an_edit_sent_over_the_socket_is_refused_while_editing_is_off(
    world: World, bob_socket_page: Page, model: ScriptedModel
) -> None:
    """The page offers no edit (`edit_message = false`); a hand-made socket client's edit of the
    user's own message changes neither the chat nor the engine's thread, and starts no run."""
    w = world
    socket = started_socket(bob_socket_page, w.server)
    question = f"Bob's question {uuid.uuid4().hex[:6]}"
    first = user_message(w.bob.name, question)
    model.add_text("The first answer.")
    socket.emit("client_message", {"message": first, "fileReferences": []})
    socket.wait_for("The first answer.")
    runs = len(chat_requests(model))
    socket.emit("edit_message", {"message": {**first, "output": "An edited question"}})
    model.add_text("The second answer.")
    socket.emit("client_message", {"message": user_message(w.bob.name, "A second question"), "fileReferences": []})
    events = socket.wait_for("The second answer.")
    socket.close()

    assert not any("An edited question" in e for e in events), events
    assert len(chat_requests(model)) == runs + 1
    threads = w.bob.http.post("/project/threads", json={"pagination": {"first": 100}, "filter": {"search": question}}).json()
    [session] = [t["metadata"]["session_id"] for t in threads["data"]]
    stored = w.bob.api.beta.threads.messages.list(thread_id=session, order="asc").data
    assert [m.content[0].text.value for m in stored if m.content[0].type == "text"] == [
        question,
        "The first answer.",
        "A second question",
        "The second answer.",
    ]


# Bob's own chat: its tools reach only his things ------------------------------------------------


def tool_outputs(model: ScriptedModel) -> list[str]:
    """What the tools of the last run answered, in order, as the model received it."""
    return [text_of(m) for m in chat_requests(model)[-1]["messages"] if m["role"] == "tool"]


def test_other_websites_cannot_read_the_chat_with_the_users_cookie(world: World) -> None:
    """No origin but the app's own gets CORS on the chat's routes: a page of another site (even a
    sibling subdomain, which the cookie's SameSite=Lax lets through) cannot read what they answer."""
    w = world
    for origin in ("https://wiki.example.com", "null"):
        preflight = w.bob.http.options(
            "/project/threads",
            headers={"origin": origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type"},
        )
        assert "access-control-allow-origin" not in preflight.headers, preflight.headers
        answer = w.bob.http.post("/project/threads", headers={"origin": origin}, json={"pagination": {"first": 5}, "filter": {}})
        # Without this header the browser keeps the answer from the other site's page.
        assert "access-control-allow-origin" not in answer.headers, answer.headers
    # The app's own pages are same-origin and need none: Bob's list still answers.
    assert w.bob.http.post("/project/threads", json={"pagination": {"first": 5}, "filter": {}}).status_code == 200


def bobs_session(w: World, text: str) -> tuple[str, str]:
    """(chat thread id, engine session id) of Bob's session that `text` began."""
    threads = w.bob.http.post("/project/threads", json={"pagination": {"first": 100}, "filter": {"search": text}}).json()
    [thread] = threads["data"]
    return thread["id"], thread["metadata"]["session_id"]


def test_stop_right_after_sending_cancels_that_messages_run_and_the_chat_goes_on(
    world: World, bob_socket_page: Page, model: ScriptedModel
) -> None:
    """Stop pressed before the new run's first event reached the chat: the run it started is
    cancelled (not left answering unseen), and the next message is answered at once."""
    w = world

    def respond(body: dict[str, Any]) -> Any:
        asked = text_of(body["messages"][-1])
        # Whenever (if ever) the stopped message's run reaches the model, it would answer slowly.
        return HangReply(30, "An answer nobody waits for") if asked == "A slow question" else f"Answer to: {asked}"

    model.add_responder(respond)
    socket = started_socket(bob_socket_page, w.server)
    first = f"Bob starts {uuid.uuid4().hex[:6]}"
    socket.emit("client_message", {"message": user_message(w.bob.name, first), "fileReferences": []})
    socket.wait_for(f"Answer to: {first}")
    socket.emit("client_message", {"message": user_message(w.bob.name, "A slow question"), "fileReferences": []})
    socket.emit("stop")
    socket.emit("client_message", {"message": user_message(w.bob.name, "A third question"), "fileReferences": []})
    events = socket.wait_for("Answer to: A third question")
    # The third run's summary comes after its answer: everything before it is in once it is.
    summary = '["new_message",{"name":"context:'
    answered = next(i for i, e in enumerate(events) if "Answer to: A third question" in e)
    events = socket.wait_for(summary, count=sum(e.startswith(summary) for e in events[:answered]) + 1)
    socket.close()

    assert not any("while a run" in e for e in events), events
    _, session = bobs_session(w, first)
    runs = w.bob.api.beta.threads.runs.list(thread_id=session, order="asc").data
    assert [r.status for r in runs][-1] == "completed"
    assert all(r.status in ("completed", "cancelled") for r in runs), [r.status for r in runs]
    # One run summary per run: Stop did not show the previous turn's again.
    summaries = [e for e in events if e.startswith(summary)]
    assert len(summaries) == len(runs), summaries


def test_a_chat_reopened_while_its_answer_is_written_says_so_and_the_next_message_waits(
    world: World, bob_socket_page: Page, model: ScriptedModel
) -> None:
    w = world
    socket = started_socket(bob_socket_page, w.server)
    first = f"Bob asks slowly {uuid.uuid4().hex[:6]}"
    model.add_hang(6, "Thinking it over")  # longer than the reload below takes, even on a busy machine
    socket.emit("client_message", {"message": user_message(w.bob.name, first), "fileReferences": []})
    socket.wait_for("Thinking")
    socket.close()  # the page is reloaded mid-answer

    ui_thread, _ = bobs_session(w, first)
    reopened = ChatSocket(bob_socket_page, w.server)
    assert reopened.open(thread=ui_thread)["outcome"] == "connected"
    reopened.emit("connection_successful")
    reopened.wait_for("still being written")
    model.add_text("Here I am.")
    reopened.emit("client_message", {"message": user_message(w.bob.name, "Are you there?"), "fileReferences": []})
    events = reopened.wait_for("Here I am.")
    reopened.close()
    assert not any("while a run" in e for e in events), events


def test_bobs_file_search_finds_nothing_in_alices_vector_store(
    world: World, model: ScriptedModel, tmp_path: Path
) -> None:
    w, page = world, world.bob.page
    notes = tmp_path / "bob-teapot.md"
    notes.write_text("# Teapot\n\nThe bob teapot wants warming before the tea goes in.\n")
    page.set_input_files("#upload-button-input", str(notes))
    expect(page.locator("#attachments").get_by_text("bob-teapot.md")).to_be_visible()
    model.add_tool_calls([{"name": "file_search", "arguments": json.dumps({"query": "zanzibar kettle quince vinegar"})}])
    model.add_tool_calls([{"name": "file_search", "arguments": json.dumps({"query": "bob teapot warming"})}])
    model.add_text("Searched twice.")
    send(page, "Search for the zanzibar kettle")
    expect(messages(page, "assistant_message").get_by_text("Searched twice.")).to_be_visible()

    alices_words, own_words = tool_outputs(model)
    assert "bob-teapot.md" in own_words and "warming" in own_words, own_words
    assert_nothing_of_alices(w, alices_words, "zanzibar kettle quince vinegar")
    assert "quince" not in alices_words and "alice-kettle" not in alices_words, alices_words
    # The chat gave Bob his own copy of the profile's assistant, never Alice's.
    shown = w.bob.http.get(f"/project/thread/{w.bob_ui_thread}").json()
    assert shown["metadata"]["assistant_id"] != w.assistant_id
    assert_nothing_of_alices(w, json.dumps(shown), "zanzibar kettle quince vinegar")
    assert_alice_unchanged(w)


def test_bobs_code_cannot_reach_alices_kernel_folder(world: World, model: ScriptedModel) -> None:
    w, page = world, world.bob.page
    folder = str(w.kernel_folder)
    code = (
        "import os\n"
        f"alice = {folder!r}\n"
        "print('visible', os.path.exists(alice), os.path.exists(os.path.dirname(alice)))\n"
        "for name in ('alice-report.csv', 'alice-kettle.md'):\n"
        "    for path in (os.path.join(alice, name), '/mnt/data/' + name, '/mnt/' + name):\n"
        "        try:\n"
        "            print(open(path).read())\n"
        "        except OSError as e:\n"
        "            print(type(e).__name__)\n"
        "try:\n"
        "    os.remove(os.path.join(alice, 'alice-report.csv'))\n"
        "    print('removed')\n"
        "except OSError as e:\n"
        "    print('remove', type(e).__name__)\n"
        "tops = ('/mnt', '/tmp', '/run', '/home', '/root', '/srv', '/opt', '/work')\n"
        "print('found', [f for top in tops for _, _, fs in os.walk(top) for f in fs if f.startswith('alice-')])\n"
        "open('bob-own.csv', 'w').write('bob,1\\n')\n"
        "print('mine', sorted(os.listdir('/mnt/data')))\n"
    )
    model.add_tool_calls([{"name": "code_interpreter", "arguments": json.dumps({"code": code})}])
    model.add_text("Looked around.")
    send(page, "Look around the sandbox")
    expect(messages(page, "assistant_message").get_by_text("Looked around.")).to_be_visible()

    [logs] = tool_outputs(model)
    assert logs.splitlines()[:8] == ["visible False False", *["FileNotFoundError"] * 6, "remove FileNotFoundError"], logs
    assert "found []" in logs and "bob-own.csv" in logs.split("mine", 1)[1], logs
    assert_nothing_of_alices(w, logs, folder)
    assert_alice_unchanged(w)

