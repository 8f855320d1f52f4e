"""Load: many sessions streaming runs through `/v1` SSE at once, for a fixed time.

Starts the scripted model as its own process, replying to every request with ``--tokens`` chunks,
each carrying the wall-clock time it was sent, one every ``--delay`` seconds; and the real server
(``chainlit run app.py``) against it, on SQLite or on ``--postgres URL``. Then ``--sessions``
clients (asyncio, plain httpx, no SDK; in ``--clients`` processes) each loop for ``--seconds``:
add a message, ``POST /v1/threads/{id}/runs`` with ``stream: true``, read the SSE stream to its
end. Measured:

- errors (failed requests, runs that did not complete);
- relay latency per token: when the client read a `thread.message.delta` minus when the model
  sent that chunk (one clock, one machine); a delta that carries several chunks (the server may
  merge the deltas a slow reader has queued) counts each of them, with its own stamp;
- throughput: the model's chunks received per second, all sessions together;
- the server's memory (RSS) before the load, at its end, and after ``--settle`` idle seconds, and
  its CPU time during the load (also per token, which depends less on what else the machine
  runs); the model's and the clients' CPU, since all the processes share the machine's cores;
- the machine's load average before and after, to show what else was running;
- the client's own event-loop lag (how late a task sleeping 10 ms wakes): every relay latency
  includes it. ``--clients N`` shares the sessions among N client processes, so that no one
  client loop's stalls count as the server's.

The processes share the machine's cores, so the client's own parsing is part of the figures.
Only `/v1` is loaded; Chainlit's socket is not. Prints a Markdown table; asserts nothing.
Usage::

    .venv/bin/python bench/load.py                       # 200 sessions, 60 s, SQLite
    .venv/bin/python bench/load.py --sessions 20 --seconds 10
    .venv/bin/python bench/load.py --postgres postgresql+asyncpg://user@host/db
    .venv/bin/python bench/load.py --rounds 3           # does memory keep growing, round after round?
    .venv/bin/python bench/load.py --clients 4          # the sessions in four client processes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench._common import cpu_seconds, machine, percentile  # noqa: E402
from bench.engine_overhead import Slot, _stop_process, add_message, make_slots, start_model  # noqa: E402
from tests.server import Server, start_server  # noqa: E402

END_EVENTS = ("thread.run.completed", "thread.run.failed", "thread.run.incomplete", "thread.run.cancelled", "thread.run.expired")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.first_latencies: list[float] = []
        """The relay latency of each reply's first token."""
        self.phases: dict[str, list[float]] = {}
        """Seconds from the start of a run's round (adding its message) to each milestone."""
        self.tokens = 0
        self.runs = 0
        self.errors: list[str] = []

    def add(self, other: Tally) -> None:
        """Count in another client process's tally."""
        self.latencies += other.latencies
        self.first_latencies += other.first_latencies
        for phase, times in other.phases.items():
            self.phases.setdefault(phase, []).extend(times)
        self.tokens += other.tokens
        self.runs += other.runs
        self.errors += other.errors


@dataclass
class ClientPart:
    """What one client process measured."""

    tally: Tally
    lags: list[float]
    """How late its event loop woke a task (`watch_lag`), seconds."""
    cpu: float
    """Its CPU seconds while its sessions ran."""
    began: float
    ended: float
    """When its sessions began and ended (wall clock)."""


async def one_run(http: httpx.AsyncClient, slot: Slot, tally: Tally) -> None:
    began = time.monotonic()

    def mark(phase: str) -> None:
        tally.phases.setdefault(phase, []).append(time.monotonic() - began)

    await add_message(http, slot)
    mark("message added")
    ended = None
    body = {"assistant_id": slot.assistant_id, "stream": True}
    async with http.stream("POST", f"/threads/{slot.thread_id}/runs", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code} {(await response.aread())[:200]!r}")
        event = ""
        first = True
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event in END_EVENTS:
                    ended = event
                    mark("run ended")
                elif event in ("thread.run.created", "thread.run.in_progress"):
                    mark(event)
            elif line.startswith("data: ") and event == "thread.message.delta":
                now = time.time()
                # The delta's text is the stamps the model sent: `..."value":"1795800000.123456 "...`
                # (several, space-separated, when the server merged queued deltas).
                marker = line.find('"value":"')
                if marker >= 0:
                    for stamp in line[marker + 9 : line.index('"', marker + 9)].split():
                        if first:
                            tally.first_latencies.append(now - float(stamp))
                            mark("first token")
                            first = False
                        tally.latencies.append(now - float(stamp))
                        tally.tokens += 1
    if ended != "thread.run.completed":
        raise RuntimeError(f"the run ended with {ended or 'no end event'}")
    tally.runs += 1


