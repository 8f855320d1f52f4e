"""How long `build_context` takes for threads of 10 and of 10,000 messages, per context mode.

In-process: a `Runtime` on a temporary SQLite database (or ``--postgres URL``), one session per
context mode and thread size, filled in one transaction through `StoreTx.insert`. Each
measurement calls `build_context` the way the runner does (on `store.read()`, with a
run of that thread, no tail and no tools, the window the runner uses, the executor's memory of
`full` history), and never needs the model: the `summary` session's summary always covers
everything before the last N messages.

As in a session, a turn (the previous run's answer and a new question) is added before each
timed build, untimed. *First run* is the build on a thread the process has not built before
(after a restart): `full` then reads the whole window afresh.

Prints a Markdown table; asserts nothing. Usage::

    .venv/bin/python bench/context_build.py
    .venv/bin/python bench/context_build.py --quick
    .venv/bin/python bench/context_build.py --postgres postgresql+asyncpg://user@host/db
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from assistants.config import Settings  # noqa: E402
from assistants.engine import _truncation_for  # noqa: E402
from assistants.ids import new_id, now  # noqa: E402
from assistants.runs._context import build_context  # noqa: E402
from assistants.runs._history import HistoryMemory  # noqa: E402
from assistants.runtime import Runtime  # noqa: E402
from assistants.sessions import Sessions  # noqa: E402
from assistants.types import ContextMode, Message, Run, TextContent, TextValue, Thread  # noqa: E402
from assistants.types.requests import AssistantCreate  # noqa: E402
from bench._common import NoModel, machine, percentile, print_in_temp_folder  # noqa: E402

OWNER = "user_bench"
MODEL = "bench-model"
INSTRUCTIONS = "You are a helpful assistant. Answer briefly and precisely."
N_RECENT = 20
MODES = (ContextMode.full, ContextMode.last_n, ContextMode.summary, ContextMode.one_off)
VOCABULARY = (
    "the a of to and in that it is was for on are with as be at by this have from or one had "
    "word but what some we can out other were all there when up use your how said an each she "
    "which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people my "
    "over know water than call first who may down side been now find any new work part take get "
    "place made live where after back little only round man year came show every good me give "
    "our under name very through just form sentence great think say help low line differ turn "
    "cause much mean before move right boy old too same tell does set three want air well also "
    "play small end put home read hand port large spell add even land here must big high such"
)
WORDS = VOCABULARY.split(" ")




async def summarize(messages: list[dict[str, Any]]) -> str:
    raise AssertionError("build_context asked for a summary; the session's summary should cover it")


async def read_file(file_id: str) -> bytes | None:
    return None


def sentence(rng: random.Random, words: int = 20) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


@dataclass
class Case:
    mode: ContextMode
    size: int
    thread_id: str = ""
    ids: list[str] = field(default_factory=list)
    """The thread's message ids, oldest first."""
    times: list[float] = field(default_factory=list)
    """Seconds inside `build_context`."""
    first: list[float] = field(default_factory=list)
    """Seconds inside `build_context` for a thread the process builds for the first time."""
    with_tx: list[float] = field(default_factory=list)
    """Seconds including opening and closing the read connection."""
    sent: int = 0
    prompt_tokens: int = 0
    truncated: int = 0
    summary_used: bool = False


async def fill(runtime: Runtime, assistant_id: str, case: Case, rng: random.Random) -> None:
    """A session in `case.mode` holding `case.size` messages (user first, user last)."""
    engine = runtime.engine
    sessions = Sessions(engine)
    session = await sessions.create(
        OWNER, assistant_id, title=f"bench {case.mode.value} {case.size}", context_mode=case.mode,
        context_n=N_RECENT,
    )
    case.thread_id = session.id
    stamp = now()
    ids = case.ids
    async with engine.store.transaction() as tx:
        for index in range(case.size):
            # Roles alternate and the newest is a user message: what a run answers.
            role = "user" if (case.size - 1 - index) % 2 == 0 else "assistant"
            message = Message(
                id=new_id("message"),
                created_at=stamp,
                completed_at=stamp,
                thread_id=session.id,
                role=role,
                content=[TextContent(text=TextValue(value=sentence(rng)))],
                assistant_id=assistant_id if role == "assistant" else None,
                run_id=new_id("run") if role == "assistant" else None,
                attachments=[],
            )
            await tx.insert(message, owner=OWNER)
            ids.append(message.id)
    if case.mode is ContextMode.summary:
        await cover_with_summary(engine, case)


