"""The chat: sessions, settings, uploads, and runs rendered as they stream.

Each handler in `app.py` calls one function here. What a run shows (messages, tool steps, the run
summary) is built with `render.py`, the same code that rebuilds a session on resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

import chainlit as cl
from chainlit.input_widget import Select, Slider

from ..events import Event
from ..exceptions import AssistantsError, RequestError
from ..profiles import Profile, default_profile, ensure_assistant, load_profiles
from ..runtime import Runtime
from ..sessions import Sessions
from ..store import ListParams
from ..types import ContextMode, Message, RunStatus, Session, StepStatus, Thread
from ..types.objects import CodeInterpreterToolCall, FileSearchToolCall
from ..types.requests import MessageCreate, RunCreate
from .data_layer import EngineDataLayer
from .render import (
    CODE_STEP_NAME,
    FILE_ROUTE,
    SEARCH_STEP_NAME,
    code_failed,
    code_images,
    code_logs,
    code_written,
    context_label,
    earlier_note_id,
    earlier_turn_choices,
    failure_text,
    incomplete_note,
    linked_text,
    no_output,
    pending_calls,
    run_summary,
    search_output,
    tool_input,
)
from .uploads import store_uploads

log = logging.getLogger(__name__)

P = ParamSpec("P")
FAILED_ON_OUR_SIDE = (
    "⚠️ Something went wrong on our side (the details are in the server's log). "
    "Try again in a moment; if it keeps happening, tell whoever runs this app."
)


def readable_failures(handler: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """A chat handler whose unexpected failure (a database error, a bug) is logged and shown as a
    plain message, never as the exception's text: Chainlit would show `str(error)`, which for a
    database error holds SQL."""

    @functools.wraps(handler)
    async def handle(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await handler(*args, **kwargs)
        except AssistantsError as exc:
            # The engine's own refusals say what is wrong in words meant for the user.
            with contextlib.suppress(Exception):
                await cl.Message(content=f"⚠️ {exc.message}", author="System").send()
        except Exception:
            log.exception("the chat's %s failed", handler.__name__)
            with contextlib.suppress(Exception):
                await cl.Message(content=FAILED_ON_OUR_SIDE, author="System").send()

    return handle


FLUSH_SECONDS = 0.0625
"""Coalesce streamed tokens: at most 16 browser updates per second per message. Below the 20 the
issue asks for, because a loaded server or network delivers some of them bunched together (a
1-second window then holds more than were sent in any second), and the answer's start and end
add an event each."""
MODE_ITEMS = {
    "Full history": ContextMode.full.value,
    "Last N messages": ContextMode.last_n.value,
    "One-off questions": ContextMode.one_off.value,
    "Rolling summary": ContextMode.summary.value,
}
DEFAULTS: dict[str, Any] = {"context_mode": ContextMode.full.value, "context_n": 20, "model": None, "temperature": None}

_models_cache: tuple[float, list[str]] = (-1e9, [])
MODELS_FRESH_SECONDS = 60.0
MODELS_WAIT_SECONDS = 3.0


def profiles() -> list[cl.ChatProfile]:
    """The assistants of `assistants.toml`, as chat profiles with their starters."""
    return [
        cl.ChatProfile(
            name=p.name,
            markdown_description=p.description,
            default=p.default,
            starters=[cl.Starter(label=s.label, message=s.message) for s in p.starters],
        )
        for p in load_profiles()
    ]


def _profile(name: str | None) -> Profile:
    all_profiles = load_profiles()
    return next((p for p in all_profiles if p.name == name), default_profile(all_profiles))


def _owner() -> str:
    user = cl.user_session.get("user")
    owner = getattr(user, "id", None) or (user.metadata or {}).get("user_id")
    if not owner:
        raise RuntimeError("no logged-in user in this chat session")
    return str(owner)


async def _models(runtime: Runtime) -> list[str]:
    """The provider's models for the settings' list, asked at most once a minute and never
    waited for more than `MODELS_WAIT_SECONDS`: a provider that hangs must not hold up every new
    chat and every resume (Chainlit shows a resumed chat only once this returns)."""
    global _models_cache
    stamp, models = _models_cache
    if time.monotonic() - stamp > MODELS_FRESH_SECONDS:
        try:
            models = await asyncio.wait_for(runtime.engine.provider.list_models(), MODELS_WAIT_SECONDS)
        except TimeoutError:
            log.warning("the provider did not list its models within %s s; the settings offer the assistant's", MODELS_WAIT_SECONDS)
            models = []
        _models_cache = (time.monotonic(), models)
    return models


async def _send_settings(runtime: Runtime, values: dict[str, Any], assistant_model: str) -> None:
    models = await _models(runtime)
    chosen = values.get("model") or assistant_model
    choices = sorted({*models, assistant_model, chosen})
    temperature = values.get("temperature")
    if temperature is None:
        temperature = cl.user_session.get("assistant_temperature")
    await cl.ChatSettings(
        [
            Select(id="context_mode", label="Context sent to the model", items=MODE_ITEMS, initial_value=values["context_mode"]),
            Slider(id="context_n", label="N (for last N and rolling summary)", initial=values["context_n"], min=1, max=100, step=1),
            Select(id="model", label="Model", values=choices, initial_value=chosen),
            Slider(id="temperature", label="Temperature", initial=1.0 if temperature is None else temperature, min=0, max=2, step=0.1),
        ]
    ).send()


def _session_values(session: Session) -> dict[str, Any]:
    return {
        "context_mode": session.context_mode.value,
        "context_n": session.context_n,
        "model": session.model,
        "temperature": session.temperature,
    }


@readable_failures
async def start(runtime: Runtime) -> None:
    """A new chat: pick the profile's assistant; the session itself is created with the first message."""
    engine = await runtime.start()
    owner = _owner()
    profile = _profile(cl.user_session.get("chat_profile"))
    assistant = await ensure_assistant(engine, owner, profile, runtime.settings.default_model)
    cl.user_session.set("assistant_id", assistant.id)
    cl.user_session.set("assistant_name", assistant.name or profile.name)
    cl.user_session.set("assistant_model", assistant.model)
    cl.user_session.set("assistant_temperature", assistant.temperature)
    cl.user_session.set("assistant_tools", tuple(t.type for t in assistant.tools))
    cl.user_session.set("session_id", None)
    cl.user_session.set("pending_settings", dict(DEFAULTS))
    await _send_settings(runtime, dict(DEFAULTS), assistant.model)


