"""How fast the code interpreter's kernels answer: a warm round trip, and a new session's first call.

In-process: a real `KernelPool` (bubblewrap sandbox, Debian's python3-ipykernel) in a temporary
folder, with the default limits.

- *warm round trip*: `kernel.execute("1+1")` in a session whose kernel is running, repeated
  (after a few unmeasured calls); the time includes the scan of the working folder for changed
  files that every execution does.
- *first call in a new session*: from `pool.session(...)` on a new session id to the result of
  its first `execute("1+1")`, with the warm pool full (the benchmark waits for it to refill
  between sessions, as an idle server would have).
- *cold start*: the same with no warm kernel (`warm=0`), i.e. a kernel started on demand.

Prints a Markdown table; asserts nothing. Usage::

    .venv/bin/python bench/code_interpreter.py
    .venv/bin/python bench/code_interpreter.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from assistants.kernels import KernelPool  # noqa: E402
from bench._common import machine, percentile, print_in_temp_folder  # noqa: E402

OWNER = "user_bench"
READY_TIMEOUT = 120.0


def load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} / {five:.2f}"


async def round_trips(pool: KernelPool, repeats: int) -> list[float]:
    """Seconds per `execute("1+1")` in one session whose kernel is running."""
    times: list[float] = []
    async with pool.session("thread_bench_warm", owner=OWNER) as kernel:
        for _ in range(10):
            await kernel.execute("1+1")
        for _ in range(repeats):
            began = time.perf_counter()
            result = await kernel.execute("1+1")
            times.append(time.perf_counter() - began)
            assert result.error is None and result.outputs[0].logs == "2", result
    await pool.discard("thread_bench_warm")
    return times


async def first_calls(pool: KernelPool, sessions: int, label: str) -> list[float]:
    """Seconds from opening a new session to its first result, the warm pool full before each."""
    times: list[float] = []
    for index in range(sessions):
        async with asyncio.timeout(READY_TIMEOUT):
            await pool.wait_warm()
        session_id = f"thread_bench_{label}_{index}"
        began = time.perf_counter()
        async with pool.session(session_id, owner=OWNER) as kernel:
            result = await kernel.execute("1+1")
        times.append(time.perf_counter() - began)
        assert result.error is None and result.outputs[0].logs == "2", result
        await pool.discard(session_id)
    return times


async def run(args: argparse.Namespace, root: Path) -> str:
    warm_pool = KernelPool(root=root / "warm", warm=2, max_per_user=args.sessions + 2)
    await warm_pool.start()
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await warm_pool.wait_warm()
        warm = await round_trips(warm_pool, args.repeats)
        first = await first_calls(warm_pool, args.sessions, "first")
    finally:
        await warm_pool.close()
    cold_pool = KernelPool(root=root / "cold", warm=0, max_per_user=args.cold + 2)
    await cold_pool.start()
    try:
        cold = await first_calls(cold_pool, args.cold, "cold")
    finally:
        await cold_pool.close()
    return report(warm, first, cold, args)


def report(warm: Sequence[float], first: Sequence[float], cold: Sequence[float], args: argparse.Namespace) -> str:
    def row(name: str, values: Sequence[float], target: str) -> str:
        return (
            f"| {name} | {len(values)} | {percentile(values, 50) * 1000:.1f} | "
            f"{percentile(values, 99) * 1000:.1f} | {max(values) * 1000:.1f} | {target} |"
        )

    return "\n".join(
        [
            "## Code interpreter: kernel round trips",
            "",
            f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- Machine: {machine()}; load average (1 / 5 min) {load()}",
            "- Kernels: bubblewrap sandbox, /usr/bin/python3 with ipykernel, default limits"
            f"{'; quick run' if args.quick else ''}.",
            "",
            "| measurement | samples | p50 ms | p99 ms | max ms | target |",
            "|---|---:|---:|---:|---:|---|",
            row("warm `1+1` round trip", warm, "p50 ≤ 30 ms"),
            row("first call in a new session (warm pool)", first, "≤ 500 ms"),
            row("first call with no warm kernel (cold start)", cold, "none"),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer repeats)")
    parser.add_argument("--repeats", type=int, default=None, help="warm round trips (default 200)")
    parser.add_argument("--sessions", type=int, default=None, help="new sessions with a warm pool (default 10)")
    parser.add_argument("--cold", type=int, default=None, help="new sessions without one (default 3)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 30 if args.quick else 200
    if args.sessions is None:
        args.sessions = 3 if args.quick else 10
    if args.cold is None:
        args.cold = 1 if args.quick else 3
    print_in_temp_folder("bench-kernels-", lambda folder: run(args, folder))


if __name__ == "__main__":
    main()
