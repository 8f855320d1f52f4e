"""What our engine adds to time-to-first-token (TTFT), measured against the real server.

Starts the scripted model (``tests/scripted_model.py``, echo responder) as its own process and
the real server (``chainlit run app.py``) against it, then measures, at 1, 10 and 100
simultaneous requests:

- direct: ``openai.AsyncOpenAI(...).chat.completions.create(stream=True)`` against the model,
  from request start to the first chunk with non-empty content;
- ours: ``POST /v1/threads/{id}/runs`` with ``stream: true``, from request start to the first
  ``thread.message.delta`` SSE event (read with plain httpx, no SDK on the client side).

Each concurrent slot has its own assistant and thread, made before timing; the user message a run
answers is added outside the timed section, and a round waits for every stream to end (a thread
holds one active run at a time). Rounds rotate over the slots so that no thread grows much more
than another. Direct and /v1 rounds alternate, so background load hits both alike.

Prints a Markdown table; asserts nothing. Usage::

    .venv/bin/python bench/engine_overhead.py            # >= 200 samples per level
    .venv/bin/python bench/engine_overhead.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import cpu_seconds, machine, percentile  # noqa: E402
from tests.server import Server, free_port, start_server  # noqa: E402

MODEL = "scripted-model"
PROMPT = (
    "Please repeat this sentence back to me so that we can measure how quickly the first "
    "words of your answer arrive."
)
READY_LINE = "scripted model listening on "


# Processes ---------------------------------------------------------------------------------------


def _own_children() -> set[int]:
    """Pids of this process's direct children (Linux), to reap anything left half-started."""
    pids: set[int] = set()
    with suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with suppress(OSError), open(f"/proc/self/task/{task}/children") as fh:
                pids.update(int(p) for p in fh.read().split())
    return pids