async def cover_with_summary(engine: Any, case: Case) -> None:
    """Everything before the last N is summarized, so no summarization call is due."""
    upto = case.ids[-N_RECENT - 1] if len(case.ids) > N_RECENT else None
    await Sessions(engine).update(
        OWNER, case.thread_id,
        summary="The user and the assistant discussed the project plan, dates and budget.",
        summary_upto=upto,
    )


async def next_turn(runtime: Runtime, assistant_id: str, case: Case, rng: random.Random) -> None:
    """What a session holds before its next run: the last run's answer, and a new question."""
    engine = runtime.engine
    stamp = now()
    async with engine.store.transaction() as tx:
        for role in ("assistant", "user"):
            message = Message(
                id=new_id("message"), created_at=stamp, completed_at=stamp, thread_id=case.thread_id,
                role=role,  # type: ignore[arg-type]
                content=[TextContent(text=TextValue(value=sentence(rng)))],
                assistant_id=assistant_id if role == "assistant" else None,
                run_id=new_id("run") if role == "assistant" else None, attachments=[],
            )
            await tx.insert(message, owner=OWNER)
            case.ids.append(message.id)
    if case.mode is ContextMode.summary:
        await cover_with_summary(engine, case)


async def measure(
    runtime: Runtime, assistant_id: str, case: Case, repeats: int, rng: random.Random, *, first: bool = False
) -> None:
    """`repeats` builds, each after a new turn; with `first`, each on a memory that never saw the thread."""
    engine = runtime.engine
    store = engine.store
    session = await Sessions(engine).get(OWNER, case.thread_id)
    stamp = now()
    run = Run(
        id=new_id("run"),
        created_at=stamp,
        thread_id=case.thread_id,
        assistant_id=assistant_id,
        expires_at=stamp + 600,
        model=MODEL,
        instructions=INSTRUCTIONS,
        truncation_strategy=_truncation_for(session),
    )
    window = engine.settings.context_window - 4096
    for _ in range(repeats):
        if not first:
            await next_turn(runtime, assistant_id, case, rng)
        async with store.read() as tx:
            thread = await tx.get(Thread, case.thread_id, owner=None)  # as the runner reads it
        memory = HistoryMemory() if first else engine.executor.history
        outer = time.perf_counter()
        async with store.read() as tx:
            inner = time.perf_counter()
            prepared = await build_context(
                tx, run=run, thread=thread, tail=[], tools=[], window=window, prompt_budget=None,
                summarize=summarize, read_file=read_file, memory=memory,
            )
            (case.first if first else case.times).append(time.perf_counter() - inner)
        if not first:
            case.with_tx.append(time.perf_counter() - outer)
    record = prepared.record
    case.sent, case.prompt_tokens = record.messages, record.prompt_tokens
    case.truncated, case.summary_used = record.truncated, record.summary_used


async def profile(runtime: Runtime, assistant_id: str, cases: Sequence[Case], out: Path) -> None:
    """cProfile a few more calls per case (after the timed ones), one file per case."""
    import cProfile

    for case in cases:
        profiler = cProfile.Profile()
        profiler.enable()
        await measure(runtime, assistant_id, Case(case.mode, case.size, case.thread_id, case.ids), 5, random.Random(5))
        profiler.disable()
        path = out / f"context-{case.mode.value}-{case.size}.prof"
        profiler.dump_stats(path)
        print(f"profile: {path}", file=sys.stderr)






