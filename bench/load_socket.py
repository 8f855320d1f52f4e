"""Load through the chat: many sessions streaming answers over Chainlit's socket at once.

The socket half of the load test (`bench/load.py` is the `/v1` SSE half). Starts the scripted model
as its own process, replying to every request with ``--tokens`` chunks, each carrying the
wall-clock time it was sent, one every ``--delay`` seconds; and the real server (``chainlit run
app.py``) against it, on SQLite or on ``--postgres URL``. One user logs in once through `/login`;
then ``--sessions`` socket.io clients (python-socketio's asyncio client, the protocol the chat page
speaks: connect with the login cookie, `connection_successful`, then `client_message`) each open a
chat session and, for ``--seconds``, send a message and read the answer as the browser would:
`stream_token` events until `task_end`. Measured:

- errors (refused connections, turns without an answer, turns that did not end in time);
- relay latency per token: when a `stream_token` event arrived minus when the model sent each
  chunk it carries (the chat coalesces tokens to at most 20 updates per second per message, so this
  includes up to 50 ms of deliberate batching);
- throughput: model chunks delivered per second, all sessions together;
- socket events per second, the server's memory (RSS) before the load, at its end and after
  ``--settle`` idle seconds, and its CPU time during the load.

Prints a Markdown table; asserts nothing. Usage::

    .venv/bin/python bench/load_socket.py                      # 200 sessions, 60 s, SQLite
    .venv/bin/python bench/load_socket.py --sessions 20 --seconds 10
    .venv/bin/python bench/load_socket.py --postgres postgresql+asyncpg://user@host/db
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import socketio  # noqa: E402

from bench._common import cpu_seconds, machine, percentile  # noqa: E402
from bench.load import add_load_arguments, loaded_server, rss_mb  # noqa: E402

STAMP = re.compile(r"\d{10}\.\d+")
TURN_TIMEOUT = 120.0


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.sent_at: list[float] = []
        """When the model sent each token of `latencies` (wall clock)."""
        self.tokens = 0
        self.events = 0
        self.turns = 0
        self.errors: list[str] = []


class ChatSession:
    """One browser tab's worth of chat: a socket.io connection and its current turn."""

    def __init__(self, url: str, cookie: str, tally: Tally) -> None:
        self.url = url
        self.cookie = cookie
        self.tally = tally
        self.client = socketio.AsyncClient(reconnection=False)
        self.turn_done = asyncio.Event()
        self.answered = False
        self.client.on("stream_token", self._on_token)
        self.client.on("task_end", self._on_task_end)
        self.client.on("*", self._on_other)

    async def open(self) -> None:
        auth = {"clientType": "webapp", "sessionId": str(uuid.uuid4()), "threadId": None, "userEnv": "{}"}
        await self.client.connect(
            self.url,
            socketio_path="/ws/socket.io",
            transports=["websocket"],
            headers={"Cookie": self.cookie},
            auth=auth,
            wait_timeout=30,
        )
        await self.client.emit("connection_successful")

    async def turn(self, text: str) -> None:
        self.turn_done.clear()
        self.answered = False
        message = {
            "id": str(uuid.uuid4()),
            "threadId": "",
            "name": "User",
            "type": "user_message",
            "output": text,
            "createdAt": datetime.now(UTC).isoformat(),
        }
        await self.client.emit("client_message", {"message": message, "fileReferences": []})
        await asyncio.wait_for(self.turn_done.wait(), TURN_TIMEOUT)
        if not self.answered:
            raise RuntimeError("the turn ended without an answer")
        self.tally.turns += 1

    async def close(self) -> None:
        await self.client.disconnect()

    async def _on_token(self, data: dict[str, object]) -> None:
        now = time.time()
        self.tally.events += 1
        stamps = STAMP.findall(str(data.get("token", "")))
        for stamp in stamps:
            self.tally.latencies.append(now - float(stamp))
            self.tally.sent_at.append(float(stamp))
        self.tally.tokens += len(stamps)
        if stamps:
            self.answered = True

    async def _on_task_end(self, *_: object) -> None:
        self.tally.events += 1
        self.turn_done.set()

    async def _on_other(self, event: str, *_: object) -> None:
        self.tally.events += 1


async def chat(session: ChatSession, deadline: float) -> None:
    number = 0
    while time.monotonic() < deadline:
        number += 1
        try:
            await session.turn(f"Question {number}, please answer.")
        except Exception as exc:
            session.tally.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(0.5)


async def login(url: str, name: str, password: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        answer = await http.post("/login", data={"username": name, "password": password})
        answer.raise_for_status()
        return "; ".join(f"{key}={value}" for key, value in http.cookies.items())


async def load(url: str, cookie: str, server_pid: int, args: argparse.Namespace) -> str:
    tally = Tally()
    sessions = [ChatSession(url, cookie, tally) for _ in range(args.sessions)]
    for start in range(0, len(sessions), 20):
        await asyncio.gather(*(s.open() for s in sessions[start : start + 20]))
    await asyncio.sleep(2)
    before = rss_mb(server_pid)
    cpu_before = cpu_seconds(server_pid)
    began, started_at = time.monotonic(), time.time()
    deadline = began + args.seconds
    await asyncio.gather(*(chat(s, deadline) for s in sessions))
    elapsed = time.monotonic() - began
    cpu = cpu_seconds(server_pid) - cpu_before
    at_end = rss_mb(server_pid)
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    await asyncio.sleep(args.settle)
    after = rss_mb(server_pid)
    lat = tally.latencies or [float("nan")]
    lines = [
        f"| {args.sessions} | {elapsed:.0f} s | {tally.turns:,} | {len(tally.errors)} | {tally.tokens / elapsed:,.0f} "
        f"| {tally.events / elapsed:,.0f} | {percentile(lat, 50) * 1000:.1f} | {percentile(lat, 99) * 1000:.1f} "
        f"| {cpu / elapsed:.2f} | {before:.0f} / {at_end:.0f} / {after:.0f} |",
    ]
    # Every session sends its first message at the same moment: the first answers all stream at
    # once, the later ones as earlier turns end.
    windows = []
    for label, low, high in (("first 10 s", 0.0, 10.0), ("after", 10.0, float("inf"))):
        part = [lat for lat, sent in zip(tally.latencies, tally.sent_at, strict=True) if low <= sent - started_at < high]
        if part:
            windows.append(f"{label} p50 {percentile(part, 50) * 1000:.1f} / p99 {percentile(part, 99) * 1000:.1f} ms ({len(part):,} tokens)")
    lines += ["", "Relay latency by when the model sent the token, from the start of the load: " + "; ".join(windows) + "."]
    if tally.errors:
        lines += ["", "First errors:", *(f"- {e}" for e in tally.errors[:5])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    with loaded_server(args) as (server, _model):
        server.cli("users", "add", "loader", "--password", "loader-password")
        cookie = asyncio.run(login(server.url, "loader", "loader-password"))
        table = asyncio.run(load(server.url, cookie, server.process.pid, args))
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(
        "\n".join(
            [
                f"Load through the chat's socket on {backend}; {machine()}; {time.strftime('%Y-%m-%d %H:%M')}.",
                f"Each reply: {args.tokens} chunks, one every {args.delay * 1000:.0f} ms.",
                "",
                "| sessions | time | turns | errors | tokens/s | socket events/s | relay p50 ms | relay p99 ms "
                "| server CPU (cores) | server RSS MB before / end / settled |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
                table,
            ]
        )
    )


if __name__ == "__main__":
    main()
