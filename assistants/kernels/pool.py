"""The kernels of all sessions: started on first use from a warm pool, capped, stopped when idle.

    pool = KernelPool(root=data_dir / "sandbox", limits=KernelLimits(timeout_seconds=60))
    await pool.start()
    async with pool.session(thread_id, owner=user_id) as kernel:
        result = await kernel.execute("import pandas as pd; pd.read_csv('/mnt/data/sales.csv').describe()")
    await pool.discard(thread_id)       # the session was deleted
    await pool.close()

Folders under `root`: `sessions/<session_id>` is a session's working folder, kept across kernel
restarts, idle shutdowns and server restarts until `discard`; `warm/<id>` belongs to a pre-started
kernel that has no session yet. Taking a warm kernel renames its folder to the session's (the
session's earlier files move in first), which the kernel's mount follows, so the first call of a
session costs a rename instead of a kernel start.

Caps: `max_per_user` kernels per owner and `max_total` processes in all (warm ones included).
When a new session would pass a cap, the least recently used idle kernel (of that owner, or of
anyone for the total) is stopped; when every kernel is busy, `KernelCapacityError` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq.asyncio

from ..exceptions import KernelCapacityError
from . import folders
from .client import KernelClient
from .execution import KernelLimits, evicted_note, idle_note
from .kernel import Kernel
from .sandbox import Sandbox

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_RETRY_AFTER_FAILURE = 5.0


@dataclass(frozen=True)
class PoolStatus:
    """What the pool is running right now."""

    warm: int
    """Started kernels waiting for a session."""
    starting: int
    """Warm kernels being started."""
    sessions: dict[str, int | None]
    """Session id → host pid of its kernel's sandbox (None while it has no process)."""
    pids: list[int]
    """Host pids of every sandbox the pool runs (warm and in sessions)."""


@dataclass
class _Warm:
    client: KernelClient
    folder: Path