def report(cases: Sequence[Case], sizes: Sequence[int], backend: str, args: argparse.Namespace) -> str:
    lines = [
        "## Context building: 10 vs 10,000 messages",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Store: {backend}; messages of ~20 words; N = {N_RECENT} for `last_n` and `summary`; "
        f"window = context_window - 4096; repeats: {args.repeats_small} (small) / {args.repeats_large} (large)"
        f"{'; quick run' if args.quick else ''}.",
        "- Time inside `build_context` (the read connection is opened before and closed after; "
        "the last column adds that), each build after a new turn; *first run*: the median of 5 builds "
        "on a thread the process has not built before.",
        "",
        "| mode | messages | median ms | p99 ms | sent | prompt tokens | left out | median ms incl. connection "
        "| first run median ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        lines.append(
            f"| {case.mode.value} | {case.size:,} | {percentile(case.times, 50) * 1000:.2f} "
            f"| {percentile(case.times, 99) * 1000:.2f} | {case.sent:,} | {case.prompt_tokens:,} "
            f"| {case.truncated:,} | {percentile(case.with_tx, 50) * 1000:.2f} "
            f"| {percentile(case.first, 50) * 1000:.2f} |"
        )
    small, large = min(sizes), max(sizes)
    lines += [
        "",
        f"| mode | ratio {large:,} / {small:,} (median) | ratio (p99) |",
        "|---|---:|---:|",
    ]
    by_key = {(c.mode, c.size): c for c in cases}
    for mode in MODES:
        a, b = by_key.get((mode, small)), by_key.get((mode, large))
        if a is None or b is None:
            continue
        r50 = percentile(b.times, 50) / percentile(a.times, 50)
        r99 = percentile(b.times, 99) / percentile(a.times, 99)
        lines.append(f"| {mode.value} | {r50:.2f}x | {r99:.2f}x |")
    lines += [
        "",
        "Target (not asserted): context building for 10,000 messages within 2x of 10 messages. "
        "`full` sends as much history as fits the window; a process remembers what it sent, so "
        "a thread's next run reads only what is new (first run: the whole window).",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace, data_dir: Path) -> str:
    settings = Settings(ASSISTANTS_DATA_DIR=str(data_dir), ASSISTANTS_DATABASE_URL=args.postgres)
    runtime = Runtime(settings, provider=NoModel("context"))
    engine = await runtime.start()
    backend = "PostgreSQL" if args.postgres else "SQLite (WAL) in a temporary folder"
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = [Case(mode, size) for size in sizes for mode in MODES]
    rng = random.Random(1234)
    try:
        assistant = await engine.create_assistant(
            OWNER, AssistantCreate(model=MODEL, instructions=INSTRUCTIONS)
        )
        for case in cases:
            began = time.perf_counter()
            await fill(runtime, assistant.id, case, rng)
            print(f"filled {case.mode.value} x {case.size:,} in {time.perf_counter() - began:.1f} s",
                  file=sys.stderr)
        # Warm up: the tokenizer loads on first use, and the statement cache fills.
        for case in cases:
            await measure(runtime, assistant.id, Case(case.mode, case.size, case.thread_id, case.ids), 2, rng)
        for case in cases:
            repeats = args.repeats_small if case.size == min(sizes) else args.repeats_large
            await measure(runtime, assistant.id, case, 5, rng, first=True)
            await measure(runtime, assistant.id, case, repeats, rng)
        if args.profile is not None:
            await profile(runtime, assistant.id, cases, args.profile)
        return report(cases, sizes, backend, args)
    finally:
        if args.postgres:
            # A shared database keeps only what it had: drop our sessions (messages go with them).
            async with engine.store.transaction() as tx:
                for case in cases:
                    if case.thread_id:
                        await tx.delete(Thread, case.thread_id, owner=OWNER)
        await runtime.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer repeats)")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="postgresql+asyncpg://... to measure on PostgreSQL instead of SQLite")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="also cProfile 5 calls per case into DIR/context-MODE-SIZE.prof")
    parser.add_argument("--sizes", default="10,10000", help="comma-separated thread sizes")
    parser.add_argument("--repeats-small", type=int, default=None, help="repeats for the small thread (default 50)")
    parser.add_argument("--repeats-large", type=int, default=None, help="repeats for the large thread (default 20)")
    args = parser.parse_args(argv)
    if args.repeats_small is None:
        args.repeats_small = 10 if args.quick else 50
    if args.repeats_large is None:
        args.repeats_large = 5 if args.quick else 20
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    print_in_temp_folder("bench-context-", lambda folder: run(args, folder))


if __name__ == "__main__":
    main()
