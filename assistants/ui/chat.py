"""A chat over the engine: each user message starts a run whose events render as it streams."""

from __future__ import annotations

import json
import time

import chainlit as cl

from ..defaults import ensure_default_assistant
from ..events import Event
from ..runtime import Runtime
from ..sessions import Sessions
from ..types.requests import MessageCreate, RunCreate

LOCAL_USER = "local"
"""Owner of chat sessions until login arrives with the full UI."""

FLUSH_SECONDS = 0.05
"""Coalesce streamed tokens: at most ~20 browser updates per second per message."""


async def start_session(runtime: Runtime) -> None:
    engine = await runtime.start()
    owner = await runtime.accounts.ensure_user(LOCAL_USER)
    assistant = await ensure_default_assistant(engine, owner, runtime.settings)
    session = await Sessions(engine).create(owner, assistant.id)
    cl.user_session.set("owner", owner)
    cl.user_session.set("session_id", session.id)
    cl.user_session.set("assistant_id", assistant.id)


async def answer(runtime: Runtime, text: str) -> None:
    engine = runtime.engine
    owner: str = cl.user_session.get("owner")
    session_id: str = cl.user_session.get("session_id")
    assistant_id: str = cl.user_session.get("assistant_id")
    await engine.create_message(owner, session_id, MessageCreate(role="user", content=text))
    reply: cl.Message | None = None
    pending = ""
    last_flush = 0.0
    steps: dict[str, cl.Step] = {}
    async for event in engine.stream_run(owner, session_id, RunCreate(assistant_id=assistant_id)):
        if event.event == "thread.run.created":
            cl.user_session.set("run_id", event.data["id"])
        elif event.event == "thread.message.delta":
            if reply is None:
                reply = cl.Message(content="")
            pending += "".join(p["text"].get("value", "") for p in event.data["delta"]["content"] if p["type"] == "text")
            if time.monotonic() - last_flush >= FLUSH_SECONDS:
                await reply.stream_token(pending)
                pending, last_flush = "", time.monotonic()
        elif event.event in ("thread.message.completed", "thread.message.incomplete") and reply is not None:
            if pending:
                await reply.stream_token(pending)
                pending = ""
            await reply.send()
            reply = None
        elif event.event == "thread.run.step.completed" and event.data["type"] == "tool_calls":
            await _render_tool_step(event, steps)
        elif event.event in ("thread.run.failed", "thread.run.incomplete", "thread.run.requires_action"):
            await cl.Message(content=_explain(event)).send()
    if reply is not None:
        await reply.send()


async def _render_tool_step(event: Event, steps: dict[str, cl.Step]) -> None:
    for call in event.data["step_details"]["tool_calls"]:
        function = call["function"]
        async with cl.Step(name=function["name"], type="tool") as step:
            try:
                step.input = json.dumps(json.loads(function["arguments"] or "{}"), indent=2)
            except json.JSONDecodeError:
                step.input = function["arguments"]
            step.output = function["output"] or ""
            step.language = "json"
        steps[call["id"]] = step


def _explain(event: Event) -> str:
    data = event.data
    if event.event == "thread.run.failed":
        return f"⚠️ {data['last_error']['message']}"
    if event.event == "thread.run.incomplete":
        return f"The answer was cut short ({data['incomplete_details']['reason']})."
    names = ", ".join(c["function"]["name"] for c in data["required_action"]["submit_tool_outputs"]["tool_calls"])
    return f"The assistant asked for tools this chat cannot run ({names}); the run was left waiting."


async def stop(runtime: Runtime) -> None:
    run_id = cl.user_session.get("run_id")
    if run_id:
        try:
            await runtime.engine.cancel_run(cl.user_session.get("owner"), cl.user_session.get("session_id"), run_id)
        except Exception:
            return