class KernelPool:
    """Sandboxed, stateful Python kernels, one per chat session."""

    def __init__(
        self, root: Path, python: str = "/usr/bin/python3", limits: KernelLimits | None = None, *,
        warm: int = 2, idle_seconds: float = 1200, max_per_user: int = 3, max_total: int = 20,
        sandbox: bool = True,
    ) -> None:
        self.root = Path(root)
        self.limits = limits or KernelLimits()
        self.warm = warm
        self.idle_seconds = idle_seconds
        self.max_per_user = max_per_user
        self.max_total = max_total
        self._sandbox = Sandbox(python, self.limits, sandboxed=sandbox)
        self._sessions_dir = self.root / "sessions"
        # Per process: a CLI command or a second server on the same data folder has its own.
        self._warm_dir = self.root / "warm" / str(os.getpid())
        self._context: zmq.asyncio.Context | None = None
        self._kernels: dict[str, Kernel] = {}
        self._ready: list[_Warm] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._launches: set[asyncio.Task[KernelClient]] = set()
        self._clients: set[KernelClient] = set()
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._notes: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self._paused_until = 0.0
        self._closed = False

    async def start(self) -> None:
        """Check the sandbox (raises `SandboxUnavailable`), then warm kernels up in the background."""
        await self._sandbox.check()
        await asyncio.to_thread(self._make_folders)
        self._context = zmq.asyncio.Context()
        self._reaper = asyncio.create_task(self._reap())
        self._top_up()

    def _make_folders(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._sessions_dir.mkdir(mode=0o700, exist_ok=True)
        self._warm_dir.parent.mkdir(mode=0o700, exist_ok=True)
        # Warm folders left by a process that stopped abruptly belong to no session.
        for left in self._warm_dir.parent.iterdir():
            if left == self._warm_dir or not _alive(left.name):
                shutil.rmtree(left, ignore_errors=True)
        self._warm_dir.mkdir(mode=0o700)

    def _workdir(self, session_id: str) -> Path:
        if not _SESSION_ID.fullmatch(session_id):
            raise ValueError(f"{session_id!r} is not a valid session id for a code interpreter kernel")
        return self._sessions_dir / session_id

    @asynccontextmanager
    async def session(self, session_id: str, *, owner: str) -> AsyncIterator[Kernel]:
        """The session's kernel, running, for exclusive use inside the `async with` block.

        Raises `KernelCapacityError` when a cap is reached and every kernel that counts is busy,
        and `SandboxUnavailable` when no kernel can start.
        """
        if self._context is None or self._closed:
            raise RuntimeError("KernelPool.start() must be awaited before sessions, and not after close()")
        workdir = self._workdir(session_id)
        while True:
            kernel = self._kernels.get(session_id)
            if kernel is None:
                kernel = await self._admit(session_id, owner, workdir)
            async with kernel.lock:
                if kernel.closed:
                    continue
                try:
                    await kernel.start()
                except BaseException:
                    if self._kernels.get(session_id) is kernel:
                        del self._kernels[session_id]
                        if kernel.pending_note is not None:
                            self._notes[session_id] = kernel.pending_note
                        self._top_up()
                    raise
                if kernel.closed:
                    continue
                try:
                    yield kernel
                finally:
                    kernel.last_used = asyncio.get_running_loop().time()
                return

    async def _admit(self, session_id: str, owner: str, workdir: Path) -> Kernel:
        """Register a kernel for a session that has none, stopping idle ones to respect the caps."""
        while True:
            mine = [k for k in self._kernels.values() if k.owner == owner]
            if len(mine) >= self.max_per_user:
                victim = _least_recent_idle(mine)
                if victim is None:
                    raise KernelCapacityError(
                        f"You already have {len(mine)} code interpreter sessions running, the most allowed "
                        "per user, and all of them are busy. Wait until one finishes, then try again."
                    )
            elif not self._ready and len(self._kernels) + len(self._starting) + 1 > self.max_total:
                if self._starting:
                    # A warm kernel that is still starting is the cheapest thing to give up.
                    self._starting.pop().cancel()
                    continue
                victim = _least_recent_idle(self._kernels.values())
                if victim is None:
                    raise KernelCapacityError(
                        f"The server is running as many code interpreter sessions as it allows "
                        f"({self.max_total}) and all of them are busy. Try again in a few minutes."
                    )
            else:
                break
            await self._stop(victim, evicted_note())
        kernel = Kernel(session_id, owner, workdir, self._sandbox.data_path, self.limits, self._acquire)
        kernel.pending_note = self._notes.pop(session_id, None)
        self._kernels[session_id] = kernel
        return kernel

    async def _acquire(self, kernel: Kernel) -> KernelClient:
        """A running process for `kernel`: a warm one given the session's folder, or a new one."""
        assert self._context is not None
        stopping = self._stopping.get(kernel.session_id)
        if stopping is not None:
            # The session's previous process must be gone before its folder changes hands.
            await asyncio.shield(stopping)
        while self._ready:
            warm = self._ready.pop(0)
            self._top_up()
            if warm.client.alive:
                await asyncio.to_thread(folders.adopt, warm.folder, kernel.workdir)
                return warm.client
            await warm.client.close()
            await asyncio.to_thread(folders.remove, warm.folder)
        await asyncio.to_thread(folders.prepare, kernel.workdir)
        return await self._launch(kernel.workdir)

    async def _launch(self, folder: Path) -> KernelClient:
        """Start a kernel process working in `folder`; `close` cancels it if it is still starting."""
        assert self._context is not None
        task = asyncio.create_task(
            KernelClient.start(self._sandbox, folder, self._context, self.limits.output_chars)
        )
        self._launches.add(task)
        try:
            client = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and current is not None and not current.cancelling():
                raise RuntimeError("The code interpreter is shutting down.") from None
            raise
        finally:
            self._launches.discard(task)
        # Every process the pool started is known here until it exits, whoever holds it, so that
        # `close` can end them all.
        self._clients.add(client)
        client.process.exited.add_done_callback(lambda _: self._clients.discard(client))
        if self._closed:
            await client.close()
            raise RuntimeError("The code interpreter is shutting down.")
        return client

    def _top_up(self) -> None:
        """Start warm kernels until `warm` are ready or starting, within `max_total`."""
        loop = asyncio.get_running_loop()
        if self._closed or self._context is None or loop.time() < self._paused_until:
            return
        while (
            len(self._ready) + len(self._starting) < self.warm
            and len(self._kernels) + len(self._ready) + len(self._starting) < self.max_total
        ):
            task = asyncio.create_task(self._start_warm())
            self._starting.add(task)

    async def _start_warm(self) -> None:
        try:
            await self._warm_up()
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._starting.discard(task)

    async def _warm_up(self) -> None:
        assert self._context is not None
        folder = self._warm_dir / secrets.token_hex(8)
        try:
            await asyncio.to_thread(folders.prepare, folder)
            client = await self._launch(folder)
        except asyncio.CancelledError:
            await asyncio.to_thread(folders.remove, folder)
            raise
        except Exception:
            log.exception("A warm code interpreter kernel failed to start; retrying in %g s", _RETRY_AFTER_FAILURE)
            await asyncio.to_thread(folders.remove, folder)
            loop = asyncio.get_running_loop()
            self._paused_until = loop.time() + _RETRY_AFTER_FAILURE
            loop.call_later(_RETRY_AFTER_FAILURE + 0.01, self._top_up)
            self._changed.set()
            return
        self._ready.append(_Warm(client, folder))
        self._changed.set()

    async def _stop(self, kernel: Kernel, note: str | None) -> None:
        """Shut a kernel down (its folder stays), remembering why for the session's next kernel."""
        stopping = self._stopping.get(kernel.session_id)
        if kernel.closed and stopping is not None:
            await asyncio.shield(stopping)
            return
        kernel.closed = True
        if self._kernels.get(kernel.session_id) is kernel:
            del self._kernels[kernel.session_id]
        if note is not None:
            self._notes[kernel.session_id] = note
        task = asyncio.create_task(kernel.shutdown())
        self._stopping[kernel.session_id] = task
        try:
            await asyncio.shield(task)
        finally:
            if self._stopping.get(kernel.session_id) is task:
                del self._stopping[kernel.session_id]
            self._top_up()

    async def _reap(self) -> None:
        """Stop kernels that have not been used for `idle_seconds`."""
        loop = asyncio.get_running_loop()
        interval = min(max(self.idle_seconds / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for kernel in list(self._kernels.values()):
                if not kernel.lock.locked() and now - kernel.last_used >= self.idle_seconds:
                    await self._stop(kernel, idle_note(self.idle_seconds))

    async def discard(self, session_id: str) -> None:
        """The session was deleted: kill its kernel (even mid-execution) and delete its folder."""
        workdir = self._workdir(session_id)
        self._notes.pop(session_id, None)
        kernel = self._kernels.get(session_id)
        if kernel is not None:
            await self._stop(kernel, None)
            self._notes.pop(session_id, None)
        stopping = self._stopping.get(session_id)
        if stopping is not None:
            await asyncio.shield(stopping)
        await asyncio.to_thread(folders.remove, workdir)

    async def wait_warm(self) -> None:
        """Wait until `warm` kernels are ready (for benchmarks and tests; wrap it in a timeout)."""
        while len(self._ready) < min(self.warm, self.max_total - len(self._kernels)):
            self._changed.clear()
            await self._changed.wait()

    def status(self) -> PoolStatus:
        """A snapshot of the pool's kernels and processes."""
        sessions = {sid: kernel.pid for sid, kernel in self._kernels.items()}
        pids = [w.client.process.pid for w in self._ready] + [p for p in sessions.values() if p is not None]
        return PoolStatus(warm=len(self._ready), starting=len(self._starting), sessions=sessions, pids=pids)

    async def close(self) -> None:
        """Stop every kernel and warm-up; no kernel process is left running afterwards."""
        if self._closed:
            return
        self._closed = True
        tasks: list[asyncio.Task[Any]] = [*self._starting, *self._launches]
        if self._reaper is not None:
            tasks.append(self._reaper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._ready.clear()
        await asyncio.gather(
            *(self._stop(kernel, None) for kernel in list(self._kernels.values())),
            *self._stopping.values(),
            return_exceptions=True,
        )
        # Kernels in nobody's hands any more (warm ones, or one taken by a session a moment ago).
        await asyncio.gather(*(client.close() for client in list(self._clients)), return_exceptions=True)
        await asyncio.to_thread(shutil.rmtree, self._warm_dir, True)
        with contextlib.suppress(OSError):
            self._warm_dir.parent.rmdir()  # only when no other process keeps warm kernels there
        if self._context is not None:
            self._context.term()
            self._context = None


def _alive(pid: str) -> bool:
    """Whether the process that named a warm folder still runs."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _least_recent_idle(kernels: Iterable[Kernel]) -> Kernel | None:
    idle = [k for k in kernels if not k.lock.locked()]
    return min(idle, key=lambda k: k.last_used, default=None)

