"""Chainlit handlers only: each a few lines that call into `assistants`.

The `/v1` API and the chat's own file and feedback routes are mounted on the same server, in
front of Chainlit's routes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import chainlit as cl
from chainlit.config import APP_ROOT
from chainlit.server import app as chainlit_app
from chainlit.server import sio

from assistants.api import mount_first, mount_v1
from assistants.profiles import sync_all_users
from assistants.runtime import runtime
from assistants.ui import auth, chat, event_loop
from assistants.ui.data_layer import EngineDataLayer
from assistants.ui.routes import build_chat_router
from assistants.ui.security import protect_pages, refuse_disabled_edits

auth.ensure_auth_secret(runtime.settings)
auth.ensure_login_messages(Path(APP_ROOT) / ".chainlit" / "translations")
data_layer = EngineDataLayer(runtime)
mount_v1(chainlit_app, runtime)
mount_first(chainlit_app, build_chat_router(runtime, data_layer))
protect_pages(chainlit_app)
refuse_disabled_edits(sio)


@cl.data_layer
def get_data_layer() -> EngineDataLayer:
    return data_layer


@cl.on_app_startup
async def startup() -> None:
    event_loop.drop_cancelled_timers(asyncio.get_running_loop())
    engine = await runtime.start()
    await auth.ensure_first_user(runtime)
    await sync_all_users(engine, runtime.settings.default_model)


@cl.on_app_shutdown
async def shutdown() -> None:
    await runtime.close()


@cl.password_auth_callback
async def login(username: str, password: str) -> cl.User | None:
    user_id = await auth.check_login(runtime, username, password)
    return cl.User(identifier=username, metadata={"user_id": user_id}) if user_id else None


@cl.set_chat_profiles
async def chat_profiles(_user: cl.User | None = None) -> list[cl.ChatProfile]:
    return chat.profiles()


@cl.on_chat_start
async def on_chat_start() -> None:
    await chat.start(runtime)


@cl.on_chat_resume
async def on_chat_resume(thread: dict[str, Any]) -> None:
    await chat.resume(runtime, thread)


@cl.action_callback(chat.EARLIER_TURNS_ACTION)
async def on_show_earlier_turns(action: cl.Action) -> None:
    await chat.show_earlier_turns(runtime, data_layer, action)


@cl.on_settings_update
async def on_settings_update(settings: dict[str, Any]) -> None:
    await chat.update_settings(runtime, settings)


@cl.on_message
async def on_message(message: cl.Message) -> None:
    await chat.answer(runtime, message)


@cl.on_stop
async def on_stop() -> None:
    await chat.stop(runtime)
