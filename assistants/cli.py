"""The `assistants` command: users, API keys, and a terminal chat.

    assistants users add NAME --password PW
    assistants keys create NAME            # prints the new key as the last line
    assistants chat [--user NAME]          # chat with the default assistant, streaming
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from .config import Settings
from .events import Event
from .exceptions import AssistantsError
from .runtime import Runtime
from .types.requests import MessageCreate, RunCreate


async def _users_add(runtime: Runtime, name: str, password: str) -> int:
    await runtime.start()
    user_id = await runtime.accounts.add_user(name, password)
    print(f"Created user {name} ({user_id}).")
    return 0


async def _keys_create(runtime: Runtime, name: str, label: str) -> int:
    await runtime.start()
    key = await runtime.accounts.create_key(name, label)
    print(f"API key for {name} (shown once; keep it secret):")
    print(key)
    return 0


def render(event: Event, out: TextIO) -> None:
    """Print one run event for a terminal reader."""
    data = event.data
    if event.event == "thread.message.delta":
        for part in data["delta"].get("content", []):
            if part.get("type") == "text":
                out.write(part["text"].get("value", ""))
        out.flush()
    elif event.event == "thread.message.completed":
        out.write("\n")
    elif event.event == "thread.run.step.completed" and data["type"] == "tool_calls":
        for call in data["step_details"]["tool_calls"]:
            if call["type"] == "file_search":
                body = call["file_search"]
                found = ", ".join(f"{r['file_name']} ({r['score']:.2f})" for r in body.get("results") or []) or "nothing"
                out.write(f"  [file search] {body.get('query', '')!r} -> {found}\n")
                continue
            if call["type"] == "code_interpreter":
                body = call["code_interpreter"]
                out.write("  [python]\n" + "".join(f"  | {line}\n" for line in body["input"].splitlines()))
                for output in body["outputs"]:
                    if output["type"] == "logs":
                        out.write("".join(f"  > {line}\n" for line in output["logs"].splitlines()))
                    else:
                        out.write(f"  > [image {output['image']['file_id']}]\n")
                continue
            function = call["function"]
            out.write(f"  [tool] {function['name']}({function['arguments']}) -> {function['output']}\n")
    elif event.event == "thread.run.failed":
        out.write(f"\n[run failed] {data['last_error']['message']}\n")
    elif event.event == "thread.run.incomplete":
        out.write(f"\n[run incomplete] {data['incomplete_details']['reason']}\n")
    elif event.event == "thread.run.requires_action":
        names = ", ".join(c["function"]["name"] for c in data["required_action"]["submit_tool_outputs"]["tool_calls"])
        out.write(f"\n[the assistant asked for client-side tools the terminal cannot run: {names}]\n")


async def _chat(runtime: Runtime, user: str, stdin: TextIO, out: TextIO) -> int:
    from .profiles import default_profile, ensure_assistant, load_profiles
    from .sessions import Sessions

    engine = await runtime.start()
    owner = await runtime.accounts.ensure_user(user)
    profile = default_profile(load_profiles())
    assistant = await ensure_assistant(engine, owner, profile, runtime.settings.default_model)
    session = await Sessions(engine).create(owner, assistant.id, title="Terminal chat")
    out.write(f"Chatting with {assistant.name} ({assistant.model}). Empty line or Ctrl-D to quit.\n")
    while True:
        out.write("> ")
        out.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line or not line.strip():
            return 0
        await engine.create_message(
            owner, session.id, MessageCreate(role="user", content=line.strip())
        )
        async for event in engine.stream_run(owner, session.id, RunCreate(assistant_id=assistant.id)):
            render(event, out)
        if event.event == "thread.run.requires_action":
            await engine.cancel_run(owner, session.id, event.data["id"])
            await engine.wait_for_run(event.data["id"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistants", description="The assistants engine's command line.")
    commands = parser.add_subparsers(dest="command", required=True)

    users = commands.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    add = users.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--password", required=True)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create an API key for a user; prints it as the last line")
    create.add_argument("name", help="the user's name")
    create.add_argument("--label", default="default")

    chat = commands.add_parser("chat", help="chat with the default assistant in the terminal")
    chat.add_argument("--user", default="admin", help="whose sessions these are (created if missing)")
    return parser


async def _main(args: argparse.Namespace) -> int:
    settings = Settings()
    if args.command != "chat":
        # Account commands never run code: do not start kernels ahead of need.
        settings = settings.model_copy(update={"code_warm_kernels": 0})
    runtime = Runtime(settings)
    try:
        if args.command == "users":
            return await _users_add(runtime, args.name, args.password)
        if args.command == "keys":
            return await _keys_create(runtime, args.name, args.label)
        return await _chat(runtime, args.user, sys.stdin, sys.stdout)
    finally:
        await runtime.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except AssistantsError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
