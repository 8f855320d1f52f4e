"""The server's connection to one kernel: the Jupyter messaging protocol over ipc sockets.

`KernelClient.start` launches a sandboxed kernel, waits until both its shell and its IOPub channels
answer, and runs a short silent set-up in it. `KernelClient.run` sends one `execute_request` and
turns the replies into an `OutputCollector`'s outputs and a `RunOutcome`: whether the code raised,
outlived its time (after an interrupt that did or did not stop it), or killed the kernel.

Two reader tasks take every message off the shell and IOPub sockets as it arrives and queue only
those that answer the request in flight, so output printed between executions (a leftover thread)
cannot pile up in the server. The kernel's own exit is queued too, so a crash ends the wait at once.

The code in the kernel knows the session key and can send anything on the kernel's sockets, so
the readers treat every message as hostile: a message is read one part at a time and the kernel is
killed once one passes `_MAX_MESSAGE_BYTES` or `_MAX_FRAMES`; a message is signed-checked and
parsed only when its parent is the request in flight; and a kernel that keeps sending when
nothing was asked is killed. The sockets never reconnect (the socket folder is the sandbox's, and
a link put there in place of a socket would lead a reconnect anywhere on the host), and a broken
connection counts as the kernel's death.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.session import DELIM, Session
from zmq.utils.monitor import parse_monitor_message

from ..exceptions import SandboxUnavailable
from .execution import CONNECTION_LOST, INTERRUPT_IGNORED, OUTPUT_FLOOD, OutputCollector
from .sandbox import Sandbox, SandboxProcess

START_TIMEOUT = 30.0
"""Seconds a new kernel has to answer and finish its set-up."""

INTERRUPT_GRACE = 3.0
"""Seconds an interrupted execution has to stop before its kernel is killed."""

_IDLE_GRACE = 1.0
# The most one message may hold, in all its parts, and how many parts it may have; a kernel that
# sends more is killed. It keeps the server safe from code that undoes the kernel's own output
# cap. A single part bigger than this breaks the connection inside zmq (MAXMSGSIZE), which ends
# the kernel the same way. zmq itself holds a whole message before its first part can be read,
# so the part size times the parts a message may have is what one message can cost at most
# before the kernel is killed.
_MAX_MESSAGE_BYTES = 16 * 1024**2
_MAX_FRAMES = 64
# The kernel drops display data past this much base64 per message (a 6 MB PNG); real figures are
# far smaller, and it leaves room in `_MAX_MESSAGE_BYTES` for the message's capped texts.
_MAX_IMAGE_CHARS = 8 * 1024**2
# A message smaller than this is parsed on the event loop; a bigger one (an image) in a thread,
# so its signature check and JSON parse do not hold up other sessions.
_PARSE_INLINE_BYTES = 256 * 1024
# What an execution may receive in all before only small messages (status, the reply) are read:
# the kernel's own caps keep honest output far below it.
_RUN_BYTES = 4 * _MAX_MESSAGE_BYTES
# Messages nobody asked for (a leftover thread printing, or code sending on its own) are dropped
# unread, but each still costs a wake-up: a kernel may send this many bytes per second of them,
# in bursts up to `_UNASKED_BURST` (each message counts `_MESSAGE_COST` more), and is killed past it.
_UNASKED_RATE = 1024**2
_UNASKED_BURST = 2 * _MAX_MESSAGE_BYTES
_MESSAGE_COST = 4096
# The largest parent header a message may carry; it is read before anything else to find out
# whether the message answers the request in flight.
_MAX_PARENT_BYTES = 64 * 1024
# zmq pings the kernel's sockets this often, and a kernel that does not answer in time (stopped,
# or its sockets gone) counts as dead; the kernel's zmq thread answers even while code runs.
_HEARTBEAT_MS = 2_000
_HEARTBEAT_TIMEOUT_MS = 20_000
_EXIT_GRACE = 1.0
# Connection events that mean a socket lost the kernel for good (it never reconnects).
_LOST = (
    zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
# Why the server killed a kernel, as the execution in flight reports it.
_FAULTS = {
    OUTPUT_FLOOD: (
        f"the kernel sent more than the server accepts (over {_MAX_MESSAGE_BYTES // 1024**2} MB or "
        f"{_MAX_FRAMES} parts in one message, or a stream of messages nobody asked for); "
        "variables were lost, files in /mnt/data were kept"
    ),
    CONNECTION_LOST: (
        "the kernel's connection to the server broke (its sockets were closed or replaced, or one "
        f"part of a message was over {_MAX_MESSAGE_BYTES // 1024**2} MB); "
        "variables were lost, files in /mnt/data were kept"
    ),
    INTERRUPT_IGNORED: (
        "the code did not stop when its run was cancelled, so the kernel was restarted; "
        "variables were lost, files in /mnt/data were kept"
    ),
}

# Runs once in every new kernel, silently, and leaves no names behind. It caps what the kernel
# sends per execution (the server keeps only `output_chars` anyway, and a 100 MB print should
# cost neither a 100 MB message nor the time to send it): print() and friends stop sending once
# the budget is spent, and any one text in a message (a result's repr, an error's message) is cut
# to the budget. Output of child processes, which the kernel copies to its own stderr as well,
# goes only to the execution from now on (the server keeps that stderr for start-up errors).
# It also imports the scientific stack so the code's own imports are instant.
_SETUP = """\
def _assistants_setup(budget, image_budget):
    from ipykernel.iostream import OutStream
    left = [budget]
    write = OutStream.write
    def capped_write(self, string):
        if not isinstance(string, str) or left[0] >= len(string):
            left[0] -= len(string) if isinstance(string, str) else 0
            return write(self, string)
        if left[0] > 0:
            write(self, string[: left[0]])
            left[0] = 0
        return len(string)
    OutStream.write = capped_write
    def reset(*_):
        left[0] = budget
    shell = get_ipython()
    shell.events.register("pre_execute", reset)
    def cap(value):
        if isinstance(value, str) and len(value) > budget:
            return value[:budget]
        if isinstance(value, list):
            return [cap(item) for item in value[:200]]
        return value
    session = shell.kernel.session
    send = session.send
    def capped_send(stream, msg_or_type, content=None, *args, **kwargs):
        body = msg_or_type.get("content") if isinstance(msg_or_type, dict) else content
        if isinstance(body, dict):
            for key in ("text", "evalue", "traceback"):
                if key in body:
                    body[key] = cap(body[key])
            data = body.get("data")
            if isinstance(data, dict):
                spent = 0
                for key, value in list(data.items()):
                    if key.startswith("text/"):
                        data[key] = cap(value)
                    elif isinstance(value, str):
                        spent += len(value)
                        if spent > image_budget:
                            del data[key]
        return send(stream, msg_or_type, content, *args, **kwargs)
    session.send = capped_send
    import os, sys
    for stream in (sys.stdout, sys.stderr):
        copy = getattr(stream, "_original_stdstream_copy", None)
        if copy is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, copy)
            os.close(devnull)
    import numpy, pandas, matplotlib.pyplot