@readable_failures
async def resume(runtime: Runtime, thread: dict[str, Any]) -> None:
    """Reopen a session: its settings come back with it (Chainlit redraws the history from our store)."""
    engine = await runtime.start()
    owner = _owner()
    async with engine.store.read() as tx:
        found = await tx.thread_by_ui_id(thread["id"])
    if found is None or found[0] != owner:
        await cl.Message(content="This conversation is not available.").send()
        return
    session = await Sessions(engine).get(owner, found[1].id)
    assistant = await engine.get_assistant(owner, session.assistant_id)
    cl.user_session.set("assistant_id", assistant.id)
    cl.user_session.set("assistant_name", assistant.name or "Assistant")
    cl.user_session.set("assistant_model", assistant.model)
    cl.user_session.set("assistant_temperature", assistant.temperature)
    cl.user_session.set("assistant_tools", tuple(t.type for t in assistant.tools))
    cl.user_session.set("session_id", session.id)
    await _send_settings(runtime, _session_values(session), assistant.model)
    async with engine.store.read() as tx:
        active = await tx.active_run(session.id)
    if active is not None and active.status is not RunStatus.requires_action:
        # Reopened while an answer is still being written (the page was reloaded mid-answer): the
        # next message waits for that run instead of being refused. The data layer's thread says so.
        cl.user_session.set("run_id", active.id)
    await _offer_earlier_turns(thread)


EARLIER_TURNS_ACTION = "show_earlier_turns"


async def _offer_earlier_turns(thread: dict[str, Any]) -> None:
    """Buttons under the note of a shortened session: the next earlier turns, and all of them."""
    for action in cl.user_session.get("earlier_actions") or []:
        await action.remove()
    actions: list[cl.Action] = []
    note = next((s for s in thread["steps"] if s["id"] == earlier_note_id(thread["id"])), None)
    if note is not None:
        shown, total = int(note["metadata"]["turns_shown"]), int(note["metadata"]["turns_total"])
        for label, turns in earlier_turn_choices(shown, total):
            action = cl.Action(name=EARLIER_TURNS_ACTION, payload={"turns": turns}, label=label, icon="chevrons-up")
            await action.send(for_id=note["id"])
            actions.append(action)
    cl.user_session.set("earlier_actions", actions)


