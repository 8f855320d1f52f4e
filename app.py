"""Chainlit handlers only: each a few lines that call into `assistants`.

The `/v1` API is mounted on the same server. The full chat UI (login, history, settings, uploads)
lives in `assistants/ui/`.
"""

from __future__ import annotations

import chainlit as cl
from chainlit.server import app as chainlit_app

from assistants.api import mount_v1
from assistants.runtime import runtime
from assistants.ui import chat

mount_v1(chainlit_app, runtime)


@cl.on_app_startup
async def startup() -> None:
    await runtime.start()


@cl.on_app_shutdown
async def shutdown() -> None:
    await runtime.close()


@cl.on_chat_start
async def start() -> None:
    await chat.start_session(runtime)


@cl.on_message
async def on_message(message: cl.Message) -> None:
    await chat.answer(runtime, message.content)


@cl.on_stop
async def on_stop() -> None:
    await chat.stop(runtime)
