"""What one execution produced, and the limits it ran under, in plain words.

`KernelLimits` is the operator's budget for a kernel. `Output` is one streamed piece of output and
`Execution` the whole result. `OutputCollector` turns the kernel's messages into outputs: it strips
terminal colour codes, keeps at most `output_chars` of text, merges consecutive logs and hands every
piece to the caller's callback as it arrives. The `*_note` functions and `classify_error` word every
limit the way the model and the user read them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

OutputCallback = Callable[["Output"], Awaitable[None] | None]
"""Called with each `Output` as it arrives; it may be a plain function or a coroutine function."""

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")

# A traceback and the value of the last expression matter more to the model than the prints
# before them, so they are kept even after ordinary output used up the budget, up to this many
# characters (a traceback's end, where the error is; a value's beginning).
_RESERVED_CHARS = 4_000

# Images kept per execution, in bytes of PNG; a plot is a few hundred KB, and code that displays
# images in a loop must not fill the server's memory with them.
_MAX_IMAGE_BYTES = 64 * 1024**2

# Raw text looked at per kept character: colour codes are stripped only from the part of a text
# that can be kept, so a flood of text costs the server no more than the budget it fills.
_WINDOW_FACTOR = 4

# Words in an exception's message that mean a connection could not leave the sandbox.
_NETWORK_SIGNS = (
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Name or service not known",
    "No address associated with hostname",
    "[Errno 101]",
    "[Errno -2]",
    "[Errno -3]",
    "[Errno -5]",
)


@dataclass(frozen=True)
class KernelLimits:
    """What one kernel may use. Every limit hit is reported in `Execution.limit`."""

    timeout_seconds: float = 60.0
    """Wall clock per execution: the kernel is interrupted, then killed and restarted if it does not stop."""
    cpu_seconds: int = 600
    """CPU time for a kernel's whole life (RLIMIT_CPU): the session's budget until the kernel restarts."""
    memory_bytes: int = 2 * 1024**3
    """Address space of the kernel process (RLIMIT_AS)."""
    processes: int = 64
    """Processes and threads in the sandbox (RLIMIT_NPROC); the kernel itself uses about ten."""
    file_bytes: int = 100 * 1024**2
    """Largest file the code may write (RLIMIT_FSIZE)."""
    output_chars: int = 20_000
    """Text kept per execution; the rest is dropped with a note."""
    tmp_bytes: int = 512 * 1024**2
    """Size of the sandbox's private /tmp (memory-backed, so it is capped separately)."""


@dataclass(frozen=True)
class Output:
    """One piece of output, streamed in order. Consecutive text may arrive as several pieces."""

    type: Literal["logs", "image"]
    """`logs` for text, `image` for a PNG."""
    logs: str = ""
    """stdout, stderr, the text of a result, an error's traceback; colour codes removed."""
    png: bytes = b""
    """An image/png display (matplotlib figures, IPython.display images)."""


@dataclass(frozen=True)
class Execution:
    """The result of running one piece of code in a session's kernel."""

    outputs: list[Output]
    """Everything the code showed, in order, with consecutive logs merged."""
    error: str | None
    """`"NameError: name 'x' is not defined"` when the code raised, None on success."""
    limit: str | None
    """Every limit the execution hit, in plain words, joined with a space; None if none."""
    restarted: bool
    """The kernel was restarted: variables are lost, files in /mnt/data are kept."""
    files: list[str] = field(default_factory=list)
    """Files under /mnt/data (relative names) this execution created or modified."""
    duration: float = 0.0
    """Seconds from the request to the result."""