@readable_failures
async def show_earlier_turns(runtime: Runtime, data_layer: EngineDataLayer, action: cl.Action) -> None:
    """Redraw the reopened session from an earlier turn on (`payload.turns`: how many turns, 0 for
    all), in place, with its steps, images and files, as when it was reopened."""
    owner = _owner()
    thread_ui_id = cl.context.session.thread_id
    session_id = cl.user_session.get("session_id")
    turns = action.payload.get("turns")
    if not isinstance(turns, int) or isinstance(turns, bool) or turns < 0:
        await cl.context.emitter.send_toast("That button is out of date: reopen the conversation.", "error")
        return
    lock = _turn_lock()
    if lock.locked():
        await cl.context.emitter.send_toast("Earlier turns can be shown once the answer is finished.", "warning")
        return
    async with lock:
        if session_id is not None:
            async with runtime.engine.store.read() as tx:
                active = await tx.active_run(session_id)
            if active is not None:
                await cl.context.emitter.send_toast("Earlier turns can be shown once the answer is finished.", "warning")
                return
        thread = await data_layer.thread_for(owner, thread_ui_id, turns)
        if thread is None:
            await cl.context.emitter.send_toast("This conversation is not available.", "error")
            return
        await cl.context.emitter.resume_thread(thread)
        await _offer_earlier_turns(dict(thread))


@readable_failures
async def update_settings(runtime: Runtime, values: dict[str, Any]) -> None:
    """Store the chosen settings on the session (or keep them for the session the next message opens)."""
    changes = {
        "context_mode": ContextMode(values.get("context_mode") or ContextMode.full.value),
        "context_n": max(1, int(values.get("context_n") or 20)),
        "model": values.get("model") or None,
        "temperature": None if values.get("temperature") is None else float(values["temperature"]),
    }
    # Values equal to the assistant's own are not overrides: the session follows the assistant.
    if changes["model"] == cl.user_session.get("assistant_model"):
        changes["model"] = None
    assistant_temperature = cl.user_session.get("assistant_temperature")
    if changes["temperature"] is not None and assistant_temperature is not None and abs(changes["temperature"] - assistant_temperature) < 1e-9:
        changes["temperature"] = None
    session_id = cl.user_session.get("session_id")
    if session_id is None:
        cl.user_session.set("pending_settings", {**changes, "context_mode": changes["context_mode"].value})
        return
    await Sessions(runtime.engine).update(_owner(), session_id, **changes)


async def _ensure_session(runtime: Runtime, owner: str, title: str) -> str:
    session_id: str | None = cl.user_session.get("session_id")
    if session_id is not None:
        return session_id
    pending = cl.user_session.get("pending_settings") or dict(DEFAULTS)
    session = await Sessions(runtime.engine).create(
        owner,
        cl.user_session.get("assistant_id"),
        title=title[:120] or "New chat",
        context_mode=ContextMode(pending["context_mode"]),
        context_n=int(pending["context_n"]),
        model=pending.get("model"),
        temperature=pending.get("temperature"),
        ui_thread=cl.context.session.thread_id,
    )
    cl.user_session.set("session_id", session.id)
    return session.id


def _turn_lock() -> asyncio.Lock:
    """Held while a message is answered, and while the chat is redrawn with earlier turns: a
    redraw replaces everything on the page, so the two must not overlap."""
    lock: asyncio.Lock | None = cl.user_session.get("turn_lock")
    if lock is None:
        lock = asyncio.Lock()
        cl.user_session.set("turn_lock", lock)
    return lock


@readable_failures
async def answer(runtime: Runtime, message: cl.Message) -> None:
    """Store the user's message (with its files) and stream the run that answers it."""
    async with _turn_lock():
        await _answer(runtime, message)