async def session(http: httpx.AsyncClient, slot: Slot, deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline:
        try:
            await one_run(http, slot, tally)
        except Exception as exc:
            tally.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(0.5)


async def load(api_url: str, key: str, server_pid: int, model_pid: int, args: argparse.Namespace) -> str:
    """`args.rounds` rounds of load on the same server, one table row each, each round on new
    threads (so every round does the same work: threads that grew round after round would make
    each run read more). A later round's memory shows whether what the first left behind was a
    one-time cost (caches, pools, the allocator's high-water mark) or growth."""
    limits = httpx.Limits(
        max_connections=args.sessions + 10, max_keepalive_connections=args.sessions + 10, keepalive_expiry=2.0
    )
    rows = []
    for _ in range(args.rounds):
        async with httpx.AsyncClient(
            base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits
        ) as http:
            slots = await make_slots(http, args.sessions)
        await asyncio.sleep(2)
        rows.append(await load_round(api_url, key, slots, server_pid, model_pid, args))
    return "\n".join(rows)


async def watch_lag(lags: list[float], every: float = 0.01) -> None:
    """How late this process's event loop wakes a task that sleeps `every` seconds: the client's
    own delay, which every relay latency it measures includes."""
    while True:
        due = time.perf_counter() + every
        await asyncio.sleep(every)
        lags.append(max(time.perf_counter() - due, 0.0))


async def client_sessions(
    api_url: str, key: str, slots: Sequence[Slot], seconds: float, start_at: float, connections: int
) -> ClientPart:
    """Run `slots`' sessions from `start_at` (wall clock) for `seconds`."""
    # The server (uvicorn) closes connections idle for 5 s; expiring ours sooner keeps a request
    # from racing that close (a spurious ReadError), as in bench/engine_overhead.py.
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=2.0)
    async with httpx.AsyncClient(
        base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits
    ) as http:
        await asyncio.sleep(max(start_at - time.time(), 0.0))
        cpu_before = time.process_time()
        tally, lags = Tally(), list[float]()
        watcher = asyncio.create_task(watch_lag(lags))
        began = time.time()
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(session(http, slot, deadline, tally) for slot in slots))
        watcher.cancel()
        return ClientPart(tally, lags, time.process_time() - cpu_before, began, time.time())


def client_process(
    api_url: str, key: str, slots: Sequence[Slot], seconds: float, start_at: float, connections: int
) -> ClientPart:
    """`client_sessions` in a process of its own (`--clients`)."""
    return asyncio.run(client_sessions(api_url, key, slots, seconds, start_at, connections))


