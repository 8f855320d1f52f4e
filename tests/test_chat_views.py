"""What the chat shows around a run, in a real browser (Debian's Chromium) on the real server.

How fast a long answer reaches the page (coalesced: at most ~20 updates a second, not one per
token), failed tools shown as failed steps with their error, the run summary under a reply, the
model and temperature chosen in the settings, and the sidebar's search, rename and delete.

The server, the browser and the helpers are those of `tests/test_chat_browser.py`; the scripted
model is the only fake.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

from tests import test_chat_browser
from tests.scripted_model import ScriptedModel
from tests.server import Server
from tests.test_chat_browser import (
    chat_requests,
    expect_thread_refused,
    login,
    messages,
    new_user,
    send,
    thread_id,
    wait_ready,
)

# The chat tests' server (on SQLite), browser and pages, started once for this module too.
chat_server = test_chat_browser.chat_server
playwright_instance = test_chat_browser.playwright_instance
browser = test_chat_browser.browser
new_context = test_chat_browser.new_context
page = test_chat_browser.page


# 1. Coalescing -----------------------------------------------------------------------------------

ANSWER_EVENTS = ("stream_start", "stream_token", "update_message", "new_message")
"""The socket.io events that carry a message's text to the page."""


@dataclass(frozen=True)
class Frame:
    name: str
    data: Any
    at: float
    """When the browser received it (its own monotonic clock, in seconds)."""


def record_frames(page: Page) -> list[Frame]:
    """Every socket.io event the page receives from now on, stamped with the browser's own arrival
    time (CDP `Network.webSocketFrameReceived`), so a busy test process does not bunch them up."""
    frames: list[Frame] = []

    def on_frame(params: dict[str, Any]) -> None:
        payload = params.get("response", {}).get("payloadData", "")
        if isinstance(payload, str) and payload.startswith("42"):
            event = json.loads(payload[2:])
            frames.append(Frame(event[0], event[1] if len(event) > 1 else None, float(params["timestamp"])))

    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.on("Network.webSocketFrameReceived", on_frame)
    return frames