async def _answer(runtime: Runtime, message: cl.Message) -> None:
    engine = runtime.engine
    owner = _owner()
    previous = cl.user_session.get("run_id")
    # From here on, Stop is about this message's run, not the last one (`stop`).
    cl.user_session.set("run_id", None)
    cl.user_session.set("run_view", None)
    if previous:
        # A stopped run may still be winding down, or (reopened mid-answer) still answering,
        # perhaps in another process: the next message waits for it.
        await _until_run_ends(runtime, owner, previous)
    await _settle_active_run(runtime, owner, cl.user_session.get("session_id"))
    try:
        session_id = await _ensure_session(runtime, owner, message.content.strip().splitlines()[0] if message.content.strip() else "Files")
        prepared = await store_uploads(
            engine, owner, message.content, list(message.elements or []), tuple(cl.user_session.get("assistant_tools") or ())
        )
        for reason in prepared.rejected:
            await cl.Message(content=f"⚠️ Not attached: {reason}", author="System").send()
        await engine.create_message(
            owner, session_id, MessageCreate(role="user", content=prepared.content, attachments=prepared.attachments or None)
        )
    except RequestError as exc:
        await cl.Message(content=f"⚠️ {exc.message}", author="System").send()
        return
    await _stream(runtime, owner, session_id)
    searched = {a.file_id for a in prepared.attachments if {"type": "file_search"} in a.tools}
    await _report_unreadable(runtime, owner, session_id, [(i, n) for i, n in prepared.accepted if i in searched])


async def _settle_active_run(runtime: Runtime, owner: str, session_id: str | None) -> None:
    """Before a new message: a run of the session still working (started elsewhere, e.g. through
    `/v1`) is waited for; one waiting for client-side tool outputs, which this chat cannot give,
    is ended, saying what it asked for."""
    if session_id is None:
        return
    async with runtime.engine.store.read() as tx:
        active = await tx.active_run(session_id)
    if active is None:
        return
    if active.status is RunStatus.requires_action:
        await _end_waiting_run(runtime, owner, session_id, active.id)
    await _until_run_ends(runtime, owner, active.id)


async def _report_unreadable(runtime: Runtime, owner: str, session_id: str, files: list[tuple[str, str]]) -> None:
    """Files sent to file search that could not be indexed: say which and why (the model could
    not read them). Files still being indexed are not reported."""
    if not files:
        return
    async with runtime.engine.store.read() as tx:
        thread = await tx.find(Thread, session_id, owner=owner)
        resources = (thread.tool_resources or {}) if thread is not None else {}
        store_ids = list((resources.get("file_search") or {}).get("vector_store_ids") or [])
        failures = []
        for file_id, name in files:
            for store_id in store_ids:
                entry = await tx.vector_store_file(store_id, file_id, owner=owner)
                if entry is not None and entry.status == "failed":
                    why = entry.last_error.message if entry.last_error else "it could not be read"
                    failures.append(f"- **{name}**: {why}")
                    break
    if failures:
        await cl.Message(
            content="⚠️ These files could not be read for file search, so the assistant cannot search them:\n" + "\n".join(failures),
            author="System",
        ).send()


async def _stream(runtime: Runtime, owner: str, session_id: str) -> None:
    engine = runtime.engine
    view = RunView(cl.user_session.get("assistant_name") or "Assistant")
    cl.user_session.set("run_view", view)
    run_id: str | None = None
    try:
        async for event in engine.stream_run(owner, session_id, RunCreate(assistant_id=cl.user_session.get("assistant_id"))):
            if event.event == "thread.run.created":
                run_id = event.data["id"]
                cl.user_session.set("run_id", run_id)
            await view.show(event)
    except asyncio.CancelledError:
        # The user pressed stop: the partial answer stays, marked as stopped (on_stop cancels the run).
        await asyncio.shield(view.mark_stopped())
        if run_id is None:
            # Stopped before the run's first event was shown: the run may be stored already, and
            # `stop` did not know it. Cancel it here, so that it does not go on unseen.
            await asyncio.shield(_cancel_active_run(runtime, owner, session_id))
        raise
    except AssistantsError as exc:
        await cl.Message(content=f"⚠️ {exc.message}", author="System").send()
        return
    finally:
        view.close()
    if run_id is not None:
        run = await engine.get_run(owner, session_id, run_id)
        if run.status.value == "requires_action":
            await _end_waiting_run(runtime, owner, session_id, run_id)
            run = await engine.get_run(owner, session_id, run_id)
            # The stream ended at the pause: show the pending calls' steps as they ended (the
            # steps that completed before it are shown already).
            for step in (await engine.list_steps(owner, session_id, run_id, ListParams(limit=100))).data:
                if step.type == "tool_calls" and step.status is not StepStatus.completed:
                    await view.step_ended(step.model_dump(mode="json"))
        await view.finish(run)