async def load_round(
    api_url: str,
    key: str,
    slots: Sequence[Slot],
    server_pid: int,
    model_pid: int,
    args: argparse.Namespace,
) -> str:
    before = rss_mb(server_pid)
    load_before = os.getloadavg()[0]
    connections = len(slots) // args.clients + 10
    if args.clients == 1:
        cpu_before = cpu_seconds(server_pid), cpu_seconds(model_pid)
        parts = [await client_sessions(api_url, key, slots, args.seconds, time.time(), connections)]
    else:
        loop = asyncio.get_running_loop()
        shares = [slots[i :: args.clients] for i in range(args.clients)]
        start_at = time.time() + 5.0  # the client processes start first
        with ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("spawn")) as pool:
            running = [
                loop.run_in_executor(pool, client_process, api_url, key, share, args.seconds, start_at, connections)
                for share in shares
            ]
            await asyncio.sleep(max(start_at - time.time(), 0.0))
            cpu_before = cpu_seconds(server_pid), cpu_seconds(model_pid)
            parts = await asyncio.gather(*running)
    began, ended = min(part.began for part in parts), max(part.ended for part in parts)
    elapsed = ended - began
    late = max(part.began for part in parts) - began
    cpu, model_cpu = (cpu_seconds(pid) - b for pid, b in zip((server_pid, model_pid), cpu_before, strict=True))
    client_cpu = sum(part.cpu for part in parts)
    at_end = rss_mb(server_pid)
    load_after = os.getloadavg()[0]
    tally = Tally()
    lags: list[float] = []
    for part in parts:
        tally.add(part.tally)
        lags += part.lags
    await asyncio.sleep(args.settle)
    after = rss_mb(server_pid)
    lat = tally.latencies or [float("nan")]
    lines = [
        f"| {args.sessions} | {elapsed:.0f} s | {tally.runs:,} | {len(tally.errors)} | {tally.tokens / elapsed:,.0f} "
        f"| {percentile(lat, 50) * 1000:.1f} | {percentile(lat, 99) * 1000:.1f} | {cpu / elapsed:.2f} "
        f"| {cpu / max(tally.tokens, 1) * 1e6:.0f} | {model_cpu / elapsed:.2f} / {client_cpu / elapsed:.2f} "
        f"| {load_before:.1f} / {load_after:.1f} | {before:.0f} / {at_end:.0f} / {after:.0f} |",
    ]
    lags = lags or [float("nan")]
    lines += [
        "",
        f"The client's own event-loop lag ({args.clients} process{'es' if args.clients > 1 else ''}, included in every "
        f"relay latency above): p50 {percentile(lags, 50) * 1000:.1f} ms, p99 {percentile(lags, 99) * 1000:.1f} ms, "
        f"max {max(lags) * 1000:.0f} ms." + (f" The last client process began {late:.1f} s after the first." if late > 0.5 else ""),
    ]
    firsts = tally.first_latencies or [float("nan")]
    lines += [
        "",
        f"Relay of each reply's first token: p50 {percentile(firsts, 50) * 1000:.1f} ms, p99 {percentile(firsts, 99) * 1000:.1f} ms "
        f"({len(tally.first_latencies):,} replies).",
        "Median seconds from adding a run's message: "
        + ", ".join(f"{phase} {percentile(times, 50):.2f}" for phase, times in tally.phases.items())
        + ".",
    ]
    if tally.errors:
        lines += ["", "First errors:", *(f"- {e}" for e in tally.errors[:5])]
    return "\n".join(lines)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both load benchmarks (`/v1` here, the chat's socket in load_socket.py) take."""
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tokens", type=int, default=100, help="chunks per reply")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between a reply's chunks")
    parser.add_argument("--settle", type=float, default=15.0, help="idle seconds before the last memory reading")
    parser.add_argument("--postgres", metavar="URL", default=None, help="a blank PostgreSQL database to use")


@contextlib.contextmanager
def loaded_server(args: argparse.Namespace) -> Iterator[tuple[Server, subprocess.Popen[str]]]:
    """The stamping scripted model and the real server against it, for `args.sessions` sessions."""
    model, model_url = start_model(0, args.delay, "--stamps", str(args.tokens))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
            extra = {"ASSISTANTS_MAX_RUNS_PER_USER": str(args.sessions + 10), "ASSISTANTS_CODE_WARM_KERNELS": "0"}
            if args.postgres:
                extra["ASSISTANTS_DATABASE_URL"] = args.postgres
            server = start_server(Path(tmp), model_url=model_url, extra_env=extra)
            try:
                yield server, model
            finally:
                server.stop()
    finally:
        _stop_process(model)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of load on the same server, a row each")
    parser.add_argument(
        "--clients", type=int, default=1,
        help="client processes the sessions are shared among (one process's own delays count in every latency it measures)",
    )
    args = parser.parse_args(argv)
    with loaded_server(args) as (server, model):
        # A name of its own: a shared PostgreSQL database keeps the users of earlier loads.
        key = server.key_for(f"loader_{os.getpid()}")
        table = asyncio.run(load(server.api_url, key, server.process.pid, model.pid, args))
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(
        "\n".join(
            [
                f"Load through /v1 SSE on {backend}; {machine()}; {time.strftime('%Y-%m-%d')}.",
                f"Each reply: {args.tokens} chunks, one every {args.delay * 1000:.0f} ms.",
                "",
                "| sessions | time | runs | errors | tokens/s | relay p50 ms | relay p99 ms | server CPU (cores) "
                "| server CPU µs/token | model / client CPU (cores) | load average before / after "
                "| server RSS MB before / end / settled |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
                table,
            ]
        )
    )


if __name__ == "__main__":
    main()