def busiest_second(times: list[float]) -> int:
    """The most events in any window of one second."""
    times = sorted(times)
    most, start = 0, 0
    for end, stamp in enumerate(times):
        while stamp - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_a_fast_long_answer_reaches_the_page_in_about_20_updates_a_second_not_one_per_token(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    name, password = new_user(chat_server, "coalesce")
    login(page, chat_server, name, password)
    frames = record_frames(page)
    chunks = 2_000
    words = [f"w{i:04d}" for i in range(chunks)]
    text = " ".join(words)
    model.add_text(text, delay=0.0015)  # 2,000 chunks (one word each) in about 3 s
    send(page, "A long answer, fast")

    reply = messages(page, "assistant_message").filter(has_text="w0000")
    expect(reply).to_contain_text(words[-1], timeout=60_000)
    expect(reply.locator(".message-content").first).to_have_text(text)
    # Every event about the reply has arrived once the page says the run is over.
    expect(page.locator("#chat-submit")).to_be_visible()
    deadline = time.monotonic() + 10
    while not any(f.name == "task_end" for f in frames) and time.monotonic() < deadline:
        page.wait_for_timeout(50)

    tokens = Counter(f.data.get("id") for f in frames if f.name == "stream_token" and isinstance(f.data, dict))
    assert tokens, f"no stream_token events: {Counter(f.name for f in frames)}"
    [(reply_id, _)] = tokens.most_common(1)
    mine = [f for f in frames if f.name in ANSWER_EVENTS and isinstance(f.data, dict) and f.data.get("id") == reply_id]
    span = max(f.at for f in mine) - min(f.at for f in mine)
    summary = f"{len(mine)} events in {span:.2f} s: {Counter(f.name for f in mine)}"
    # Far fewer updates than tokens: at most ~20 a second, however fast the model is.
    assert len(mine) <= chunks // 10, summary
    assert busiest_second([f.at for f in mine]) <= 25, summary
    # And yet it streamed: many updates, each adding to the text.
    assert sum(1 for f in mine if f.name == "stream_token") >= 10, summary
    # (Chainlit sends the first piece with `stream_start`, in the message's output.)
    streamed = "".join(f.data["output"] if f.name == "stream_start" else f.data["token"] for f in mine if f.name in ANSWER_EVENTS[:2])
    assert text.startswith(streamed) and len(streamed) > len(text) // 2, summary


# 2. Failed tools ---------------------------------------------------------------------------------


def tool_step(page: Page, name: str) -> Locator:
    return messages(page, "tool").filter(has=page.locator(f"#step-{name}"))


def check_tool_step(page: Page, name: str, *, failed: bool, input_text: str, output: tuple[str, ...]) -> None:
    """The step titled `name`, marked as failed or not, and once opened its input and its output.

    Chainlit marks a step whose `isError` is set with an alert icon in place of its avatar (it
    also asks for a red title, but its class merge lets the muted colour of a finished step win).
    """
    step = tool_step(page, name)
    expect(step).to_have_count(1)
    expect(step.locator("svg.lucide-circle-alert")).to_have_count(1 if failed else 0)
    expect(step.locator(f'img[alt="Avatar for {name}"]')).to_have_count(0 if failed else 1)
    title = step.locator(f"#step-{name}")
    title.click()
    sections = step.locator(".message-content")
    expect(sections).to_have_count(2)
    expect(sections.nth(0)).to_contain_text(input_text)
    for text in output:
        expect(sections.nth(1)).to_contain_text(text)
    title.click()  # closed again, as found


def test_a_function_that_raises_and_code_that_raises_show_as_failed_steps_with_their_error(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    name, password = new_user(chat_server, "failing")
    login(page, chat_server, name, password)
    code = "rows = [3, 1]\nprint('rows', len(rows))\nraise ValueError('the rows do not add up')\n"
    model.add_tool_calls(
        [
            {"name": "calculate", "arguments": json.dumps({"expression": "1/0"})},
            {"name": "code_interpreter", "arguments": json.dumps({"code": code})},
            {"name": "get_current_time", "arguments": json.dumps({"timezone": "UTC"})},
        ]
    )
    model.add_text("Both of those failed.")
    send(page, "Divide by zero, then run my code")
    expect(messages(page, "assistant_message").get_by_text("Both of those failed.")).to_be_visible(timeout=60_000)

    def check_steps() -> None:
        check_tool_step(
            page, "calculate", failed=True, input_text='"expression": "1/0"',
            output=("Error: the tool 'calculate' failed: ZeroDivisionError: division by zero",),
        )
        # The code's own output before the error, then the error.
        check_tool_step(
            page, "Python", failed=True, input_text="raise ValueError",
            output=("rows 2", "Traceback", "ValueError: the rows do not add up"),
        )
        # The call that worked, in the same round, is not marked.
        check_tool_step(page, "get_current_time", failed=False, input_text='"timezone": "UTC"', output=("+00:00",))

    check_steps()
    # The model read both errors.
    outputs = [m["content"] for m in chat_requests(model)[-1]["messages"] if m["role"] == "tool"]
    assert any("ZeroDivisionError" in str(o) for o in outputs), outputs
    assert any("the rows do not add up" in str(o) for o in outputs), outputs

    # Reopened, the session shows the same steps, marked the same way.
    page.reload()
    wait_ready(page)
    expect(messages(page, "assistant_message").get_by_text("Both of those failed.")).to_be_visible()
    check_steps()


# 3. The run summary ------------------------------------------------------------------------------


def api_key(srv: Server, name: str) -> dict[str, str]:
    """An API key of the chat user `name`, as the header `/v1` reads."""
    if name not in srv.keys:
        srv.keys[name] = srv.cli("keys", "create", name).strip().splitlines()[-1]
    return {"Authorization": f"Bearer {srv.keys[name]}"}


def stored_runs(srv: Server, name: str, ui_thread: str) -> list[dict[str, Any]]:
    """The runs of the chat session `ui_thread` as `/v1` returns them, oldest first."""
    headers = api_key(srv, name)
    found = httpx.get(f"{srv.api_url}/threads", params={"metadata[ui_thread]": ui_thread}, headers=headers, timeout=10)
    [thread] = found.json()["data"]
    runs = httpx.get(f"{srv.api_url}/threads/{thread['id']}/runs", params={"order": "asc"}, headers=headers, timeout=10)
    return list(runs.json()["data"])


def open_summary(page: Page) -> Locator:
    """The latest run summary under a reply, opened; returns its text's container."""
    summary = messages(page, "run").last
    summary.locator("button[id^='step-']").click()
    content = summary.locator(".message-content")
    expect(content).to_have_count(1)
    return content


def summary_fields(content: Locator) -> dict[str, str]:
    """`{"Model": "scripted-model", ...}`: each bold label of the summary with the rest of its line."""
    labels = content.locator(".font-bold")  # how Chainlit draws markdown's bold
    expect(labels.first).to_be_visible()
    fields: dict[str, str] = {}
    for line in content.inner_text().splitlines():
        label, _, value = line.strip().partition(" ")
        if label:
            fields[label] = value
    assert list(fields) == labels.all_inner_texts(), fields
    return fields


def test_the_run_summary_under_a_reply_shows_model_status_duration_and_tokens(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    name, password = new_user(chat_server, "summary")
    login(page, chat_server, name, password)
    # Three words 0.8 s apart: the run takes over two seconds.
    model.add_text("Fine, thanks then.", delay=0.8, prompt_tokens=12, completion_tokens=5)
    send(page, "How are you?")
    expect(messages(page, "assistant_message").get_by_text("Fine, thanks then.", exact=True)).to_be_visible()
    summary = messages(page, "run").last
    expect(summary).to_contain_text("context: 1 message")  # its title: what the run sent
    [run] = stored_runs(chat_server, name, thread_id(page))
    assert run["status"] == "completed" and run["model"] == "scripted-model"
    duration = run["completed_at"] - run["started_at"]
    assert duration >= 2, run
    expected = {
        "Model": "scripted-model",
        "Status": "completed",
        "Duration": f"{duration} s",
        "Tokens": "12 prompt + 5 completion = 17",
    }
    assert summary_fields(open_summary(page)) == expected
    assert run["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}

    # Reopened, the session shows the same summary.
    page.reload()
    wait_ready(page)
    expect(messages(page, "assistant_message").get_by_text("Fine, thanks then.", exact=True)).to_be_visible()
    assert summary_fields(open_summary(page)) == expected


# 4. Model and temperature in the settings --------------------------------------------------------


def open_settings(page: Page) -> Locator:
    wait_ready(page)
    page.locator("#chat-settings-open-modal").click()
    dialog = page.locator("#chat-settings")
    expect(dialog).to_be_visible()
    return dialog


def expect_settings(page: Page, model_name: str, temperature: str) -> None:
    """The settings dialog shows this model and temperature; closed again after."""
    dialog = open_settings(page)
    expect(dialog.locator("#model")).to_have_text(model_name)
    expect(dialog.locator("#temperature [role=slider]")).to_have_attribute("aria-valuenow", temperature)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def choose_settings(page: Page, *, model_name: str | None = None, tenths: int) -> None:
    """Open the settings, choose the model (if given) and a temperature of `tenths` / 10, confirm."""
    dialog = open_settings(page)
    if model_name is not None:
        dialog.locator("#model").click()
        page.get_by_role("option", name=model_name, exact=True).click()
        expect(dialog.locator("#model")).to_have_text(model_name)
    thumb = dialog.locator("#temperature [role=slider]")
    thumb.focus()
    page.keyboard.press("Home")  # the slider's minimum, 0
    for _ in range(tenths):
        page.keyboard.press("ArrowRight")  # a step is 0.1
    expect(thumb).to_have_attribute("aria-valuenow", f"{tenths / 10:g}")
    dialog.locator("#confirm").click()
    expect(dialog).to_be_hidden()


def last_request(model: ScriptedModel) -> dict[str, Any]:
    return chat_requests(model)[-1]


def test_the_model_and_temperature_chosen_in_the_settings_reach_the_model_and_come_back_on_reload(
    chat_server: Server, page: Page, model: ScriptedModel
) -> None:
    name, password = new_user(chat_server, "settings")
    login(page, chat_server, name, password)
    # A new chat offers the assistant's model and temperature (assistants.toml: 0.7), and the
    # provider's other models (the scripted model lists two at /v1/models).
    expect_settings(page, "scripted-model", "0.7")
    dialog = open_settings(page)
    dialog.locator("#model").click()
    expect(page.get_by_role("option")).to_have_text(["scripted-model", "scripted-model-2"])
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # Chosen before the first message: kept for the session that message opens.
    choose_settings(page, model_name="scripted-model-2", tenths=12)
    send(page, "First question")
    expect(messages(page, "assistant_message").get_by_text("echo: First question", exact=True)).to_be_visible()
    sent = last_request(model)
    assert (sent["model"], sent["temperature"]) == ("scripted-model-2", 1.2)
    assert summary_fields(open_summary(page))["Model"] == "scripted-model-2"

    # Reopened, the dialog shows them again, and the next run still uses them.
    page.reload()
    expect(messages(page, "assistant_message").get_by_text("echo: First question", exact=True)).to_be_visible()
    expect_settings(page, "scripted-model-2", "1.2")
    send(page, "Second question")
    expect(messages(page, "assistant_message").get_by_text("echo: Second question", exact=True)).to_be_visible()
    sent = last_request(model)
    assert (sent["model"], sent["temperature"]) == ("scripted-model-2", 1.2)

    # Changed in the reopened session (stored on the session itself this time).
    choose_settings(page, tenths=3)
    send(page, "Third question")
    expect(messages(page, "assistant_message").get_by_text("echo: Third question", exact=True)).to_be_visible()
    sent = last_request(model)
    assert (sent["model"], sent["temperature"]) == ("scripted-model-2", 0.3)
    page.reload()
    expect(messages(page, "assistant_message").get_by_text("echo: Third question", exact=True)).to_be_visible()
    expect_settings(page, "scripted-model-2", "0.3")

    # Back to the assistant's own model and temperature: the session follows the assistant again.
    choose_settings(page, model_name="scripted-model", tenths=7)
    send(page, "Fourth question")
    expect(messages(page, "assistant_message").get_by_text("echo: Fourth question", exact=True)).to_be_visible()
    sent = last_request(model)
    assert (sent["model"], sent["temperature"]) == ("scripted-model", 0.7)
    page.reload()
    expect(messages(page, "assistant_message").get_by_text("echo: Fourth question", exact=True)).to_be_visible()
    expect_settings(page, "scripted-model", "0.7")

    # A new chat starts from the assistant's own again.
    page.goto(chat_server.url)
    expect_settings(page, "scripted-model", "0.7")


# 5. The sidebar: search, rename, delete ----------------------------------------------------------


def start_session(page: Page, srv: Server, text: str) -> str:
    """A new chat whose first message is `text` (and so its title); returns its id in the chat."""
    page.goto(srv.url)
    wait_ready(page)
    send(page, text)
    expect(messages(page, "assistant_message").get_by_text(f"echo: {text}", exact=True)).to_be_visible()
    return thread_id(page)


def search_titles(page: Page, query: str, expected: list[str]) -> Locator:
    """Search the sessions from the sidebar; the dialog lists exactly `expected` (in any order)."""
    page.locator("#search-chats-button").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_placeholder("Search conversations").fill(query)
    found = dialog.get_by_role("option")
    # The list is the server's answer for `query`, which the page asks for a moment after the last
    # key (until then it shows the previous list).
    for title in expected:
        expect(found.filter(has_text=title)).to_have_count(1)
    expect(found).to_have_count(len(expected))
    return dialog


def thread_menu(page: Page, ui: str, action: str) -> Locator:
    """Choose `action` ("rename" or "delete") in the session's menu in the sidebar; returns its dialog."""
    item = page.locator(f"#thread-{ui}")
    item.hover()
    item.locator("#thread-options").click()
    page.locator(f"#{action}-thread").click()
    dialog = page.get_by_role("alertdialog" if action == "delete" else "dialog")
    expect(dialog).to_be_visible()
    return dialog


def test_the_sidebar_searches_renames_and_deletes_sessions(chat_server: Server, page: Page, model: ScriptedModel) -> None:
    name, password = new_user(chat_server, "sidebar")
    login(page, chat_server, name, password)
    apples = start_session(page, chat_server, "Apples are red")
    bananas = start_session(page, chat_server, "Bananas are yellow")
    green = start_session(page, chat_server, "Green apples are sour")
    for ui, title in ((apples, "Apples are red"), (bananas, "Bananas are yellow"), (green, "Green apples are sour")):
        expect(page.locator(f"#thread-{ui}")).to_have_text(title)

    # Search by title: case does not matter, and choosing a result opens that session.
    dialog = search_titles(page, "APPLES", ["Apples are red", "Green apples are sour"])
    dialog.get_by_placeholder("Search conversations").fill("yellow")
    expect(dialog.get_by_role("option")).to_have_text(["Bananas are yellow"])
    dialog.get_by_role("option").click()
    expect(page).to_have_url(re.compile(f"/thread/{bananas}$"))
    expect(messages(page, "user_message").filter(has_text="Bananas are yellow")).to_have_count(1)
    expect(messages(page, "user_message").filter(has_text="Apples are red")).to_have_count(0)
    page.keyboard.press("Escape")

    # Rename from the sidebar: the new title is shown, kept after a reload, and searched.
    dialog = thread_menu(page, apples, "rename")
    dialog.locator("#name").fill("Fruit notes")
    dialog.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()
    expect(page.locator(f"#thread-{apples}")).to_have_text("Fruit notes")
    page.reload()
    wait_ready(page)
    expect(page.locator(f"#thread-{apples}")).to_have_text("Fruit notes")
    search_titles(page, "apples", ["Green apples are sour"])
    page.keyboard.press("Escape")
    search_titles(page, "fruit", ["Fruit notes"])
    page.keyboard.press("Escape")
    # The session itself is untouched.
    page.locator(f"#thread-{apples}").click()
    expect(page).to_have_url(re.compile(f"/thread/{apples}$"))
    expect(messages(page, "assistant_message").get_by_text("echo: Apples are red", exact=True)).to_be_visible()

    # Delete from the sidebar: gone from the list, from search, and its URL shows nothing of it.
    dialog = thread_menu(page, bananas, "delete")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator(f"#thread-{bananas}")).to_have_count(0)
    page.reload()
    wait_ready(page)
    expect(page.locator(f"#thread-{green}")).to_be_visible()
    expect(page.locator(f"#thread-{bananas}")).to_have_count(0)
    search_titles(page, "yellow", [])
    page.keyboard.press("Escape")
    expect_thread_refused(page, chat_server, bananas, "Bananas are yellow")
    # The engine deleted the session, not only the chat's list.
    headers = api_key(chat_server, name)
    for ui, count in ((bananas, 0), (apples, 1)):
        found = httpx.get(f"{chat_server.api_url}/threads", params={"metadata[ui_thread]": ui}, headers=headers, timeout=10)
        assert len(found.json()["data"]) == count, found.text
    # The other sessions are still there.
    for ui, title in ((apples, "Fruit notes"), (green, "Green apples are sour")):
        expect(page.locator(f"#thread-{ui}")).to_have_text(title)