async def _end_waiting_run(runtime: Runtime, owner: str, session_id: str, run_id: str) -> None:
    """The chat cannot produce client-side tool outputs: say what was asked, then end the run."""
    run = await runtime.engine.get_run(owner, session_id, run_id)
    if run.required_action is None:
        return
    await cl.Message(
        content=(
            "The assistant asked for tools that only a client application can run:\n"
            f"{pending_calls(run)}\n\nThis chat cannot run them, so the run was ended. "
            "Use the `/v1` API to answer such calls with `submit_tool_outputs`."
        ),
        author="System",
    ).send()
    with contextlib.suppress(RequestError):
        await runtime.engine.cancel_run(owner, session_id, run_id)
        await runtime.engine.wait_for_run(run_id)


@readable_failures
async def stop(runtime: Runtime) -> None:
    """Stop: cancel the run in the engine, which closes the provider stream and skips further tools."""
    session_id = cl.user_session.get("session_id")
    if not session_id:
        return
    owner = _owner()
    # Before the run's first event is shown, this message's run is known only to the engine.
    run_id = cl.user_session.get("run_id") or await _cancel_active_run(runtime, owner, session_id)
    if not run_id:
        return
    with contextlib.suppress(RequestError):
        await runtime.engine.cancel_run(owner, session_id, run_id)
    await runtime.engine.wait_for_run(run_id)
    # The streaming task was cancelled before it could add the run summary; add it now, as a
    # reloaded session shows it.
    view: RunView | None = cl.user_session.get("run_view")
    if view is not None:
        await view.finish(await runtime.engine.get_run(owner, session_id, run_id))


async def _until_run_ends(runtime: Runtime, owner: str, run_id: str) -> None:
    """Wait until the run stops working: its task here, or (executed by another process) its
    stored status, checked a few times a second for at most the runs' time limit."""
    engine = runtime.engine
    await engine.wait_for_run(run_id)
    session_id = cl.user_session.get("session_id")
    if not session_id:
        return
    deadline = time.monotonic() + runtime.settings.run_timeout_seconds
    while time.monotonic() < deadline:
        try:
            run = await engine.get_run(owner, session_id, run_id)
        except RequestError:
            return
        if run.status not in (RunStatus.queued, RunStatus.in_progress, RunStatus.cancelling):
            return
        await asyncio.sleep(0.25)


async def _cancel_active_run(runtime: Runtime, owner: str, session_id: str | None) -> str | None:
    """Cancel the session's active run, if it has one, and wait for it; returns its id."""
    if session_id is None:
        return None
    engine = runtime.engine
    async with engine.store.read() as tx:
        active = await tx.active_run(session_id)
    if active is None:
        return None
    with contextlib.suppress(RequestError):
        await engine.cancel_run(owner, session_id, active.id)
    await engine.wait_for_run(active.id)
    return active.id


class Paced:
    """Sends what changed at most once every `FLUSH_SECONDS`: at once when the last send is
    older, else when the interval is up (a timer), so nothing changed waits for a later change or
    for the end, which under load comes only once the run's writes are stored (seconds)."""

    def __init__(self, send: Callable[[], Awaitable[None]]) -> None:
        self._send = send
        self._last = 0.0
        self._later: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def changed(self) -> None:
        wait = FLUSH_SECONDS - (time.monotonic() - self._last)
        if wait <= 0:
            await self.now()
        elif self._later is None:
            self._later = asyncio.get_running_loop().call_later(wait, self._due)

    async def now(self) -> None:
        """Send at once (e.g. before the final state), after any send under way."""
        self.cancel()
        async with self._lock:
            # Counted from the start of a send, so a change during it waits for the interval.
            self._last = time.monotonic()
            await self._send()

    def cancel(self) -> None:
        """Drop a send that is due later (a send under way still finishes)."""
        if self._later is not None:
            self._later.cancel()
            self._later = None

    def _due(self) -> None:
        self._later = None
        task = asyncio.ensure_future(self.now())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a paced chat update failed", exc_info=task.exception())