def _size(count: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if count >= scale:
            value = count / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{count} bytes"


def timeout_note(limits: KernelLimits) -> str:
    """The execution outlived `timeout_seconds`."""
    return f"The code ran longer than {limits.timeout_seconds:g} s and was interrupted."


def stuck_note() -> str:
    """The interrupt did not stop the code, so the kernel was killed."""
    return "It did not stop when interrupted, so the kernel was restarted."


def memory_note(limits: KernelLimits) -> str:
    """An allocation failed against RLIMIT_AS."""
    return f"The kernel ran out of memory ({_size(limits.memory_bytes)} limit)."


def processes_note(limits: KernelLimits) -> str:
    """A fork or a thread failed against RLIMIT_NPROC."""
    return f"The sandbox allows at most {limits.processes} processes; the kernel was restarted."


def output_note(limits: KernelLimits) -> str:
    """More than `output_chars` of text."""
    return f"Output exceeded {limits.output_chars:,} characters; the rest was cut."


def file_note(limits: KernelLimits) -> str:
    """A write failed against RLIMIT_FSIZE."""
    return f"Files are limited to {_size(limits.file_bytes)}."


def cpu_note(limits: KernelLimits) -> str:
    """The kernel died of SIGXCPU."""
    return f"The kernel used its CPU time budget ({limits.cpu_seconds} s) and was restarted."


NETWORK_NOTE = "No network access in the sandbox."

OUTPUT_FLOOD = "KernelOutputError"
"""The error the server reports when it killed a kernel for sending more than a message may hold."""

CONNECTION_LOST = "KernelConnectionError"
"""The error the server reports when it killed a kernel whose connection to the server broke."""

INTERRUPT_IGNORED = "KernelInterruptError"
"""The error the server reports when it killed a kernel that kept running after its run was cancelled."""

# The server's own errors above mean the kernel was killed for misbehaving; each has a fixed note
# (the code could raise an exception of the same name, which only gets its own kernel restarted).
_FAULT_NOTES = {
    OUTPUT_FLOOD: "The kernel sent more output than allowed and was restarted.",
    CONNECTION_LOST: "The kernel broke its connection to the server and was restarted.",
    INTERRUPT_IGNORED: "The code did not stop when its run was cancelled, so the kernel was restarted.",
}


def files_note(listed: int, changed: int) -> str:
    """More files changed than `Execution.files` lists."""
    return f"{changed:,} files changed; only the first {listed} (by name) are listed."


def images_note() -> str:
    """More image data than one execution may return."""
    return f"Images beyond {_size(_MAX_IMAGE_BYTES)} per execution were dropped."


def idle_note(idle_seconds: float) -> str:
    """The session's previous kernel was stopped for being idle."""
    minutes = idle_seconds / 60
    span = f"{minutes:g} min" if minutes >= 1 else f"{idle_seconds:g} s"
    return (
        f"The session's kernel had been stopped after {span} without use and was started again; "
        "variables were lost, files in /mnt/data were kept."
    )


def evicted_note() -> str:
    """The session's previous kernel was stopped to make room for another session."""
    return (
        "The session's kernel had been stopped to make room for another session and was started "
        "again; variables were lost, files in /mnt/data were kept."
    )


@dataclass(frozen=True)
class ErrorVerdict:
    """What an exception raised by the code says about limits."""

    note: str | None
    """The limit it means, in plain words."""
    restart: bool
    """The kernel should be restarted (forked copies of it may be holding the process slots)."""


def classify_error(ename: str, evalue: str, limits: KernelLimits) -> ErrorVerdict:
    """Recognise the exceptions a sandbox limit produces inside the kernel, and the server's own."""
    if ename in _FAULT_NOTES:
        return ErrorVerdict(_FAULT_NOTES[ename], restart=True)
    if ename.endswith("MemoryError"):
        return ErrorVerdict(memory_note(limits), restart=False)
    if (ename == "BlockingIOError" and "Resource temporarily unavailable" in evalue) or (
        "can't start new thread" in evalue
    ):
        return ErrorVerdict(processes_note(limits), restart=True)
    if "[Errno 27]" in evalue or "File too large" in evalue:
        return ErrorVerdict(file_note(limits), restart=False)
    if any(sign in evalue for sign in _NETWORK_SIGNS):
        return ErrorVerdict(NETWORK_NOTE, restart=False)
    return ErrorVerdict(None, restart=False)


def strip_ansi(text: str) -> str:
    """Remove terminal colour and cursor codes (IPython colours its tracebacks)."""
    return _ANSI.sub("", text)


class OutputCollector:
    """Collects one execution's outputs within the text budget and streams them to a callback."""

    def __init__(self, limits: KernelLimits, on_output: OutputCallback | None) -> None:
        self._limits = limits
        self._on_output = on_output
        self._outputs: list[Output] = []
        self._kept = 0
        self._last_char = ""
        self._image_bytes = 0
        self.truncated = False
        self.images_dropped = False
        """Images past the per-execution allowance were dropped (a note says so in the outputs)."""

    async def logs(
        self, text: str, *, separate: bool = False, keep: Literal["head", "tail"] | None = None
    ) -> None:
        """Add text; past the budget it is dropped.

        `separate` starts the text on a line of its own (a result or traceback after prints).
        `keep` marks text that is kept, in part, even past the budget: its head or its tail.
        """
        room = self._limits.output_chars - self._kept
        if keep is None and self.truncated:
            return
        # Only the part that can be kept is cleaned; the window leaves room for the colour codes
        # that stripping removes, so a cut text keeps as many visible characters as it may.
        window = max(room, _RESERVED_CHARS if keep is not None else 0) * _WINDOW_FACTOR + 64
        cut = len(text) > window
        if cut:
            text = text[:window] if keep != "tail" else text[len(text) - window :]
        text = strip_ansi(text)
        if not text:
            return
        if separate and self._last_char not in ("", "\n"):
            text = "\n" + text
        if keep is not None:
            allowed = max(room, _RESERVED_CHARS)
            if len(text) > allowed or cut:
                self.truncated = True
                text = text[:allowed] + " [...]" if keep == "head" else "[...] " + text[len(text) - allowed :]
        elif len(text) > room or cut:
            # Past the budget: keep what fits, say so once, and drop everything after it.
            self.truncated = True
            self._kept = self._limits.output_chars
            if room > 0:
                await self._emit(Output(type="logs", logs=text[:room]))
            await self._emit(Output(type="logs", logs=f"\n[{output_note(self._limits)}]\n"))
            return
        self._kept += len(text)
        await self._emit(Output(type="logs", logs=text))

    async def image(self, png: bytes) -> None:
        """Add a PNG image; past the execution's image allowance it is dropped, with a note once."""
        self._image_bytes += len(png)
        if self._image_bytes > _MAX_IMAGE_BYTES:
            if not self.images_dropped:
                self.images_dropped = True
                await self._emit(Output(type="logs", logs=f"\n[{images_note()}]\n"))
            return
        await self._emit(Output(type="image", png=png))

    async def _emit(self, output: Output) -> None:
        if output.logs:
            self._last_char = output.logs[-1]
        self._outputs.append(output)
        if self._on_output is not None:
            result = self._on_output(output)
            if inspect.isawaitable(result):
                await result

    def outputs(self) -> list[Output]:
        """Everything collected, in order, with consecutive logs merged."""
        merged: list[Output] = []
        for output in self._outputs:
            if output.type == "logs" and merged and merged[-1].type == "logs":
                merged[-1] = Output(type="logs", logs=merged[-1].logs + output.logs)
            else:
                merged.append(output)
        return merged
