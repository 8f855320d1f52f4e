"""A session's kernel: where its code runs, what its files are, and how it recovers.

`Kernel` is what `KernelPool.session` hands out. It outlives the kernel processes behind it: when
one dies (a crash, the CPU budget, a fork bomb, code that ignores an interrupt) the next is taken
from the pool and the execution says `restarted=True`. Variables are lost then; the working folder
and its files are not, because the folder belongs to the session, not to the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..exceptions import SandboxUnavailable
from . import folders
from .client import KernelClient, RunOutcome
from .execution import (
    Execution,
    KernelLimits,
    OutputCallback,
    OutputCollector,
    classify_error,
    cpu_note,
    files_note,
    output_note,
    stuck_note,
    timeout_note,
)

Acquire = Callable[["Kernel"], Awaitable[KernelClient]]
"""How a kernel gets a running process for its session (the pool's warm one, or a new one)."""

_CPU_EXIT = 128 + signal.SIGXCPU

MAX_READ_BYTES = 512 * 1024**2
"""The largest file `Kernel.read_file` returns."""


class Kernel:
    """One session's stateful Python kernel, sandboxed, with its working folder."""

    def __init__(
        self, session_id: str, owner: str, workdir: Path, data_path: str | None, limits: KernelLimits,
        acquire: Acquire,
    ) -> None:
        self.session_id = session_id
        self.owner = owner
        self.workdir = workdir
        """The host folder the code sees as `data_path`; files copied in here are the code's input."""
        self.data_path = data_path or str(workdir)
        """The working folder as the code sees it: /mnt/data in the sandbox."""
        self.limits = limits
        self._acquire = acquire
        self._client: KernelClient | None = None
        self._running = asyncio.Lock()
        self.lock = asyncio.Lock()
        """Held by `KernelPool.session` while the session uses the kernel (it is then never stopped as idle)."""
        self.last_used = asyncio.get_running_loop().time()
        self.closed = False
        """Stopped for good by the pool (idle, evicted, discarded, closed); a new `Kernel` takes over."""
        self.pending_note: str | None = None
        """Why the session's previous kernel was stopped; told with the first execution of this one."""

    @property
    def pid(self) -> int | None:
        """Host pid of the running sandbox (bwrap), None while no process runs."""
        client = self._client
        return client.process.pid if client is not None and client.alive else None

    async def start(self) -> None:
        """Give the kernel a running process, if it has none yet."""
        if self._client is None:
            await self._attach()

    async def _attach(self) -> KernelClient:
        client = await self._acquire(self)
        if self.closed:
            # Stopped while its process was starting (discarded, or the pool closed).
            await client.close()
        else:
            self._client = client
        return client

    def _closed_result(self) -> Execution:
        return Execution(
            outputs=[], error="The session's kernel was shut down (the session ended).",
            limit=None, restarted=False,
        )

    async def execute(self, code: str, *, on_output: OutputCallback | None = None) -> Execution:
        """Run `code`, streaming each `Output` to `on_output`; every limit hit is in the result's `limit`."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with self._running:
            if self.closed:
                return self._closed_result()
            notes: list[str] = []
            restarted = False
            if self.pending_note is not None:
                notes.append(self.pending_note)
                self.pending_note = None
                restarted = True
            client = self._client
            if client is None or not client.alive:
                if client is not None:
                    # Its exit status comes once asyncio has reaped it, a moment after it exits.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(client.process.exited), 1.0)
                    notes.append(self._death_note(client.process.returncode, while_idle=True))
                    restarted = True
                client = await self._restart()
                if self.closed:
                    return self._closed_result()
            before = await asyncio.to_thread(folders.snapshot, self.workdir)
            collector = OutputCollector(self.limits, on_output)
            outcome = await client.run(code, collector, time_limit=self.limits.timeout_seconds)
            error, restart = self._judge(outcome, collector.truncated, notes)
            if restart and not self.closed:
                try:
                    await self._restart()
                    restarted = True
                except SandboxUnavailable as exc:
                    # The result stands; the next execution tries again (and raises if it still fails).
                    notes.append(f"The kernel could not be started again: {exc.message}")
            after = await asyncio.to_thread(folders.snapshot, self.workdir)
            self.last_used = loop.time()
            files = folders.changed(before, after)
            count = folders.changed_count(before, after)
            if count > len(files):
                notes.append(files_note(len(files), count))
            return Execution(
                outputs=collector.outputs(),
                error=error,
                limit=" ".join(notes) or None,
                restarted=restarted,
                files=files,
                duration=loop.time() - began,
            )

    def _judge(self, outcome: RunOutcome, truncated: bool, notes: list[str]) -> tuple[str | None, bool]:
        """The error to report and whether to restart; adds the limits hit to `notes`."""
        error = None
        if outcome.error is not None:
            name, message = outcome.error
            error = f"{name}: {message}" if message else name
        restart = outcome.incomplete
        if outcome.timed_out:
            notes.append(timeout_note(self.limits))
            if outcome.stuck:
                notes.append(stuck_note())
                restart = True
            error = error or f"TimeoutError: the code ran longer than {self.limits.timeout_seconds:g} s"
        if outcome.error is not None:
            verdict = classify_error(*outcome.error, self.limits)
            if verdict.note is not None and verdict.note not in notes:
                notes.append(verdict.note)
            restart = restart or verdict.restart
        if outcome.exit_status is not None:
            if self.closed:
                error = error or self._closed_result().error
            elif outcome.exit_status == _CPU_EXIT:
                notes.append(cpu_note(self.limits))
            else:
                error = error or self._death_note(outcome.exit_status, while_idle=False)
            restart = True
        if (truncated or outcome.incomplete) and output_note(self.limits) not in notes:
            notes.append(output_note(self.limits))
        return error, restart

    def _death_note(self, status: int | None, *, while_idle: bool) -> str:
        if status == _CPU_EXIT:
            return cpu_note(self.limits)
        if while_idle:
            return (
                f"The kernel had stopped unexpectedly (exit status {status}) and was started again; "
                "variables were lost, files in /mnt/data were kept."
            )
        return (
            f"KernelDied: the kernel stopped unexpectedly while running this code (exit status {status}); "
            "it was restarted, variables were lost, files in /mnt/data were kept."
        )

    async def _restart(self) -> KernelClient:
        old, self._client = self._client, None
        if old is not None:
            await old.close()
        return await self._attach()

    async def interrupt(self) -> None:
        """Interrupt the running code, as Ctrl-C would (the execution ends with KeyboardInterrupt)."""
        if self._client is not None and self._client.alive:
            await self._client.interrupt()

    async def shutdown(self) -> None:
        """Kill the kernel process; the working folder stays. Used by the pool."""
        self.closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def write_file(self, name: str, data: bytes) -> None:
        """Put a file into the working folder as the sandboxed code's own (it may then change it).

        `name` is relative (`"input/sales.csv"`); links the code left on the way are refused, and
        the file appears whole even to code that is running.
        """
        await asyncio.to_thread(folders.write_file, self.workdir, name, data)

    async def read_file(self, name: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        """A regular file from the working folder (as listed in `Execution.files`), never through a link."""
        return await asyncio.to_thread(folders.read_file, self.workdir, name, max_bytes)