def _stop_process(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _stop_pid(pid: int) -> None:
    with suppress(ProcessLookupError, ChildProcessError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def start_model(chunks: int, delay: float, *more: str) -> tuple[subprocess.Popen[str], str]:
    """Run ``python -m tests.scripted_model`` on a free port; returns it and its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.scripted_model", "--port", str(port),
         "--chunks", str(chunks), "--delay", str(delay), *more],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own session: a Ctrl-C in the terminal reaches only us, and we stop it in order.
        start_new_session=True,
    )
    found: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if not found and line.startswith(READY_LINE):
                found.append(line[len(READY_LINE):].strip())
            # Keep draining so the pipe never fills up and blocks the model.

    threading.Thread(target=read, daemon=True, name="scripted-model-stdout").start()
    deadline = time.monotonic() + 30
    while not found:
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_process(process)
            raise RuntimeError("the scripted model did not start")
        time.sleep(0.02)
    return process, found[0]


PROFILER = """\
import atexit, cProfile, os, sys
if os.path.basename(sys.argv[0] if sys.argv else "") == "chainlit":
    _profile = cProfile.Profile()
    _profile.enable()

    def _dump():
        if _profile is not None:
            _profile.disable()
            _profile.dump_stats(os.path.join({out!r}, f"server-{{os.getpid()}}.prof"))

    # Chainlit ends its process with os._exit(0), which skips atexit: dump on the way through.
    _real_exit = os._exit

    def _exit(code):
        _dump()
        _real_exit(code)

    os._exit = _exit
    atexit.register(_dump)
"""


def profiling_env(tmp: Path, out: Path) -> dict[str, str]:
    """Environment that makes the server profile its main thread (the event loop) with cProfile."""
    out.mkdir(parents=True, exist_ok=True)
    hook = tmp / "profile-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PROFILER.format(out=str(out.resolve())))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}


@contextmanager
def running(chunks: int, delay: float, profile: Path | None = None) -> Iterator[tuple[str, Server, int]]:
    """The scripted model and the real server, both stopped on the way out (Ctrl-C included)."""
    model: subprocess.Popen[str] | None = None
    server: Server | None = None
    before = _own_children()
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        try:
            model, model_url = start_model(chunks, delay)
            print(f"scripted model at {model_url}", file=sys.stderr)
            # One user runs every slot: lift the per-user limit on concurrent runs above 100.
            extra = {"ASSISTANTS_MAX_RUNS_PER_USER": "1000"}
            if profile is not None:
                extra.update(profiling_env(Path(tmp), profile))
            server = start_server(Path(tmp), model_url=model_url, extra_env=extra)
            print(f"server at {server.api_url} (log: {server.log_path})", file=sys.stderr)
            yield model_url, server, model.pid
        finally:
            if server is not None:
                server.stop()
            else:
                # Interrupted inside start_server: stop the server process it had started.
                known = {model.pid} if model is not None else set()
                for pid in _own_children() - before - known:
                    _stop_pid(pid)
            if model is not None:
                _stop_process(model)


# Measurements ------------------------------------------------------------------------------------




@dataclass
class Level:
    concurrency: int
    direct: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    server_cpu: float = 0.0
    """Server CPU seconds spent while the timed runs streamed (whole runs, not only to first token)."""
    model_cpu_direct: float = 0.0
    model_cpu_ours: float = 0.0


@dataclass
class Slot:
    assistant_id: str
    thread_id: str


async def direct_ttft(client: openai.AsyncOpenAI) -> float:
    """Seconds from request start to the first chunk carrying content; reads the stream to its end."""
    start = time.perf_counter()
    first: float | None = None
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    if first is None:
        raise RuntimeError("the direct stream carried no content")
    return first


async def add_message(http: httpx.AsyncClient, slot: Slot) -> None:
    response = await http.post(
        f"/threads/{slot.thread_id}/messages", json={"role": "user", "content": PROMPT}
    )
    if response.status_code != 200:
        raise RuntimeError(f"adding a message failed: {response.status_code} {response.text[:300]}")


async def ours_ttft(http: httpx.AsyncClient, slot: Slot) -> float:
    """Seconds from request start to the first `thread.message.delta` event; reads to the end."""
    start = time.perf_counter()
    first: float | None = None
    ended: str | None = None
    body = {"assistant_id": slot.assistant_id, "stream": True}
    async with http.stream("POST", f"/threads/{slot.thread_id}/runs", json=body) as response:
        if response.status_code != 200:
            text = (await response.aread()).decode(errors="replace")
            raise RuntimeError(f"creating a run failed: {response.status_code} {text[:300]}")
        async for line in response.aiter_lines():
            if not line.startswith("event: "):
                continue
            name = line[7:]
            if first is None and name == "thread.message.delta":
                first = time.perf_counter() - start
            elif name.startswith("thread.run.") and name in (
                "thread.run.completed", "thread.run.failed", "thread.run.incomplete",
                "thread.run.cancelled", "thread.run.expired", "thread.run.requires_action",
            ):
                ended = name
    if ended != "thread.run.completed":
        raise RuntimeError(f"the run ended with {ended or 'no end event'}")
    if first is None:
        raise RuntimeError("the run streamed no thread.message.delta")
    return first


async def make_slots(http: httpx.AsyncClient, count: int) -> list[Slot]:
    async def one(index: int) -> Slot:
        a = await http.post("/assistants", json={"model": MODEL, "name": f"bench-{index}",
                                                 "instructions": "Repeat the user's words."})
        a.raise_for_status()
        t = await http.post("/threads", json={})
        t.raise_for_status()
        return Slot(a.json()["id"], t.json()["id"])

    slots: list[Slot] = []
    for start in range(0, count, 20):  # a few at a time: setup is not what we measure
        slots += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 20))))
    return slots


def _record(results: Sequence[float | BaseException], into: list[float], errors: list[str]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            errors.append(f"{type(result).__name__}: {result}")
        else:
            into.append(result)


@dataclass
class Pids:
    server: int
    model: int


async def run_round(
    oa: openai.AsyncOpenAI, http: httpx.AsyncClient, slots: Sequence[Slot], level: Level, pids: Pids
) -> None:
    """One round: N simultaneous direct streams, then N simultaneous runs on N threads."""
    n = len(slots)
    model_before = cpu_seconds(pids.model)
    direct = await asyncio.gather(*(direct_ttft(oa) for _ in range(n)), return_exceptions=True)
    level.model_cpu_direct += cpu_seconds(pids.model) - model_before
    _record(direct, level.direct, level.errors)
    # Untimed: the user message each run answers.
    added = await asyncio.gather(*(add_message(http, s) for s in slots), return_exceptions=True)
    ready = [s for s, r in zip(slots, added, strict=True) if not isinstance(r, BaseException)]
    level.errors += [f"{type(r).__name__}: {r}" for r in added if isinstance(r, BaseException)]
    server_before, model_before = cpu_seconds(pids.server), cpu_seconds(pids.model)
    ours = await asyncio.gather(*(ours_ttft(http, s) for s in ready), return_exceptions=True)
    level.server_cpu += cpu_seconds(pids.server) - server_before
    level.model_cpu_ours += cpu_seconds(pids.model) - model_before
    _record(ours, level.ours, level.errors)


def pick(slots: Sequence[Slot], concurrency: int, round_no: int) -> list[Slot]:
    """The slots for one round, rotating so all threads grow alike."""
    return [slots[(round_no * concurrency + i) % len(slots)] for i in range(concurrency)]


async def measure(
    model_url: str, server: Server, key: str, pids: Pids, args: argparse.Namespace
) -> list[Level]:
    levels = [int(x) for x in args.levels.split(",")]
    # Both servers are uvicorn, which closes idle connections after 5 s; expiring ours sooner
    # keeps a request from racing that close (a spurious ReadError).
    pool = {"max_connections": 2000, "max_keepalive_connections": 2000, "keepalive_expiry": 2.0}
    timeout = httpx.Timeout(120.0, connect=30.0)
    headers = {"authorization": f"Bearer {key}", "openai-beta": "assistants=v2"}
    # The SDK brings its own HTTP library (httpx2 in openai 3.x); give it the same pool settings.
    sdk_library = sys.modules[openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0]]
    sdk_http = openai.DefaultAsyncHttpxClient(limits=sdk_library.Limits(**pool))
    async with (
        httpx.AsyncClient(base_url=server.api_url, headers=headers, limits=httpx.Limits(**pool), timeout=timeout) as http,
        openai.AsyncOpenAI(base_url=model_url, api_key="sk-bench", max_retries=0, timeout=120.0, http_client=sdk_http) as oa,
    ):
        slots = await make_slots(http, max(levels))
        print(f"{len(slots)} assistants and threads ready; warming up", file=sys.stderr)
        warm = Level(0)
        for r in range(args.warmup):
            await run_round(oa, http, pick(slots, 1, r), warm, pids)
        for concurrency in levels:
            await run_round(oa, http, pick(slots, concurrency, 0), warm, pids)
        if warm.errors:
            print(f"warm-up errors: {warm.errors[:3]}", file=sys.stderr)

        results: list[Level] = []
        for concurrency in levels:
            level = Level(concurrency)
            rounds = max(1, math.ceil(args.samples / concurrency))
            began = time.perf_counter()
            for r in range(rounds):
                await run_round(oa, http, pick(slots, concurrency, r), level, pids)
            print(
                f"concurrency {concurrency}: {rounds} rounds, {len(level.ours)} runs, "
                f"{len(level.errors)} errors, {time.perf_counter() - began:.1f} s",
                file=sys.stderr,
            )
            results.append(level)
        return results


# Report ------------------------------------------------------------------------------------------




def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:.1f}"


def per(seconds: float, samples: Sequence[float]) -> str:
    return ms(seconds / len(samples)) if samples else "n/a"




def report(levels: Sequence[Level], args: argparse.Namespace) -> str:
    lines = [
        "## Engine overhead: time to first token",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Setup: scripted model (echo, {args.chunks} chunks, {args.delay} s between chunks) and "
        "`chainlit run app.py` (SQLite) on this machine, client in one asyncio process; "
        f"{'quick run' if args.quick else f'>= {args.samples} samples per level'}, "
        f"{args.warmup} warm-up runs.",
        "- direct: `chat.completions.create(stream=True)` to first content chunk; "
        "ours: `POST /v1/threads/{id}/runs` (`stream: true`) to first `thread.message.delta`.",
        "",
        "| concurrency | samples (direct / ours) | direct p50 ms | direct p99 ms | ours p50 ms "
        "| ours p99 ms | overhead p50 ms | overhead p99 ms | server CPU ms/run | model CPU ms/req (direct / ours) | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        d50, d99 = percentile(level.direct, 50), percentile(level.direct, 99)
        o50, o99 = percentile(level.ours, 50), percentile(level.ours, 99)
        lines.append(
            f"| {level.concurrency} | {len(level.direct)} / {len(level.ours)} | {ms(d50)} | {ms(d99)} "
            f"| {ms(o50)} | {ms(o99)} | {ms(o50 - d50)} | {ms(o99 - d99)} "
            f"| {per(level.server_cpu, level.ours)} "
            f"| {per(level.model_cpu_direct, level.direct)} / {per(level.model_cpu_ours, level.ours)} "
            f"| {len(level.errors)} |"
        )
    lines += [
        "",
        "Server CPU ms/run: CPU time of the server process while the timed runs streamed, divided by "
        "the runs (a whole run: create, context, stream, completion; the untimed message adds are "
        "left out). The server is one asyncio process, so at concurrency N the last run's first "
        "token waits for roughly N x (CPU each run spends before its first token).",
        "",
        "Target (not asserted): overhead p50 <= 5 ms and p99 <= 25 ms at 100 concurrent runs.",
    ]
    errors = [e for level in levels for e in level.errors]
    if errors:
        lines += ["", f"First errors ({len(errors)} in all):", *(f"- {e}" for e in errors[:5])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about 20 samples per level)")
    parser.add_argument("--levels", default="1,10,100", help="comma-separated concurrency levels")
    parser.add_argument("--samples", type=int, default=None, help="samples per level (default 200, 20 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up runs at concurrency 1 (default 20, 5 with --quick)")
    parser.add_argument("--chunks", type=int, default=4, help="chunks the scripted model splits each reply into")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between the model's chunks")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="profile the server's event loop with cProfile into DIR/server-PID.prof "
                             "(figures are then inflated; use for hot spots only)")
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = 20 if args.quick else 200
    if args.warmup is None:
        args.warmup = 5 if args.quick else 20

    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop both processes.
    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        with running(args.chunks, args.delay, args.profile) as (model_url, server, model_pid):
            key = server.key_for("bench")
            pids = Pids(server=server.process.pid, model=model_pid)
            levels = asyncio.run(measure(model_url, server, key, pids, args))
            if any(level.errors for level in levels):
                tail = server.log().splitlines()[-40:]
                print("errors happened; the server log ends with:", *tail, sep="\n", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; the model and the server were stopped", file=sys.stderr)
        raise SystemExit(130) from None
    print(report(levels, args))
    if args.profile is not None:
        print(f"\nServer profile(s) in {args.profile}: "
              f"`.venv/bin/python -m pstats {args.profile}/server-*.prof`", file=sys.stderr)


if __name__ == "__main__":
    main()