_assistants_setup({budget}, {image_budget})
del _assistants_setup
"""


@dataclass(frozen=True)
class RunOutcome:
    """How an execution ended, beyond its outputs."""

    error: tuple[str, str] | None = None
    """The exception's name and message, when the code raised."""
    timed_out: bool = False
    """The execution outlived its time and was interrupted."""
    stuck: bool = False
    """It did not stop when interrupted; the kernel must be killed."""
    exit_status: int | None = None
    """The kernel died during the execution, with this status (128 + N for signal N)."""
    incomplete: bool = False
    """The reply came but the end of the output did not: a message was too large to read, which
    breaks the output channel, so the kernel must be restarted."""


class KernelClient:
    """One running kernel process and the server's sockets to it."""

    def __init__(self, process: SandboxProcess, context: zmq.asyncio.Context) -> None:
        self.process = process
        info = process.connection
        self.session = Session(
            key=info["key"].encode(), signature_scheme=info["signature_scheme"], username="assistants"
        )
        self._shell = self._connect(context, zmq.DEALER, info, "shell_port")
        self._control = self._connect(context, zmq.DEALER, info, "control_port")
        self._iopub = self._connect(context, zmq.SUB, info, "iopub_port")
        self._iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self._events: asyncio.Queue[tuple[str, dict[str, Any] | None]] = asyncio.Queue()
        self._accept: set[str] = set()
        self.fault: str | None = None
        """Why the server killed the kernel (`OUTPUT_FLOOD`, `CONNECTION_LOST`), None if it did not."""
        self._killing: asyncio.Task[None] | None = None
        self._run_bytes = 0
        loop = asyncio.get_running_loop()
        self._unasked_tokens = float(_UNASKED_BURST)
        self._unasked_at = loop.time()
        self._monitors = [socket.get_monitor_socket(_LOST) for socket in (self._shell, self._control, self._iopub)]
        self._readers = [
            asyncio.create_task(self._read("shell", self._shell)),
            asyncio.create_task(self._read("iopub", self._iopub)),
            # Nothing the control channel says is used, but it is read so replies cannot pile up.
            asyncio.create_task(self._read("control", self._control)),
            *(asyncio.create_task(self._watch(monitor)) for monitor in self._monitors),
        ]
        process.exited.add_done_callback(lambda _: self._events.put_nowait(("exit", None)))

    @staticmethod
    def _connect(context: zmq.asyncio.Context, kind: int, info: dict[str, Any], port: str) -> zmq.asyncio.Socket:
        socket = context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, _MAX_MESSAGE_BYTES)
        # Never reconnect: the path is in the sandbox's folder, and after the first connection
        # (made before any code ran) it may name whatever the code put there, a link included.
        socket.setsockopt(zmq.RECONNECT_IVL, -1)
        socket.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_MS)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)
        socket.connect(_address(info, port))
        return socket

    @classmethod
    async def start(cls, sandbox: Sandbox, data: Path, context: zmq.asyncio.Context, output_chars: int) -> KernelClient:
        """Launch a kernel working in `data`, and return once it has answered and is set up."""
        process = await sandbox.spawn(data)
        try:
            await _wait_listening(process)
            client = cls(process, context)
        except BaseException:
            await process.kill()
            raise
        try:
            await client._wait_ready()
            # The kernel's own cap leaves the server a little slack to detect, and word, the cut.
            setup = _SETUP.format(budget=output_chars + 1000, image_budget=_MAX_IMAGE_CHARS)
            outcome = await client.run(
                setup, OutputCollector(sandbox.limits, None), time_limit=START_TIMEOUT, silent=True
            )
            if outcome.error is not None or outcome.exit_status is not None or outcome.timed_out:
                raise SandboxUnavailable(
                    f"A new code interpreter kernel failed its set-up: {outcome.error or outcome}. "
                    f"{client.process.log_tail()}"
                )
        except BaseException:
            await client.close()
            raise
        return client

    @property
    def alive(self) -> bool:
        """The kernel process is still running: not exited, nor exited and waiting to be reaped
        (asyncio sets `returncode` only once its child watcher has reaped the process, a moment
        later, and code sent to the kernel meanwhile would be lost without a word)."""
        return self.process.returncode is None and _running(self.process.pid)

    def _kill(self, fault: str) -> None:
        """Stop listening to a kernel that broke the rules, and kill it; the run in flight ends at once."""
        if self.fault is not None or self.process.returncode is not None:
            return
        self.fault = fault
        self._killing = asyncio.create_task(self.process.kill())

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """Kill the kernel once one of its connections is lost (closed, replaced, or silent)."""
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] & _LOST:
                # A kernel that exits (a crash, the CPU budget) drops its connections first; its
                # own death is the better report, so it has a moment to be seen.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.process.exited), _EXIT_GRACE)
                self._kill(CONNECTION_LOST)
                return

    async def _read(self, name: str, socket: zmq.asyncio.Socket) -> None:
        while True:
            frames = await self._receive(socket)
            if frames is None:
                self._kill(OUTPUT_FLOOD)
                return
            if not frames:
                continue
            message = await self._parse(frames, sum(len(frame) for frame in frames))
            if message is not None and name != "control":
                self._events.put_nowait((name, message))

    async def _receive(self, socket: zmq.asyncio.Socket) -> list[zmq.Frame] | None:
        """One message's parts if it may answer the request in flight, [] if dropped, None if too big.

        The parts are taken one by one without copying and counted. They are kept only while a
        request waits and, once the execution received `_RUN_BYTES`, only for a small message (its
        status or reply); messages that arrive when nothing was asked count against the kernel's
        allowance of unasked traffic.
        """
        frames: list[zmq.Frame] = []
        count = size = 0
        waiting = bool(self._accept)
        limit = _MAX_MESSAGE_BYTES if self._run_bytes <= _RUN_BYTES else _PARSE_INLINE_BYTES
        while True:
            frame = await socket.recv(copy=False)
            count += 1
            size += len(frame)
            if count > _MAX_FRAMES or size > _MAX_MESSAGE_BYTES:
                return None
            if waiting and size <= limit:
                frames.append(frame)
            else:
                frames.clear()
            if not frame.more:
                break
        if waiting:
            self._run_bytes += size
            return frames
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._unasked_tokens = min(
            float(_UNASKED_BURST), self._unasked_tokens + (now - self._unasked_at) * _UNASKED_RATE
        )
        self._unasked_at = now
        self._unasked_tokens -= size + _MESSAGE_COST
        return None if self._unasked_tokens < 0 else []

    async def _parse(self, frames: list[zmq.Frame], size: int) -> dict[str, Any] | None:
        """The message, if its parent is the request in flight and the kernel's key signed it."""
        try:
            parts = [frame.bytes for frame in frames]
            start = parts.index(DELIM) + 1
            # The parent header is read first: the signature check and the parse of everything
            # else are only worth their cost for a message that answers the request in flight.
            parent_raw = parts[start + 2]
            if len(parent_raw) > _MAX_PARENT_BYTES:
                return None
            parent = json.loads(parent_raw)
            if not isinstance(parent, dict) or parent.get("msg_id") not in self._accept:
                return None
            body = parts[start:]
            if size < _PARSE_INLINE_BYTES:
                message: dict[str, Any] = self.session.deserialize(body)
            else:
                message = await asyncio.to_thread(self.session.deserialize, body)
        except (ValueError, KeyError, TypeError, IndexError):
            # Not a message the kernel's key signed properly; the sandboxed code may have sent it.
            return None
        # The signature covers the parent header, so the one checked above is the one signed.
        return message

    async def _next(self, seconds: float) -> tuple[str, dict[str, Any] | None] | None:
        try:
            async with asyncio.timeout(max(seconds, 0)):
                return await self._events.get()
        except TimeoutError:
            return None

    async def _send(self, socket: zmq.asyncio.Socket, msg_type: str, content: dict[str, Any]) -> str:
        message = self.session.msg(msg_type, content)
        msg_id: str = message["header"]["msg_id"]
        if not self._accept:
            self._run_bytes = 0
        self._accept.add(msg_id)
        # Sent through the asyncio socket itself, not `Session.send` (which sends through a
        # synchronous shadow of it): a send can consume the socket's edge-triggered "readable"
        # signal, and only the asyncio socket knows to look for messages that arrived meanwhile.
        await socket.send_multipart(self.session.serialize(message))
        return msg_id

    async def _wait_ready(self) -> None:
        """Ask for kernel info until the shell replies and IOPub carries the kernel's status."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        replied = published = False
        while not (replied and published):
            if loop.time() > deadline:
                raise SandboxUnavailable(
                    f"A new code interpreter kernel did not answer within {START_TIMEOUT:g} s. "
                    f"{self.process.log_tail()}"
                )
            # IOPub is a subscription: whatever the kernel publishes before the subscription reaches
            # it is lost, so the request is repeated until one of its status messages arrives.
            await self._send(self._shell, "kernel_info_request", {})
            wait_until = loop.time() + 0.1
            while not (replied and published) and (event := await self._next(wait_until - loop.time())):
                channel, _ = event
                if channel == "exit":
                    raise SandboxUnavailable(
                        f"A new code interpreter kernel exited at start-up (status {self.process.returncode}): "
                        f"{self.process.log_tail() or 'no output'}"
                    )
                replied = replied or channel == "shell"
                published = published or channel == "iopub"
        self._accept.clear()
        # Late status messages of the repeated requests must not reach the first execution.
        while not self._events.empty():
            self._events.get_nowait()

    async def _settle(self, seconds: float) -> bool:
        """Read the interrupted execution's last messages; True once it replied and went idle."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        replied = idle = False
        while not (replied and idle):
            event = await self._next(deadline - loop.time())
            if event is None:
                return False
            channel, message = event
            if channel == "exit" or message is None:
                return False
            if channel == "shell" and message["msg_type"] == "execute_reply":
                replied = True
            elif message["msg_type"] == "status" and message["content"].get("execution_state") == "idle":
                idle = True
        return True

    async def interrupt(self) -> None:
        """Ask the kernel to interrupt the running code (it sends itself SIGINT)."""
        self._accept.discard(await self._send(self._control, "interrupt_request", {}))

    async def run(
        self, code: str, collector: OutputCollector, *, time_limit: float, silent: bool = False
    ) -> RunOutcome:
        """Execute `code`, feeding its outputs to `collector`, and say how it ended."""
        loop = asyncio.get_running_loop()
        if not self.alive:
            return RunOutcome(exit_status=self.process.returncode)
        # stop_on_error would make the kernel skip requests that arrive shortly after an error (they
        # are answered "aborted"); one request is in flight at a time, so there is no queue to stop.
        msg_id = await self._send(
            self._shell, "execute_request",
            {"code": code, "silent": silent, "store_history": not silent, "user_expressions": {},
             "allow_stdin": False, "stop_on_error": False},
        )
        deadline = loop.time() + time_limit
        replied_at: float | None = None
        idle = timed_out = False
        error: tuple[str, str] | None = None
        try:
            while replied_at is None or not idle:
                now = loop.time()
                if replied_at is not None and now > replied_at + _IDLE_GRACE:
                    return RunOutcome(error=error, timed_out=timed_out, incomplete=True)
                if replied_at is None and now >= deadline:
                    if timed_out:
                        return RunOutcome(error=error, timed_out=True, stuck=True)
                    timed_out = True
                    await self.interrupt()
                    deadline = now + INTERRUPT_GRACE
                until = replied_at + _IDLE_GRACE if replied_at is not None else deadline
                event = await self._next(until - now)
                if event is None:
                    continue
                channel, message = event
                if channel == "exit" or message is None:
                    if self.fault is not None:
                        error = (self.fault, _FAULTS[self.fault])
                    return RunOutcome(error=error, timed_out=timed_out, exit_status=self.process.returncode)
                if channel == "shell":
                    if message["msg_type"] == "execute_reply":
                        replied_at = loop.time()
                        if message["content"].get("status") == "aborted" and error is None:
                            error = ("Aborted", "the kernel did not run this code; run it again")
                    continue
                idle = idle or await self._publish(message, collector)
                if message["msg_type"] == "error":
                    content = message["content"]
                    error = (str(content.get("ename", "Error")), str(content.get("evalue", "")))
        except asyncio.CancelledError:
            # Whoever waited is gone (a run was cancelled); the code must not run on unattended.
            # The next execution must also find the kernel idle, with nothing of this one still
            # on its way: wait (briefly) for the interrupted code's reply and idle status, and
            # kill a kernel that does not stop (the next execution then starts a fresh one).
            if replied_at is None and self.alive:
                await self.interrupt()
                if not await asyncio.shield(self._settle(INTERRUPT_GRACE)):
                    self._kill(INTERRUPT_IGNORED)
            raise
        finally:
            self._accept.discard(msg_id)
        return RunOutcome(error=error, timed_out=timed_out)

    @staticmethod
    async def _publish(message: dict[str, Any], collector: OutputCollector) -> bool:
        """Hand one IOPub message to the collector; True when it says the kernel is idle again."""
        kind = message["msg_type"]
        content = message["content"]
        if kind == "status":
            return bool(content.get("execution_state") == "idle")
        if kind == "stream":
            await collector.logs(str(content.get("text", "")))
        elif kind in ("execute_result", "display_data", "update_display_data"):
            data = content.get("data") or {}
            png = data.get("image/png")
            if isinstance(png, str):
                with contextlib.suppress(binascii.Error, ValueError):
                    await collector.image(base64.b64decode(png))
            elif isinstance(data.get("text/plain"), str):
                text = data["text/plain"]
                if kind == "execute_result":
                    await collector.logs(text, separate=True, keep="head")
                else:
                    await collector.logs(text + "\n", separate=True)
        elif kind == "error":
            traceback = "\n".join(str(line) for line in content.get("traceback", []))
            await collector.logs(traceback, separate=True, keep="tail")
        return False

    async def close(self) -> None:
        """Kill the kernel and close the sockets."""
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for socket in (self._shell, self._control, self._iopub):
            socket.disable_monitor()
            socket.close(linger=0)
        for monitor in self._monitors:
            monitor.close(linger=0)
        if self._killing is not None:
            await asyncio.gather(self._killing, return_exceptions=True)
        await self.process.kill()


def _address(info: dict[str, Any], port: str) -> str:
    return f"ipc://{info['ip']}-{info[port]}"


async def _wait_listening(process: SandboxProcess) -> None:
    """Wait until the kernel listens on its sockets; the server's sockets connect once, never again.

    This runs before any code does, so the socket folder still holds what the kernel made; each
    path must be a socket (not a link) and accept a connection before zmq is let to connect.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    info = process.connection
    for port in ("shell_port", "control_port", "iopub_port"):
        path = _address(info, port).removeprefix("ipc://")
        while True:
            if process.returncode is not None:
                raise SandboxUnavailable(
                    f"A new code interpreter kernel exited at start-up (status {process.returncode}): "
                    f"{process.log_tail() or 'no output'}"
                )
            if loop.time() > deadline:
                raise SandboxUnavailable(
                    f"A new code interpreter kernel did not answer within {START_TIMEOUT:g} s. "
                    f"{process.log_tail()}"
                )
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    _, writer = await asyncio.open_unix_connection(path)
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    break
            await asyncio.sleep(0.02)


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (Linux's /proc, as the sandbox needs Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False

