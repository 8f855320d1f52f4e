"""The chat as a user sees it: a real browser (Debian's Chromium) driving the real server.

The server is `chainlit run app.py` (see `tests/server.py`) talking to the scripted model; the
browser logs in, sends messages, uploads files, changes settings, stops answers and reopens
sessions. Assertions are about what the page shows and, where it matters, what the model was sent.

Each test makes its own users (uuid-based names), so tests do not depend on one another. One
module-scoped server on SQLite serves them all; the resume test also runs against PostgreSQL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.server
import json
import re
import shutil
import threading
import time
import tomllib
import uuid
import zipfile
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from assistants.config import Settings
from assistants.runtime import Runtime
from assistants.store import ListParams
from assistants.ui.uploads import ACCEPT, DOCX, MAX_BYTES, MAX_FILES, store_uploads
from tests.conftest import (
    create_pg_database,
    drop_pg_database,
    instances_on_new_postgres,
    sdk_client,
)
from tests.scripted_model import ScriptedModel
from tests.server import Server, start_server
from tests.test_search_ingest import make_docx, make_pdf

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000
"""Generous for a loaded CI machine; every wait below ends as soon as its condition holds."""

expect.set_options(timeout=TIMEOUT_MS)
T = TypeVar("T")
NewContext = Callable[[], BrowserContext]


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on a thread of its own (the sync Playwright API keeps an event
    loop running on this one, so `asyncio.run` here would refuse)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# The server-side upload checks, without a browser ----------------------------------------------


@dataclass
class FakeElement:
    """What `store_uploads` reads from a Chainlit element: its name, the uploaded path and the MIME type."""

    name: str
    path: str | None
    mime: str | None


def test_store_uploads_rejects_large_extra_and_disallowed_files(tmp_path: Path) -> None:
    # Run on a thread of its own, so it works whatever else (the sync Playwright loop) runs on this one.
    run_async(check_store_uploads(tmp_path))


async def check_store_uploads(tmp_path: Path) -> None:
    runtime = Runtime(
        Settings(
            ASSISTANTS_DATA_DIR=tmp_path / "data",
            ASSISTANTS_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'uploads.db'}",
            OPENAI_BASE_URL="http://127.0.0.1:9/v1",
            OPENAI_API_KEY="unused",
            ASSISTANTS_MODEL="scripted-model",
        )
    )
    engine = await runtime.start()
    try:
        owner = await runtime.accounts.add_user(f"uploader-{uuid.uuid4().hex[:8]}", "pw-uploader")
        uploads = tmp_path / "uploads"
        uploads.mkdir()

        def make(name: str, content: bytes = b"a,b\n1,2\n", size: int | None = None) -> str:
            path = uploads / name
            path.write_bytes(content)
            if size is not None:
                with path.open("r+b") as handle:  # A sparse file: big on stat, nothing on disk.
                    handle.truncate(size)
            return str(path)

        async def stored_names() -> list[str]:
            page = await engine.list_files(owner, ListParams(limit=100, order="asc"))
            return [f.filename for f in page.data]

        # Too big, a disallowed type, and a disallowed type claiming an allowed MIME type: all refused.
        bad = [
            FakeElement("huge.txt", make("huge.txt", size=MAX_BYTES + 1), "text/plain"),
            FakeElement("tools.zip", make("tools.zip", b"PK\x03\x04 zipped"), "application/zip"),
            FakeElement("setup.exe", make("setup.exe", b"MZ\x90\x00"), "application/octet-stream"),
            FakeElement("sneaky.exe", make("sneaky.exe", b"MZ\x90\x00"), "text/csv"),
        ]
        prepared = await store_uploads(engine, owner, "check these", bad)
        assert prepared.attachments == [] and prepared.accepted == []
        assert len(prepared.rejected) == 4, prepared.rejected
        huge, zipped, exe, sneaky = prepared.rejected
        assert huge.startswith("huge.txt:") and "over the 20 MB limit" in huge
        assert zipped.startswith("tools.zip:") and "not accepted" in zipped and "application/zip" in zipped
        assert exe.startswith("setup.exe:") and "not accepted" in exe
        assert sneaky.startswith("sneaky.exe:") and "not accepted" in sneaky
        assert [getattr(c, "text", None) for c in prepared.content] == ["check these"]
        assert await stored_names() == []

        # Six allowed files: the first five are stored and attached, the sixth is refused.
        names = ["a.csv", "b.txt", "c.md", "d.json", "e.csv", "f.csv"]
        six = [FakeElement(n, make(n), None) for n in names]
        prepared = await store_uploads(engine, owner, "", six)
        assert [name for _, name in prepared.accepted] == names[:MAX_FILES]
        assert len(prepared.attachments) == MAX_FILES
        assert prepared.rejected == [f"f.csv: only {MAX_FILES} files can be sent with one message."]
        assert sorted(await stored_names()) == sorted(names[:MAX_FILES])
        # Each stored file holds the uploaded bytes.
        for file_id, _ in prepared.accepted:
            _, content = await engine.file_content(owner, file_id)
            assert content == b"a,b\n1,2\n"

        # An upload whose temporary file vanished is refused, not stored.
        prepared = await store_uploads(
            engine, owner, "hi", [FakeElement("gone.csv", str(uploads / "nope.csv"), "text/csv")]
        )
        assert prepared.rejected == ["gone.csv: the upload did not arrive; try again."]
        assert sorted(await stored_names()) == sorted(names[:MAX_FILES])

        # Content that is not what its name and type claim is refused, saying what it is.
        disguised = [
            FakeElement("photo.png", make("photo.png", b"<svg onload=alert(1)>"), "image/png"),
            FakeElement("notes.txt", make("notes.txt", b"MZ\x90\x00 program"), "text/plain"),
            FakeElement("data.csv", make("data.csv", b"a,b\x00\x01\x02"), "text/csv"),
            FakeElement("paper.pdf", make("paper.pdf", b"\x89PNG\r\n\x1a\n...."), "application/pdf"),
            FakeElement("latin.md", make("latin.md", "caf\u00e9".encode("latin-1")), "text/markdown"),
        ]
        more_disguised = [
            FakeElement("report.docx", make("report.docx", b"Not a zip at all"), DOCX),
            FakeElement("page.html", make("page.html", b"\x7fELF\x02\x01"), "text/html"),
        ]
        prepared = await store_uploads(engine, owner, "odd ones", disguised)
        also = await store_uploads(engine, owner, "more odd ones", more_disguised)
        assert prepared.accepted == [] and also.accepted == []
        assert prepared.rejected + also.rejected == [
            "photo.png: the content is not a PNG image, so it was not attached.",
            "notes.txt: the content is not text (it holds binary data), so it was not attached.",
            "data.csv: the content is not text (it holds binary data), so it was not attached.",
            "paper.pdf: the content is not a PDF document (it is a PNG image), so it was not attached.",
            "latin.md: the content is not UTF-8 text, so it was not attached.",
            "report.docx: the content is not a Word document, so it was not attached.",
            "page.html: the content is not text: it is a Linux program, so it was not attached.",
        ]
        # Real content of those types passes, and a path in the name is dropped.
        real = [
            FakeElement("../../secret/photo.png", make("real.png", b"\x89PNG\r\n\x1a\n" + bytes(16)), "image/png"),
            FakeElement("mz.txt", make("mz.txt", b"MZ is how this note begins.\n"), "text/plain"),
            FakeElement("caf\u00e9.md", make("cafe.md", "# caf\u00e9\n".encode()), "text/markdown"),
            # What a browser on Windows with Excel installed says a CSV file is.
            FakeElement("excel.csv", make("excel.csv"), "application/vnd.ms-excel"),
        ]
        prepared = await store_uploads(engine, owner, "good ones", real)
        assert prepared.rejected == []
        assert [name for _, name in prepared.accepted] == ["photo.png", "mz.txt", "caf\u00e9.md", "excel.csv"]
        # Documents and code, whatever the browser calls them.
        documents = [
            FakeElement("report.docx", make("report.docx", b"PK\x03\x04" + bytes(26)), DOCX),
            FakeElement("page.html", make("page.html", b"<h1>Hi</h1>"), "text/html"),
            FakeElement("tool.py", make("tool.py", b"print('hi')\n"), "text/x-python"),
            FakeElement("lib.ts", make("lib.ts", b"export const a = 1;\n"), "video/mp2t"),
            FakeElement("build.sh", make("build.sh", b"make all\n"), None),
        ]
        prepared = await store_uploads(engine, owner, "documents", documents, ("file_search",))
        assert prepared.rejected == []
        assert [name for _, name in prepared.accepted] == ["report.docx", "page.html", "tool.py", "lib.ts", "build.sh"]
        assert all(a.tools == [{"type": "file_search"}] for a in prepared.attachments)
        assert sorted(await stored_names()) == sorted(
            [*names[:MAX_FILES], "photo.png", "mz.txt", "caf\u00e9.md", "excel.csv", *(d.name for d in documents)]
        )
        # Chainlit's own upload route checks the same list, read from the app's config.
        accepted = tomllib.loads((Path(__file__).parent.parent / ".chainlit" / "config.toml").read_text())
        assert {k: tuple(v) for k, v in accepted["features"]["spontaneous_file_upload"]["accept"].items()} == ACCEPT
    finally:
        await runtime.close()


# Fixtures: servers, the browser, logged-in pages ------------------------------------------------


@pytest.fixture(scope="module")
def chat_server(
    scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The real chat server on SQLite, shared by this module's browser tests."""
    srv = start_server(tmp_path_factory.mktemp("chat-sqlite"), model_url=scripted_model.base_url)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def chat_server_pg(
    scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The same on PostgreSQL (only the resume test uses it: that is where the data layer matters most)."""
    url = run_async(create_pg_database())
    try:
        srv = start_server(
            tmp_path_factory.mktemp("chat-postgres"),
            model_url=scripted_model.base_url,
            extra_env={"ASSISTANTS_DATABASE_URL": url},
        )
        try:
            yield srv
        finally:
            srv.stop()
    finally:
        run_async(drop_pg_database(url))


@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    executable = shutil.which("chromium")
    # No skip: a machine without Chromium cannot vouch for the chat, so the tests fail there.
    assert executable, (
        "Chromium is not installed (expected `chromium` on PATH, e.g. Debian's package)"
    )
    browser = playwright_instance.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[NewContext]:
    """Make fresh browser contexts (separate cookies: separate users); all closed after the test."""
    contexts: list[BrowserContext] = []

    def make() -> BrowserContext:
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def page(new_context: NewContext) -> Page:
    return new_context().new_page()


def new_user(srv: Server, prefix: str) -> tuple[str, str]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex[:12]}"
    srv.cli("users", "add", name, "--password", password)
    return name, password


def submit_login(page: Page, srv: Server, name: str, password: str) -> None:
    page.goto(srv.url)
    page.locator("#email").fill(name)
    page.locator("#password").fill(password)
    page.keyboard.press("Enter")


def wait_ready(page: Page) -> None:
    """The chat is ready for a message once the server's settings arrived: they come over the
    socket from `on_chat_start` / `on_chat_resume`, so the socket is up and the session exists.
    (Typing before that loses the first message.)"""
    expect(page.locator("#chat-settings-open-modal")).to_be_visible()


def login(page: Page, srv: Server, name: str, password: str) -> None:
    submit_login(page, srv, name, password)
    wait_ready(page)


def send(page: Page, text: str) -> None:
    page.locator("#chat-input").fill(text)
    # The send button only exists when no answer is running (otherwise it is the stop button).
    page.locator("#chat-submit").click()


def messages(page: Page, kind: str) -> Locator:
    return page.locator(f'[data-step-type="{kind}"]')


def step_types(page: Page) -> list[tuple[str, str]]:
    """(type, text) of every message and step on the page, in the order shown."""
    return [
        (kind, text)
        for kind, text in page.evaluate(
            "() => [...document.querySelectorAll('[data-step-type]')]"
            ".map(e => [e.getAttribute('data-step-type'), e.innerText])"
        )
    ]


def index_of(entries: list[tuple[str, str]], kind: str, needle: str) -> int:
    for i, (k, text) in enumerate(entries):
        if k == kind and needle in text:
            return i
    raise AssertionError(f"no {kind} containing {needle!r} in {entries}")


def chat_requests(model: ScriptedModel) -> list[dict[str, Any]]:
    return [
        r.body
        for r in model.requests
        if r.path.endswith("/chat/completions") and isinstance(r.body, dict)
    ]


def after_system(messages_sent: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    assert messages_sent, "the model received no messages"
    assert messages_sent[0]["role"] == "system"
    return messages_sent[1:]


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def thread_id(page: Page) -> str:
    expect(page).to_have_url(re.compile(r"/thread/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


def set_last_n(page: Page, n: int) -> None:
    """Open the settings dialog, choose "Last N messages" with N = n, and confirm."""
    page.locator("#chat-settings-open-modal").click()
    dialog = page.locator("#chat-settings")
    expect(dialog).to_be_visible()
    dialog.locator("#context_mode").click()
    page.get_by_role("option", name="Last N messages").click()
    expect(dialog.locator("#context_mode")).to_have_text("Last N messages")
    thumb = dialog.locator("#context_n [role=slider]")
    thumb.focus()
    page.keyboard.press("Home")  # the slider's minimum, 1
    for _ in range(n - 1):
        page.keyboard.press("ArrowRight")
    expect(thumb).to_have_attribute("aria-valuenow", str(n))
    dialog.locator("#confirm").click()
    expect(dialog).to_be_hidden()


# 1. Logging in ---------------------------------------------------------------------------------


def test_login_wrong_password_then_right_password_shows_default_starters(
    chat_server: Server, page: Page
) -> None:
    name, password = new_user(chat_server, "login")
    submit_login(page, chat_server, name, "not-" + password)
    expect(page.get_by_text("Unable to sign in")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("#chat-input")).to_have_count(0)

    page.locator("#password").fill(password)
    page.keyboard.press("Enter")
    wait_ready(page)
    expect(page).not_to_have_url(re.compile(r"/login"))
    expect(page.locator("#chat-profiles")).to_have_text("Assistant")
    starters = page.locator("#starters")
    for label in ("Do some arithmetic", "What time is it?", "Explain a concept"):
        expect(starters.get_by_text(label, exact=True)).to_be_visible()
    expect(page.locator("#starter-do-some-arithmetic")).to_be_visible()
    expect(starters.get_by_text("Write an email")).to_have_count(0)  # the Writer profile's starter


def test_repeated_failed_logins_are_refused_for_a_while_with_a_message(chat_server: Server, page: Page) -> None:
    name, password = new_user(chat_server, "guessed")
    with httpx.Client(base_url=chat_server.url, timeout=30) as http:
        for _ in range(5):
            assert http.post("/login", data={"username": name, "password": "guess"}).status_code == 401
        # Now even the right password is refused, with how long to wait.
        refused = http.post("/login", data={"username": name, "password": password})
        assert refused.status_code == 429 and not refused.cookies.get("access_token")
        assert refused.json()["detail"] == "Too many failed sign-ins. Wait a few minutes, then try again."
        assert 0 < int(refused.headers["retry-after"]) <= 15 * 60
    # The login page says so in words.
    submit_login(page, chat_server, name, password)
    expect(page.get_by_text("Too many failed sign-ins. Wait a few minutes, then try again.", exact=True)).to_be_visible()
    expect(page.locator("#chat-input")).to_have_count(0)
    # Other users sign in as usual.
    other, other_password = new_user(chat_server, "unaffected")
    page.locator("#email").fill(other)
    page.locator("#password").fill(other_password)
    page.keyboard.press("Enter")
    wait_ready(page)


# 2. Streaming ----------------------------------------------------------------------------------


def test_reply_streams_into_the_page(chat_server: Server, page: Page, model: ScriptedModel) -> None:
    name, password = new_user(chat_server, "stream")
    login(page, chat_server, name, password)
    full = " ".join(f"token{i}" for i in range(150))
    model.add_text(full, delay=0.02)  # ~3 s of streaming
    send(page, "Tell me something long")

    reply = messages(page, "assistant_message").last.locator(".message-content").first
    samples: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if messages(page, "assistant_message").count():
            text = reply.inner_text().strip()
            if text:
                samples.append(text)
                if text == full:
                    break
        page.wait_for_timeout(50)  # the sampling interval, not a wait for a condition
    partial = [s for s in samples if s != full]
    assert all(full.startswith(s) for s in partial), (
        f"a sample is not a prefix of the answer: {partial[:3]}"
    )
    lengths = sorted(set(map(len, partial)))
    assert len(lengths) >= 2, (
        f"expected the answer to grow while streaming, saw {len(lengths)} partial states"
    )
    assert [len(s) for s in partial] == sorted(len(s) for s in partial), (
        "the streamed answer shrank"
    )
    expect(reply).to_have_text(full)
    assert after_system(model.last_messages)[-1] == {
        "role": "user",
        "content": "Tell me something long",
    }


def test_words_held_back_to_coalesce_updates_show_before_the_answer_ends(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    """The chat sends at most 16 updates a second, holding back words that come sooner; those
    go out within that interval even when nothing follows for a while (here the model stalls
    for 30 s after them), not only when the answer ends."""
    name, password = new_user(chat_server, "held")
    login(page, chat_server, name, password)
    words = " ".join(f"word{i}" for i in range(12))
    # Twelve words 20 ms apart, then nothing: the chat sends an update with the first, then one
    # every 62.5 ms at most, so the last word or two always wait for the interval to end.
    model.add_hang(30.0, text_before=words, delay=0.02)
    send(page, "Start, then think for a while")
    reply = messages(page, "assistant_message").filter(has_text="word0")
    expect(reply).to_contain_text("word11", timeout=5_000)
    page.locator("#stop-button").click()
    expect(reply).to_contain_text("— stopped")


# 3. Tool calls ---------------------------------------------------------------------------------


def test_function_call_is_shown_as_a_step_with_arguments_and_result(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    name, password = new_user(chat_server, "tools")
    login(page, chat_server, name, password)
    model.add_tool_calls([{"name": "calculate", "arguments": '{"expression": "6*7"}'}])
    model.add_text("It is 42.")
    send(page, "What is 6 times 7?")

    expect(messages(page, "assistant_message").get_by_text("It is 42.")).to_be_visible()
    tool = messages(page, "tool").filter(has=page.locator("#step-calculate"))
    expect(tool).to_have_count(1)
    expect(tool.locator("#step-calculate")).to_have_text(re.compile(r"^\s*Used\s+calculate\s*$"))
    entries = step_types(page)
    assert index_of(entries, "user_message", "What is 6 times 7?") < index_of(
        entries, "tool", "calculate"
    )
    assert index_of(entries, "tool", "calculate") < index_of(
        entries, "assistant_message", "It is 42."
    )

    tool.locator("#step-calculate").click()
    sections = tool.locator(".message-content")
    expect(sections).to_have_count(2)  # input, then output
    # Each section is a JSON code block (a "json" label, then the code).
    expect(sections.nth(0).locator("code")).to_contain_text('"expression": "6*7"')
    expect(sections.nth(1).locator("code")).to_have_text("42")

    # The model got the tool's result on its second request.
    bodies = chat_requests(model)
    assert len(bodies) == 2
    tool_messages = [m for m in bodies[1]["messages"] if m["role"] == "tool"]
    assert [text_of(m) for m in tool_messages] == ["42"]


def test_code_step_shows_code_logs_and_image_live_and_after_reload(
    chat_server: Server, page: Page, model: ScriptedModel, tmp_path: Path
) -> None:
    name, password = new_user(chat_server, "coder")
    login(page, chat_server, name, password)
    csv = tmp_path / "points.csv"
    csv.write_text("x,y\n1,2\n3,4\n")
    page.set_input_files("#upload-button-input", str(csv))
    expect(page.locator("#attachments").get_by_text("points.csv")).to_be_visible()
    code = (
        "import pandas as pd\nimport matplotlib.pyplot as plt\n"
        "df = pd.read_csv('points.csv')\nprint('total', df.y.sum())\n"
        "df.plot(x='x', y='y')\nplt.show()\n"
        "df.to_csv('doubled.csv', index=False)"
    )
    model.add_tool_calls([{"name": "code_interpreter", "arguments": json.dumps({"code": code})}])
    model.add_text("Here is the chart.")
    send(page, "Plot my points")

    expect(messages(page, "assistant_message").get_by_text("Here is the chart.")).to_be_visible()
    session_ui_id = thread_id(page)

    def check_code_step() -> None:
        tool = messages(page, "tool").filter(has=page.locator("#step-Python"))
        expect(tool).to_have_count(1)
        tool.locator("#step-Python").click()
        sections = tool.locator(".message-content")
        expect(sections.nth(0).locator("code")).to_contain_text("pd.read_csv('points.csv')")
        expect(sections.nth(1).locator("code")).to_contain_text("total 6")
        image = tool.locator("img.inline-image")  # the step's avatar is an image too
        expect(image).to_have_count(1)
        expect(image).to_be_visible()
        # The picture really loaded through the authenticated file route.
        page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=image.element_handle())
        # The file the code wrote is offered for download inside the step.
        written = tool.locator("a").filter(has_text="doubled.csv")
        expect(written).to_have_count(1)
        href = written.get_attribute("href") or ""
        download = page.context.request.get(href if href.startswith("http") else chat_server.url + href)
        assert download.status == 200 and download.body() == b"x,y\n1,2\n3,4\n"

    check_code_step()
    # The file went to the kernel: the model got the logs back.
    tool_messages = [m for m in chat_requests(model)[-1]["messages"] if m["role"] == "tool"]
    assert "total 6" in text_of(tool_messages[-1])

    page.goto(chat_server.url)
    wait_ready(page)
    page.locator(f"#thread-{session_ui_id}").click()
    expect(page).to_have_url(re.compile(f"/thread/{session_ui_id}$"))
    expect(messages(page, "assistant_message").get_by_text("Here is the chart.")).to_be_visible()
    check_code_step()


def test_an_uploaded_document_is_searched_and_the_answer_cites_it(
    chat_server: Server, new_context: NewContext, model: ScriptedModel, tmp_path: Path
) -> None:
    page = new_context().new_page()
    name, password = new_user(chat_server, "reader")
    login(page, chat_server, name, password)
    notes = tmp_path / "kettle.md"
    notes.write_text("# Kettle\n\nDescale the kettle every month with white vinegar and water.\n")
    page.set_input_files("#upload-button-input", str(notes))
    expect(page.locator("#attachments").get_by_text("kettle.md")).to_be_visible()
    model.add_tool_calls([{"name": "file_search", "arguments": json.dumps({"query": "descale kettle"})}])
    model.add_text("Descale it every month [1]. Ask about [7] too.")
    send(page, "How often should I descale?")

    answer = messages(page, "assistant_message").filter(has_text="Descale it every month")
    expect(answer).to_contain_text("Descale it every month [1]. Ask about [7] too.")
    # The cited marker is a link to its source; `[7]` names no result and stays plain text.
    expect(answer.locator("a", has_text="[1]")).to_have_count(1)
    expect(answer.locator("a")).to_have_count(1)
    check_citation_panel(page, answer, notes, chat_server.url)
    search = messages(page, "tool").filter(has=page.locator("#step-File\\ search"))
    expect(search).to_have_count(1)
    search.locator("#step-File\\ search").click()
    sections = search.locator(".message-content")
    expect(sections.nth(0)).to_contain_text("descale kettle")
    expect(sections.nth(1)).to_contain_text("[1] kettle.md")
    expect(sections.nth(1)).to_contain_text("white vinegar")
    # The model read the passage under the marker it cites.
    tool_messages = [m for m in chat_requests(model)[-1]["messages"] if m["role"] == "tool"]
    assert text_of(tool_messages[-1]).startswith("[1] kettle.md")

    # After a reload the session is restored and the marker still opens its source.
    session_ui_id = thread_id(page)
    page.goto(chat_server.url)
    wait_ready(page)
    page.locator(f"#thread-{session_ui_id}").click()
    expect(page).to_have_url(re.compile(f"/thread/{session_ui_id}$"))
    answer = messages(page, "assistant_message").filter(has_text="Descale it every month")
    expect(answer.locator("a", has_text="[1]")).to_have_count(1)
    check_citation_panel(page, answer, notes, chat_server.url)

    # The source belongs to the reader: another user gets nothing of it.
    href = answer.locator("a", has_text="[1]").get_attribute("href")
    assert href is not None and href.startswith("/assistants/citations/msg_")
    other, other_pw = new_user(chat_server, "other")
    other_page = new_context().new_page()
    login(other_page, chat_server, other, other_pw)
    for accept in ("application/json", "text/html"):
        response = other_page.context.request.get(chat_server.url + href, headers={"accept": accept})
        assert response.status == 404
        assert b"vinegar" not in response.body() and b"kettle" not in response.body()


def test_word_and_pdf_documents_are_cited_and_an_unreadable_one_is_named_with_its_reason(
    chat_server: Server, page: Page, model: ScriptedModel, tmp_path: Path
) -> None:
    """A Word document and a PDF made here, sent with a Word file that is no Word document inside:
    the answer cites the two (each marker opens its own file's passage), and the chat says which
    file could not be read, and why."""
    name, password = new_user(chat_server, "documents")
    login(page, chat_server, name, password)
    report = tmp_path / "report.docx"
    report.write_bytes(make_docx())
    manual = tmp_path / "manual.pdf"
    manual.write_bytes(make_pdf("Hold the reset button for ten seconds to restore the factory settings."))
    broken = tmp_path / "broken.docx"
    with zipfile.ZipFile(broken, "w") as archive:  # a zip archive, but no Word document in it
        archive.writestr("notes.txt", "nothing to see")
    page.set_input_files("#upload-button-input", [str(report), str(manual), str(broken)])
    for uploaded in ("report.docx", "manual.pdf", "broken.docx"):
        expect(page.locator("#attachments").get_by_text(uploaded)).to_be_visible()
    model.add_tool_calls([{"name": "file_search", "arguments": json.dumps({"query": "northern revenue reset button"})}])
    model.add_text("Revenue grew in the north [1]; hold reset for ten seconds [2].")
    send(page, "What do my documents say?")

    answer = messages(page, "assistant_message").filter(has_text="Revenue grew in the north")
    expect(answer.locator("a", has_text="[1]")).to_have_count(1)
    expect(answer.locator("a", has_text="[2]")).to_have_count(1)
    # The search step names both readable files; the model read their passages.
    search = messages(page, "tool").filter(has=page.locator("#step-File\\ search"))
    search.locator("#step-File\\ search").click()
    found = search.locator(".message-content").nth(1)
    expect(found).to_contain_text("report.docx")
    expect(found).to_contain_text("manual.pdf")
    passages = text_of([m for m in chat_requests(model)[-1]["messages"] if m["role"] == "tool"][-1])
    assert "Revenue grew in the northern region." in passages and "Hold the reset button" in passages
    cited = {
        # "[1] report.docx (score 0.25)", then the passage
        marker: passages.split(f"[{marker}] ", 1)[1].split(" (score", 1)[0]
        for marker in (1, 2)
    }
    for marker in (1, 2):
        answer.locator("a", has_text=f"[{marker}]").click()
        panel = page.locator("#citation-panel")
        expect(panel.locator(".citation-title")).to_have_text(f"[{marker}] {cited[marker]}")
        page.keyboard.press("Escape")
        expect(panel).to_have_count(0)
    assert sorted(cited.values()) == ["manual.pdf", "report.docx"]

    notice = messages(page, "assistant_message").filter(has_text="could not be read for file search")
    expect(notice).to_contain_text("broken.docx")
    expect(notice).to_contain_text("broken.docx is not a readable Word document")
    expect(notice).not_to_contain_text("report.docx")
    expect(notice).not_to_contain_text("manual.pdf")


def check_citation_panel(page: Page, answer: Locator, document: Path, base_url: str) -> None:
    """Clicking the answer's `[1]` opens the cited passage in a side panel with a link to the file."""
    answer.locator("a", has_text="[1]").click()
    panel = page.locator("#citation-panel")
    expect(panel).to_be_visible()
    expect(panel.locator(".citation-title")).to_have_text("[1] kettle.md")
    expect(panel.locator(".citation-passage")).to_contain_text("Descale the kettle every month with white vinegar")
    expect(panel).to_contain_text("descale kettle")
    # The click opened no new tab.
    assert len(page.context.pages) == 1
    link = panel.get_by_role("link", name="Open kettle.md")
    href = link.get_attribute("href")
    assert href is not None and re.fullmatch(r"/assistants/files/file-\w+", href)
    download = page.context.request.get(base_url + href)
    assert download.status == 200 and download.body() == document.read_bytes()
    # Escape closes the panel.
    page.keyboard.press("Escape")
    expect(panel).to_have_count(0)


# 4. Uploads ------------------------------------------------------------------------------------


def test_upload_shows_a_chip_and_disallowed_types_are_refused(
    chat_server: Server, page: Page, model: ScriptedModel, tmp_path: Path
) -> None:
    name, password = new_user(chat_server, "upload")
    login(page, chat_server, name, password)
    csv = tmp_path / "numbers.csv"
    csv.write_text("x,y\n1,2\n3,4\n")
    page.set_input_files("#upload-button-input", str(csv))
    expect(page.locator("#attachments").get_by_text("numbers.csv")).to_be_visible()
    model.add_text("Thanks for the numbers.")
    send(page, "Here are my numbers")

    expect(
        messages(page, "assistant_message").get_by_text("Thanks for the numbers.")
    ).to_be_visible()
    user_message = messages(page, "user_message").filter(has_text="Here are my numbers")
    chip = user_message.locator("a.inline-file")
    expect(chip).to_have_count(1)
    expect(chip).to_contain_text("numbers.csv")
    expect(chip).to_have_attribute("download", "numbers.csv")
    expect(page.locator("#attachments")).to_have_count(0)  # the composer was emptied
    assert after_system(model.last_messages)[-1]["role"] == "user"
    assert "Here are my numbers" in text_of(after_system(model.last_messages)[-1])
    expect(page.get_by_text("Not attached")).to_have_count(0)

    # A zip archive is outside the accept list: the browser refuses it before any upload.
    script = tmp_path / "install.zip"
    script.write_bytes(b"PK\x03\x04 zipped")
    page.set_input_files("#upload-button-input", str(script))
    toast = page.locator("[data-sonner-toast]").filter(has_text="File type must be")
    expect(toast).to_be_visible()
    expect(toast).to_contain_text(".csv")
    expect(page.locator("#attachments")).to_have_count(0)
    requests_before = len(chat_requests(model))
    model.add_text("No files this time.")
    send(page, "Did the script arrive?")
    expect(messages(page, "assistant_message").get_by_text("No files this time.")).to_be_visible()
    expect(
        messages(page, "user_message").filter(has_text="Did the script arrive?").locator("a")
    ).to_have_count(0)
    assert len(chat_requests(model)) == requests_before + 1
    assert "install.zip" not in json.dumps(model.last_messages)

    # Source code, named as Chromium on Linux names it, is accepted all the way.
    code = [
        ("build.sh", "application/x-shellscript"),
        ("tool.rb", "application/x-ruby"),
        ("conf.yaml", "application/yaml"),
        ("lib.ts", "video/mp2t"),
        ("app.py", "text/x-python"),
    ]
    page.set_input_files(
        "#upload-button-input",
        files=[{"name": n, "mimeType": t, "buffer": f"# {n}\nprint('hi')\n".encode()} for n, t in code],
    )
    for n, _ in code:
        expect(page.locator("#attachments").get_by_text(n)).to_be_visible()
    model.add_text("Code received.")
    send(page, "Here is my code")
    expect(messages(page, "assistant_message").get_by_text("Code received.")).to_be_visible()
    expect(page.get_by_text("Not attached")).to_have_count(0)
    # (Live, Chainlit's page draws a file it thinks is a video as a player, not a chip.) Reopened,
    # the message shows every file as stored.
    thread_id(page)
    page.reload()
    chips = messages(page, "user_message").filter(has_text="Here is my code").locator("a.inline-file")
    expect(chips).to_have_count(len(code))
    assert sorted(t.split()[-1] for t in chips.all_inner_texts()) == sorted(n for n, _ in code)


# 5. Context mode -------------------------------------------------------------------------------


def test_last_n_setting_limits_what_the_model_receives(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    name, password = new_user(chat_server, "context")
    login(page, chat_server, name, password)
    for i in range(2):
        send(page, f"message {i}")
        expect(
            messages(page, "assistant_message").get_by_text(f"echo: message {i}", exact=True)
        ).to_be_visible()
    # Full history so far: both user messages and the first answer.
    assert [m["content"] for m in after_system(model.last_messages)] == [
        "message 0",
        "echo: message 0",
        "message 1",
    ]

    set_last_n(page, 2)
    send(page, "message 2")
    expect(
        messages(page, "assistant_message").get_by_text("echo: message 2", exact=True)
    ).to_be_visible()
    assert after_system(model.last_messages) == [
        {"role": "assistant", "content": "echo: message 1"},
        {"role": "user", "content": "message 2"},
    ]
    expect(messages(page, "run").last).to_contain_text("last-N")


# 6. Resuming a session -------------------------------------------------------------------------


def have_a_conversation(page: Page, model: ScriptedModel, tmp_path: Path) -> tuple[str, bytes]:
    """On a logged-in page: Last N = 2, then a `calculate` tool call answered "It is 42.", then a
    CSV upload answered "Lyon noted.". Returns the session's id in the UI and the CSV's bytes."""
    set_last_n(page, 2)  # before the first message: kept for the session that message opens

    model.add_tool_calls([{"name": "calculate", "arguments": '{"expression": "6*7"}'}])
    model.add_text("It is 42.")
    send(page, "What is 6 times 7?")
    expect(messages(page, "assistant_message").get_by_text("It is 42.")).to_be_visible()
    session_ui_id = thread_id(page)

    csv_bytes = b"city,population\nLyon,522000\n"
    csv = tmp_path / "cities.csv"
    csv.write_bytes(csv_bytes)
    page.set_input_files("#upload-button-input", str(csv))
    expect(page.locator("#attachments").get_by_text("cities.csv")).to_be_visible()
    model.add_text("Lyon noted.")
    send(page, "Here is a table")
    expect(messages(page, "assistant_message").get_by_text("Lyon noted.")).to_be_visible()
    # Last N = 2 applied from the first run on: the third request saw only two messages.
    assert len(after_system(model.last_messages)) == 2
    return session_ui_id, csv_bytes


def check_reopened_session(page: Page, srv: Server, model: ScriptedModel, session_ui_id: str, csv_bytes: bytes) -> str:
    """Open `srv` in a fresh page and the session from the sidebar: its messages, tool step, file
    and settings are all back, and a new message continues it. Returns the file's download URL."""
    page.goto(srv.url)
    wait_ready(page)
    expect(messages(page, "user_message")).to_have_count(0)
    item = page.locator(f"#thread-{session_ui_id}")
    expect(item).to_contain_text("What is 6 times 7?")
    item.click()
    expect(page).to_have_url(re.compile(f"/thread/{session_ui_id}$"))

    expect(messages(page, "user_message").filter(has_text="What is 6 times 7?")).to_have_count(1)
    expect(messages(page, "assistant_message").get_by_text("It is 42.")).to_be_visible()
    expect(messages(page, "assistant_message").get_by_text("Lyon noted.")).to_be_visible()
    tool = messages(page, "tool").filter(has=page.locator("#step-calculate"))
    expect(tool).to_have_count(1)
    entries = step_types(page)
    order = [
        index_of(entries, "user_message", "What is 6 times 7?"),
        index_of(entries, "tool", "calculate"),
        index_of(entries, "assistant_message", "It is 42."),
        index_of(entries, "user_message", "Here is a table"),
        index_of(entries, "assistant_message", "Lyon noted."),
    ]
    assert order == sorted(order), entries
    tool.locator("#step-calculate").click()
    expect(tool.locator(".message-content").nth(0).locator("code")).to_contain_text(
        '"expression": "6*7"'
    )
    expect(tool.locator(".message-content").nth(1).locator("code")).to_have_text("42")

    chip = (
        messages(page, "user_message").filter(has_text="Here is a table").locator("a.inline-file")
    )
    expect(chip).to_have_count(1)
    expect(chip).to_contain_text("cities.csv")
    href = chip.get_attribute("href")
    assert href and re.search(r"/assistants/files/file[-_][A-Za-z0-9]+$", href), href
    download_url = href if href.startswith("http") else srv.url + href
    download = page.context.request.get(download_url)
    assert download.status == 200, download.text()
    assert download.body() == csv_bytes
    assert "cities.csv" in download.headers.get("content-disposition", "")

    # The settings came back with the session.
    wait_ready(page)
    page.locator("#chat-settings-open-modal").click()
    dialog = page.locator("#chat-settings")
    expect(dialog.locator("#context_mode")).to_have_text("Last N messages")
    expect(dialog.locator("#context_n [role=slider]")).to_have_attribute("aria-valuenow", "2")

    # And the resumed session keeps working with them: the model gets the last two messages of
    # the same thread (the earlier answer included), not a new conversation nor the whole history.
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    send(page, "Still there?")
    expect(
        messages(page, "assistant_message").get_by_text("echo: Still there?", exact=True)
    ).to_be_visible()
    assert after_system(model.last_messages) == [
        {"role": "assistant", "content": "Lyon noted."},
        {"role": "user", "content": "Still there?"},
    ]
    return download_url


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_reopened_session_shows_messages_tool_step_file_and_settings(
    backend: str, request: pytest.FixtureRequest, page: Page, model: ScriptedModel, tmp_path: Path
) -> None:
    srv: Server = request.getfixturevalue(
        "chat_server" if backend == "sqlite" else "chat_server_pg"
    )
    name, password = new_user(srv, "resume")
    login(page, srv, name, password)
    session_ui_id, csv_bytes = have_a_conversation(page, model, tmp_path)
    check_reopened_session(page, srv, model, session_ui_id, csv_bytes)


def test_a_long_session_reopens_at_its_latest_turns_and_shows_earlier_ones_in_place(
    chat_server: Server, new_context: NewContext, model: ScriptedModel
) -> None:
    """23 turns (one in the chat, 22 more through `/v1` on the same thread): reopened, the chat
    shows the latest ten under a note; its buttons bring back ten more, then all of them, tool
    step included, in place; the note's link opens every turn on one page, for the owner only."""
    name, password = new_user(chat_server, "long")
    page = new_context().new_page()
    login(page, chat_server, name, password)
    model.add_tool_calls([{"name": "calculate", "arguments": '{"expression": "2+2"}'}])
    model.add_text("Four, first of all.")
    send(page, "Turn 0: what is 2+2?")
    expect(messages(page, "assistant_message").get_by_text("Four, first of all.")).to_be_visible()
    ui = thread_id(page)
    chat_server.keys[name] = chat_server.cli("keys", "create", name).strip().splitlines()[-1]
    api = sdk_client(chat_server, name)
    found = httpx.get(
        f"{chat_server.api_url}/threads",
        params={"metadata[ui_thread]": ui},
        headers={"Authorization": f"Bearer {chat_server.keys[name]}"},
        timeout=10,
    ).json()["data"]
    [thread] = found
    for turn in range(1, 23):
        api.beta.threads.messages.create(thread_id=thread["id"], role="user", content=f"Turn {turn} question")
        run = api.beta.threads.runs.create_and_poll(
            thread_id=thread["id"], assistant_id=thread["metadata"]["assistant_id"], poll_interval_ms=50
        )
        assert run.status == "completed", run.last_error

    def shown_turns() -> list[str]:
        return [
            text.splitlines()[0]
            for text in messages(page, "user_message").all_inner_texts()
        ]

    page.goto(f"{chat_server.url}/thread/{ui}")
    note = messages(page, "assistant_message").filter(has_text="Earlier turns")
    expect(note).to_contain_text("Showing the latest 10 of 23 turns")
    expect(messages(page, "assistant_message").get_by_text("echo: Turn 22 question", exact=True)).to_be_visible()
    expect(messages(page, "user_message")).to_have_count(10)
    assert shown_turns() == [f"Turn {turn} question" for turn in range(13, 23)]
    # (The sidebar still names the session by its first message.)
    for hidden in ("Turn 0: what is 2+2?", "Turn 12 question", "Four, first of all."):
        expect(page.locator("[data-step-type]").filter(has_text=hidden)).to_have_count(0)
    expect(page.locator("#step-calculate")).to_have_count(0)

    link = note.get_by_role("link", name="Read the whole conversation")
    href = link.get_attribute("href")
    assert href == f"/assistants/transcripts/{ui}", href
    whole = page.context.new_page()
    whole.goto(chat_server.url + href)
    body = whole.locator("body")
    expect(body).to_contain_text("Turn 0: what is 2+2?")
    expect(body).to_contain_text("Four, first of all.")
    expect(body).to_contain_text("calculate")
    for turn in range(1, 23):
        expect(body).to_contain_text(f"echo: Turn {turn} question")
    whole.close()

    # Ten more, in place.
    page.get_by_role("button", name="Show 10 earlier turns").click()
    expect(note).to_contain_text("Showing the latest 20 of 23 turns")
    expect(messages(page, "user_message")).to_have_count(20)
    assert shown_turns() == [f"Turn {turn} question" for turn in range(3, 23)]
    expect(page.get_by_role("button", name="Show 10 earlier turns")).to_have_count(0)
    expect(page.get_by_role("button", name="Show all 23 turns")).to_have_count(0)

    def everything_is_shown() -> None:
        """The first turn with its tool step, and no note or buttons left."""
        expect(messages(page, "user_message")).to_have_count(23)
        assert shown_turns() == ["Turn 0: what is 2+2?"] + [f"Turn {turn} question" for turn in range(1, 23)]
        expect(messages(page, "assistant_message").get_by_text("Four, first of all.")).to_be_visible()
        expect(page.locator("#step-calculate")).to_have_count(1)
        expect(note).to_have_count(0)
        expect(page.get_by_role("button", name=re.compile("^Show (all|\\d+ earlier)"))).to_have_count(0)

    page.get_by_role("button", name="Show 3 earlier turns").click()
    everything_is_shown()

    # Reopened again, the chat starts from the latest ten; "Show all" brings everything at once.
    page.reload()
    expect(note).to_contain_text("Showing the latest 10 of 23 turns")
    page.get_by_role("button", name="Show all 23 turns").click()
    everything_is_shown()

    # The session goes on from there.
    send(page, "Turn 23 question")
    expect(messages(page, "assistant_message").get_by_text("echo: Turn 23 question", exact=True)).to_be_visible()

    # Another user gets nothing of it.
    stranger, stranger_pw = new_user(chat_server, "stranger")
    other = new_context().new_page()
    login(other, chat_server, stranger, stranger_pw)
    refused = other.context.request.get(chat_server.url + href)
    assert refused.status == 404
    assert b"Turn 0" not in refused.body()


def test_a_chat_reloaded_while_its_answer_is_written_says_so_and_the_next_message_waits(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    """Reloaded mid-answer, the page shows the answer so far and says it is still being written
    (in the thread Chainlit draws, not in a message it would draw over); a message sent then is
    answered once that run ends."""
    name, password = new_user(chat_server, "reload")
    login(page, chat_server, name, password)
    model.add_hang(12, "Thinking it over")  # longer than the checkpoint and the reload take, even on a busy machine
    send(page, "Think slowly")
    expect(messages(page, "assistant_message").filter(has_text="Thinking it over")).to_have_count(1)
    ui = thread_id(page)
    # The words shown are stored within a second (answer checkpoints); wait for that, as the
    # transcript page shows it.
    deadline = time.monotonic() + 15
    while "Thinking it over" not in page.context.request.get(f"{chat_server.url}/assistants/transcripts/{ui}").text():
        assert time.monotonic() < deadline, "the streamed words were not stored"
        time.sleep(0.1)
    page.reload()
    expect(messages(page, "assistant_message").filter(has_text="still being written")).to_have_count(1)
    expect(messages(page, "assistant_message").filter(has_text="Thinking it over")).to_have_count(1)
    model.add_text("Here I am.")
    send(page, "Are you there?")
    expect(messages(page, "assistant_message").get_by_text("Here I am.", exact=True)).to_be_visible(timeout=30_000)
    expect(page.get_by_text("while a run")).to_have_count(0)


def test_a_run_waiting_for_client_tools_is_shown_on_reopening_and_ended_by_the_next_message(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    """A run started through `/v1` on a chat session waits for a function only a client can run:
    the reopened chat says what it waits for, and the next message ends that run and is answered."""
    name, password = new_user(chat_server, "client-tools")
    login(page, chat_server, name, password)
    model.add_text("Hello there.")
    send(page, "Hello")
    expect(messages(page, "assistant_message").get_by_text("Hello there.", exact=True)).to_be_visible()
    ui = thread_id(page)
    chat_server.keys[name] = chat_server.cli("keys", "create", name).strip().splitlines()[-1]
    api = sdk_client(chat_server, name)
    [thread] = httpx.get(
        f"{chat_server.api_url}/threads",
        params={"metadata[ui_thread]": ui},
        headers={"Authorization": f"Bearer {chat_server.keys[name]}"},
        timeout=10,
    ).json()["data"]
    lookup = {"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object", "properties": {"order": {"type": "string"}}}}}
    model.add_tool_calls([{"name": "lookup_order", "arguments": '{"order": "A-17"}'}])
    run = api.beta.threads.runs.create_and_poll(
        thread_id=thread["id"], assistant_id=thread["metadata"]["assistant_id"], tools=[lookup], poll_interval_ms=50
    )
    assert run.status == "requires_action"

    page.reload()
    note = messages(page, "assistant_message").filter(has_text="waiting for tools that only a client application can run")
    expect(note).to_contain_text('lookup_order({"order": "A-17"})')
    model.add_text("Carrying on.")
    send(page, "Never mind the order")
    expect(messages(page, "assistant_message").get_by_text("Carrying on.", exact=True)).to_be_visible()
    ended = messages(page, "assistant_message").filter(has_text="This chat cannot run them, so the run was ended")
    expect(ended).to_contain_text("lookup_order")
    expect(page.get_by_text("while a run")).to_have_count(0)
    assert api.beta.threads.runs.retrieve(run_id=run.id, thread_id=thread["id"]).status == "cancelled"

    # The chat's own run asks for such a tool (the assistant was given one through `/v1`): the
    # chat lists the call at once and ends the run, and the next message is answered.
    assistant = api.beta.assistants.retrieve(thread["metadata"]["assistant_id"])
    api.beta.assistants.update(assistant.id, tools=[*[t.model_dump(exclude_none=True) for t in assistant.tools], lookup])
    model.add_tool_calls([{"name": "lookup_order", "arguments": '{"order": "B-2"}'}])
    send(page, "Look up order B-2")
    live = messages(page, "assistant_message").filter(has_text='lookup_order({"order": "B-2"})')
    expect(live).to_contain_text("This chat cannot run them, so the run was ended")
    # The call's step shows how it ended, not a pending "…".
    call = messages(page, "tool").filter(has=page.locator("#step-lookup_order"))
    expect(call).to_have_count(2)  # the /v1 run's (reopened) and this one's
    call.last.locator("#step-lookup_order").click()
    expect(call.last.locator(".message-content").nth(1)).to_contain_text("(stopped)")
    model.add_text("Fine.")
    send(page, "Thanks anyway")
    expect(messages(page, "assistant_message").get_by_text("Fine.", exact=True)).to_be_visible()
    statuses = [r.status for r in api.beta.threads.runs.list(thread_id=thread["id"], limit=2).data]
    assert statuses == ["completed", "cancelled"], statuses


def test_a_database_failure_is_shown_in_plain_words_and_the_chat_goes_on_after_it(
    chat_server_pg: Server, page: Page, model: ScriptedModel
) -> None:
    """PostgreSQL refuses every new message for a while (a constraint added under the running
    server): the chat says something went wrong on our side, shows no SQL and no error text, and
    once the database accepts messages again the next one is answered."""
    srv = chat_server_pg
    name, password = new_user(srv, "dbfault")
    login(page, srv, name, password)
    model.add_text("First answer.")
    send(page, "First question")
    expect(messages(page, "assistant_message").get_by_text("First answer.", exact=True)).to_be_visible()
    dsn = srv.env["ASSISTANTS_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")

    async def alter(statement: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    run_async(alter("ALTER TABLE messages ADD CONSTRAINT refuse_new_rows CHECK (false) NOT VALID"))
    try:
        send(page, "Second question")
        failure = messages(page, "assistant_message").filter(has_text="Something went wrong on our side")
        expect(failure).to_have_count(1)
        body = page.locator("body")
        for leaked in ("refuse_new_rows", "INSERT", "violates", "IntegrityError", "sqlalchemy", "Traceback"):
            expect(body).not_to_contain_text(leaked)
    finally:
        run_async(alter("ALTER TABLE messages DROP CONSTRAINT refuse_new_rows"))
    model.add_text("Third answer.")
    send(page, "Third question")
    expect(messages(page, "assistant_message").get_by_text("Third answer.", exact=True)).to_be_visible()


@pytest.fixture
def two_chat_servers(
    scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    """Two chat servers as behind a load balancer: one PostgreSQL database, one data folder."""
    with instances_on_new_postgres(tmp_path_factory.mktemp("chat-instances"), scripted_model.base_url) as (first, second):
        yield first, second


def test_a_session_started_on_one_instance_resumes_on_another(
    two_chat_servers: tuple[Server, Server], new_context: NewContext, model: ScriptedModel, tmp_path: Path
) -> None:
    a, b = two_chat_servers
    name, password = new_user(a, "roaming")
    page = new_context().new_page()
    login(page, a, name, password)
    session_ui_id, csv_bytes = have_a_conversation(page, model, tmp_path)

    # A goes away, with its path to the shared folder (another host would not have it), and the
    # load balancer sends the user to B. The browser keeps its login cookie (cookies do not depend
    # on the port, as they would not on a balanced host name) and B accepts it: no second login.
    # Everything B shows comes from the database and the shared folder.
    a.stop()
    Path(a.env["ASSISTANTS_DATA_DIR"]).unlink()
    download_url = check_reopened_session(page, b, model, session_ui_id, csv_bytes)
    expect(page).to_have_url(re.compile(f"^{re.escape(b.url)}/thread/{session_ui_id}$"))

    # B continued the engine thread A started: one thread holds the whole conversation.
    key = {"Authorization": f"Bearer {b.cli('keys', 'create', name).strip().splitlines()[-1]}"}
    found = httpx.get(f"{b.api_url}/threads", params={"metadata[ui_thread]": session_ui_id}, headers=key, timeout=10)
    [engine_thread] = found.json()["data"]
    stored = httpx.get(
        f"{b.api_url}/threads/{engine_thread['id']}/messages", params={"order": "asc"}, headers=key, timeout=10
    ).json()["data"]
    assert [(m["role"], m["content"][0]["text"]["value"]) for m in stored] == [
        ("user", "What is 6 times 7?"),
        ("assistant", "It is 42."),
        ("user", "Here is a table"),
        ("assistant", "Lyon noted."),
        ("user", "Still there?"),
        ("assistant", "echo: Still there?"),
    ]

    # Another user on B cannot open the session by its URL, nor download its file.
    other, other_password = new_user(b, "intruder")
    other_page = new_context().new_page()
    login(other_page, b, other, other_password)
    expect_thread_refused(other_page, b, session_ui_id, "What is 6 times 7?", "It is 42.", "cities.csv")
    response = other_page.context.request.get(download_url)
    assert response.status == 404 and b"Lyon" not in response.body()


def expect_thread_refused(page: Page, srv: Server, thread: str, *hidden: str) -> None:
    """Opening another user's session by its URL is refused (Chainlit says so and sends the page
    back to a new chat), and nothing of it shows."""
    page.goto(f"{srv.url}/thread/{thread}")
    expect(page.get_by_text("Couldn't resume chat")).to_be_visible()
    expect(page).not_to_have_url(re.compile(thread))
    body = page.locator("body")
    for text in hidden:
        expect(body).not_to_contain_text(text)
    expect(messages(page, "user_message")).to_have_count(0)
    expect(page.locator(f"#thread-{thread}")).to_have_count(0)


# 7. Stopping -----------------------------------------------------------------------------------


def test_stop_keeps_the_partial_answer_and_the_next_message_is_answered(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    name, password = new_user(chat_server, "stop")
    login(page, chat_server, name, password)
    model.add_text(" ".join(f"slow{i}" for i in range(300)), delay=0.2)  # a minute if not stopped
    send(page, "Tell me a very long story")
    # Pinned by its text: Chainlit adds its own "Task manually stopped." message after it.
    reply = messages(page, "assistant_message").filter(has_text="slow0")
    expect(reply).to_contain_text("slow2")
    page.locator("#stop-button").click()

    expect(reply).to_contain_text("— stopped")
    assert model.wait_for(lambda m: m.disconnects >= 1, timeout=10), (
        "the provider stream was not closed"
    )
    stopped_text = reply.inner_text()
    assert "slow2" in stopped_text and "slow299" not in stopped_text
    expect(page.locator("#chat-submit")).to_be_visible()

    model.add_text("Right away.")
    started = time.monotonic()
    send(page, "Something short instead")
    expect(
        messages(page, "assistant_message").get_by_text("Right away.", exact=True)
    ).to_be_visible(timeout=5_000)
    assert time.monotonic() - started < 5
    expect(page.get_by_text("⚠️")).to_have_count(0)
    expect(page.get_by_text(re.compile("active run", re.I))).to_have_count(0)
    assert after_system(model.last_messages)[-1] == {
        "role": "user",
        "content": "Something short instead",
    }
    # The stopped answer did not grow afterwards.
    assert "slow299" not in reply.inner_text()


# 8. Isolation between users --------------------------------------------------------------------


def test_another_user_cannot_open_the_session_or_its_files(
    chat_server: Server, new_context: NewContext, model: ScriptedModel, tmp_path: Path
) -> None:
    alice, alice_pw = new_user(chat_server, "alice")
    bob, bob_pw = new_user(chat_server, "bob")

    alice_page = new_context().new_page()
    login(alice_page, chat_server, alice, alice_pw)
    secret = tmp_path / "secret.csv"
    secret.write_bytes(b"account,balance\nalice,1000000\n")
    alice_page.set_input_files("#upload-button-input", str(secret))
    expect(alice_page.locator("#attachments").get_by_text("secret.csv")).to_be_visible()
    model.add_text("Your secret is safe.")
    send(alice_page, "Alice's private question")
    expect(
        messages(alice_page, "assistant_message").get_by_text("Your secret is safe.")
    ).to_be_visible()
    alice_thread = thread_id(alice_page)
    key = chat_server.cli("keys", "create", alice).strip().splitlines()[-1]
    files = httpx.get(
        f"{chat_server.api_url}/files", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()
    [file_id] = [f["id"] for f in files["data"] if f["filename"] == "secret.csv"]
    # Control: with Alice's own cookies the file downloads.
    own = alice_page.context.request.get(f"{chat_server.url}/assistants/files/{file_id}")
    assert own.status == 200 and own.body() == secret.read_bytes()

    bob_context = new_context()
    bob_page = bob_context.new_page()
    login(bob_page, chat_server, bob, bob_pw)
    send(bob_page, "Bob's own question")
    expect(
        messages(bob_page, "assistant_message").get_by_text("echo: Bob's own question")
    ).to_be_visible()
    bob_thread = thread_id(bob_page)
    # Bob's sidebar lists his session and not Alice's.
    expect(bob_page.locator(f"#thread-{bob_thread}")).to_be_visible()
    expect(bob_page.locator(f"#thread-{alice_thread}")).to_have_count(0)
    expect(bob_page.locator("#thread-history")).not_to_contain_text("Alice's private question")

    expect_thread_refused(
        bob_page, chat_server, alice_thread, "Alice's private question", "Your secret is safe.", "secret.csv"
    )
    # Chainlit refuses the socket for a foreign thread id and the page stays disconnected
    # ("Could not reach the server") until it is reloaded; after that Bob chats normally.
    bob_page.goto(chat_server.url)
    wait_ready(bob_page)
    send(bob_page, "Bob again")
    expect(
        messages(bob_page, "assistant_message").get_by_text("echo: Bob again", exact=True)
    ).to_be_visible()
    expect(bob_page.locator("body")).not_to_contain_text("Alice's private question")

    response = bob_context.request.get(f"{chat_server.url}/assistants/files/{file_id}")
    assert response.status == 404
    assert b"1000000" not in response.body()


def test_an_answer_cannot_make_the_browser_fetch_an_outside_image(chat_server: Server, page: Page, model: ScriptedModel) -> None:
    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    outside = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=outside.serve_forever, daemon=True).start()
    try:
        leak = f"http://127.0.0.1:{outside.server_address[1]}/leak.png?secret=swordfish"
        # The page itself is served with the policy that forbids it.
        policy = httpx.get(chat_server.url + "/", timeout=10).headers["content-security-policy"]
        assert "img-src 'self' data: blob:" in policy
        name, password = new_user(chat_server, "exfil")
        login(page, chat_server, name, password)
        model.add_text(f"Here is a picture ![chart]({leak}) for you.")
        send(page, "Show me something")
        answer = messages(page, "assistant_message").filter(has_text="Here is a picture")
        expect(answer).to_be_visible()
        # The image element is in the page: without the policy the browser would have fetched it.
        expect(answer.locator(f'img[src="{leak}"]')).to_have_count(1)
        time.sleep(1.0)
        assert hits == []
    finally:
        outside.shutdown()
        outside.server_close()


# 9. Provider failure ---------------------------------------------------------------------------


def test_provider_failure_shows_a_readable_message(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    name, password = new_user(chat_server, "failure")
    login(page, chat_server, name, password)
    for _ in range(3):  # the first try and ASSISTANTS_PROVIDER_RETRIES=2 retries
        model.add_error(500, "The upstream model is on fire")
    send(page, "Are you there?")

    warning = page.locator("[data-step-type]").filter(has_text=re.compile(r"^\s*⚠️"))
    expect(warning.first).to_be_visible()
    text = warning.first.inner_text().strip()
    assert text.startswith("⚠️"), text
    assert re.search(r"provider", text, re.I), text
    assert model.pending == 0, "the retries did not all reach the provider"
    assert len(chat_requests(model)) == 3
    page_text = page.locator("body").inner_text()
    for leak in ("Traceback", 'File "/', "sk-test-provider-secret", "Exception:"):
        assert leak not in page_text, leak
    # The chat still works after the failure.
    expect(page.locator("#chat-submit")).to_be_visible()
    send(page, "And now?")
    expect(
        messages(page, "assistant_message").get_by_text("echo: And now?", exact=True)
    ).to_be_visible()