class RunView:
    """Renders one run's events: tool steps, the streamed answer, and the run summary."""

    def __init__(self, assistant_name: str) -> None:
        self.assistant_name = assistant_name
        self.reply: cl.Message | None = None
        self.pending = ""
        """Answer text not sent yet."""
        self.answer = Paced(self._send_pending)
        self.tools: dict[int, cl.Step] = {}
        self.tool_ids: dict[str, cl.Step] = {}
        self.steps: dict[str, Paced] = {}
        """Code steps whose input and logs stream, paced like the answer."""
        self.updates = 0
        """Socket updates sent for the current reply (measured by the streaming benchmark)."""
        self.finished = False
        """Whether the run's summary is shown (by the stream's end, or by Stop): it is shown once."""

    async def show(self, event: Event) -> None:
        name, data = event.event, event.data
        if name == "thread.message.created":
            self.answer.cancel()
            self.reply = cl.Message(id=data["id"], content="", author=self.assistant_name)
            self.pending = ""
            self.answer = Paced(self._send_pending)
        elif name == "thread.message.delta" and self.reply is not None:
            self.pending += "".join(p["text"].get("value", "") for p in data["delta"]["content"] if p["type"] == "text")
            await self.answer.changed()
        elif name in ("thread.message.completed", "thread.message.incomplete") and self.reply is not None:
            await self.answer.now()
            if any(p.get("text", {}).get("annotations") for p in data.get("content") or []):
                # Links to files the code wrote (`file_path` annotations) now point at the chat's
                # download route; citation markers stay as they are.
                self.reply.content = linked_text(Message.model_validate(data))
            if name == "thread.message.incomplete":
                self.reply.content += incomplete_note((data.get("incomplete_details") or {}).get("reason"))
            await self.reply.send() if not self.reply.content else await self.reply.update()
            self.reply = None
        elif name == "thread.run.step.created" and data["type"] == "tool_calls":
            self.tools = {}
        elif name == "thread.run.step.delta":
            await self._tool_delta(data)
        elif name in ("thread.run.step.completed", "thread.run.step.failed", "thread.run.step.cancelled") and data["type"] == "tool_calls":
            await self._tool_done(data)

    async def _send_pending(self) -> None:
        if self.reply is not None and self.pending:
            text, self.pending = self.pending, ""
            await self.reply.stream_token(text)
            self.updates += 1

    def close(self) -> None:
        """Nothing more is sent later: the run's stream has ended, or stopped."""
        self.answer.cancel()
        for paced in self.steps.values():
            paced.cancel()

    async def _tool_delta(self, data: dict[str, Any]) -> None:
        for call in data["delta"].get("step_details", {}).get("tool_calls", []):
            if call.get("type") == "code_interpreter":
                await self._code_delta(call)
                continue
            if call.get("type") == "file_search":
                if call["index"] not in self.tools:
                    step = self._tool_step(SEARCH_STEP_NAME, show_input="text", language="")
                    step.input, step.output = "…", "…"
                    await step.send()
                    self.tools[call["index"]] = step
                if call.get("id"):
                    self.tool_ids[call["id"]] = self.tools[call["index"]]
                continue
            function = call.get("function", {})
            step = self.tools.get(call["index"])
            if step is None and function.get("name"):
                step = self._tool_step(function["name"])
                step.input = function.get("arguments") or "…"
                step.output = "…"
                await step.send()
                self.tools[call["index"]] = step
                if call.get("id"):
                    self.tool_ids[call["id"]] = step
                continue
            if step is None:
                continue
            if call.get("id"):
                self.tool_ids[call["id"]] = step
            if function.get("arguments"):
                step.input = (step.input if step.input != "…" else "") + function["arguments"]

    async def _code_delta(self, call: dict[str, Any]) -> None:
        """Code as the model writes it, then its logs and images as the kernel produces them."""
        body = call.get("code_interpreter") or {}
        step = self.tools.get(call["index"])
        if step is None:
            step = self._tool_step(CODE_STEP_NAME, show_input="python", language="text")
            step.input, step.output = "", ""
            await step.send()
            self.tools[call["index"]] = step
        if call.get("id"):
            self.tool_ids[call["id"]] = step
        step.input += body.get("input") or ""
        for output in body.get("outputs") or []:
            if output["type"] == "logs":
                step.output += output.get("logs") or ""
            elif output["type"] == "image":
                # Shown at once, inside the step.
                await _show_image(output["image"]["file_id"], step)
        if step.id not in self.steps:
            self.steps[step.id] = Paced(step.update)
        await self.steps[step.id].changed()

    @staticmethod
    def _tool_step(name: str, *, show_input: str = "json", language: str = "json") -> cl.Step:
        # Steps made outside `async with` get no parent; nest them under the turn like the answer,
        # or Chainlit shows them after everything else.
        current = cl.context.current_step
        return cl.Step(
            name=name, type="tool", show_input=show_input, language=language, parent_id=current.id if current else None
        )

    async def step_ended(self, data: dict[str, Any]) -> None:
        """A tool step that ended after the run's stream did (a pause for client-side tools)."""
        await self._tool_done(data)

    async def _tool_done(self, data: dict[str, Any]) -> None:
        error = (data.get("last_error") or {}).get("message")
        for index, call in enumerate(data["step_details"]["tool_calls"]):
            if call["type"] == "code_interpreter":
                await self._code_done(call, self.tool_ids.get(call["id"]) or self.tools.get(index), data["status"], error)
                continue
            if call["type"] == "file_search":
                search = FileSearchToolCall.model_validate(call)
                step = self.tool_ids.get(call["id"]) or self.tools.get(index)
                if step is None:
                    step = self._tool_step(SEARCH_STEP_NAME, show_input="text", language="")
                    await step.send()
                step.input = search.file_search.query
                step.output = search_output(search, data["status"], error)
                step.is_error = data["status"] == "failed"
                await step.update()
                continue
            function = call["function"]
            step = self.tool_ids.get(call["id"]) or self.tools.get(index)
            if step is None:
                step = self._tool_step(function["name"])
                await step.send()
            step.input = tool_input(function["arguments"])
            output = function.get("output")
            step.output = output if output is not None else no_output(data["status"], error)
            step.is_error = data["status"] != "completed" or (output or "").startswith("Error:")
            await step.update()

    async def _code_done(self, data: dict[str, Any], step: cl.Step | None, status: str, error: str | None = None) -> None:
        call = CodeInterpreterToolCall.model_validate(data)
        if step is not None and step.id in self.steps:
            self.steps.pop(step.id).cancel()
        if step is None:
            step = self._tool_step(CODE_STEP_NAME, show_input="python", language="text")
            await step.send()
            for file_id in code_images(call):
                await _show_image(file_id, step)
        logs = code_logs(call)
        step.input = call.code_interpreter.input
        step.output = logs or no_output(status, error)
        step.is_error = status != "completed" or code_failed(logs)
        await step.update()
        for file_id, name in code_written(call):
            await cl.File(url=f"{FILE_ROUTE}/{file_id}", name=name, display="inline").send(for_id=step.id)

    async def mark_stopped(self) -> None:
        self.close()
        if self.reply is not None:
            await self.answer.now()
            self.reply.content += incomplete_note("run_cancelled")
            await self.reply.update()
            self.reply = None

    async def finish(self, run: Any) -> None:
        """After the run: explain a failure, then the quiet run summary (once)."""
        if self.finished:
            return
        self.finished = True
        text = failure_text(run)
        if text:
            await cl.Message(content=text, author="System").send()
        async with cl.Step(name=context_label(run), type="run", default_open=False) as summary:
            summary.output = run_summary(run)


async def _show_image(file_id: str, step: cl.Step) -> None:
    """An image the code showed, inside its step; the file route checks the viewer owns it."""
    await cl.Image(url=f"{FILE_ROUTE}/{file_id}", name=f"{file_id}.png", display="inline", size="medium").send(for_id=step.id)
