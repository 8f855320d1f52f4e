"""The code interpreter tool: the model's Python, run in the session's sandboxed Jupyter kernel.

Chat Completions models have no built-in code interpreter, so the tool is offered to them as a
function, `code_interpreter(code)`. Its calls are stored and streamed with the Assistants shape
(`type: "code_interpreter"`, `input`, `outputs`), which is what `/v1` clients and the chat show.

This module knows the model's side (the definition, the arguments, what the model reads back) and
drives a `KernelPool` (the I/O boundary, in `assistants.kernels`). Saving images and written files
as file objects is the run's business: it passes a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..exceptions import ConfigurationError
from ..kernels import (
    CodeKernel,
    CodeKernels,
    Execution,
    KernelCapacityError,
    KernelLimits,
    KernelPool,
    Output,
)
from ..types.objects import (
    CODE_INTERPRETER_FUNCTION,
    CodeImageOutput,
    CodeInterpreterToolCall,
    CodeLogsOutput,
)

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Run Python 3 in a stateful Jupyter kernel that belongs to this conversation: variables, imports "
    "and files persist between calls. numpy, pandas and matplotlib are installed; there is no network "
    "access. The working folder is /mnt/data: files the user attached are there, and files you write "
    "there are given to the user (link them as sandbox:/mnt/data/NAME). Figures shown with matplotlib "
    "are displayed to the user. Use print() to see values."
)


_SAVED = re.compile(r"^Saved /mnt/data/(?P<name>.+) as (?P<file_id>file-[A-Za-z0-9]+)\.$", re.MULTILINE)


def saved_note(name: str, file_id: str) -> str:
    """The log line that tells the model (and the chat) a written file became a file object."""
    return f"Saved /mnt/data/{name} as {file_id}."


def saved_files(logs: str) -> list[tuple[str, str]]:
    """`(name, file_id)` for each `saved_note` line in a step's logs."""
    return [(m["name"], m["file_id"]) for m in _SAVED.finditer(logs)]


def produced_files(call: CodeInterpreterToolCall) -> list[str]:
    """Every file id a code call produced: the images it showed, then the files it wrote."""
    outputs = call.code_interpreter.outputs
    logs = "".join(o.logs for o in outputs if isinstance(o, CodeLogsOutput))
    images = [o.image.file_id for o in outputs if isinstance(o, CodeImageOutput)]
    return [*images, *(file_id for _, file_id in saved_files(logs))]


_SANDBOX_LINK = re.compile(r"sandbox:/mnt/data/([^\s)\]\"'<>]+)")


def file_path_annotations(text: str, written: dict[str, str]) -> list[dict[str, object]]:
    """`file_path` annotations for the `sandbox:/mnt/data/NAME` links in an answer, as the hosted API made."""
    annotations: list[dict[str, object]] = []
    for match in _SANDBOX_LINK.finditer(text):
        file_id = written.get(match.group(1))
        if file_id is not None:
            annotations.append(
                {
                    "type": "file_path",
                    "text": match.group(0),
                    "start_index": match.start(),
                    "end_index": match.end(),
                    "file_path": {"file_id": file_id},
                }
            )
    return annotations


@dataclass(frozen=True)
class InputFile:
    """A stored file the code should find in /mnt/data."""

    file_id: str
    filename: str
    path: Path


@dataclass(frozen=True)
class WrittenFile:
    """A file the code created or changed in /mnt/data."""

    name: str
    content: bytes


def definition(files: list[str]) -> dict[str, object]:
    """The function definition offered to the model, naming the files it will find."""
    description = DESCRIPTION
    if files:
        description += " Files in /mnt/data: " + ", ".join(files) + "."
    return {
        "type": "function",
        "function": {
            "name": CODE_INTERPRETER_FUNCTION,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string", "description": "The Python code to run."}},
                "required": ["code"],
            },
        },
    }


def parse_code(arguments: str) -> tuple[str, str | None]:
    """The code from the call's JSON arguments, or the raw arguments and an error for the model."""
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError as exc:
        return arguments, f"Error: the arguments are not valid JSON ({exc.msg} at position {exc.pos}); send {{\"code\": \"...\"}}."
    code = parsed.get("code") if isinstance(parsed, dict) else None
    if not isinstance(code, str):
        return arguments, 'Error: the arguments must be a JSON object with a string "code".'
    return code, None


class CodeArgumentStream:
    """Decodes the `code` string out of JSON arguments while they stream, so the code shows as it is written.

    Arguments arrive in fragments such as `{"co`, `de": "import pan`, `das\\nprint(1)"}`: this
    yields `import pan`, then `das` + newline + `print(1)`. Escapes split across fragments wait for
    the rest. The final, authoritative code is parsed once at the end (`parse_code`).
    """

    _ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"'}
    _START = re.compile(r'"code"\s*:\s*"')

    def __init__(self) -> None:
        self.raw = ""
        self.cursor: int | None = None
        self.done = False

    def feed(self, fragment: str) -> str:
        """Add a fragment of the arguments; return the newly decoded part of the code."""
        self.raw += fragment
        if self.done:
            return ""
        if self.cursor is None:
            match = self._START.search(self.raw)
            if match is None:
                return ""
            self.cursor = match.end()
        raw, i, out = self.raw, self.cursor, []
        while i < len(raw):
            char = raw[i]
            if char == '"':
                self.done = True
                i += 1
                break
            if char != "\\":
                out.append(char)
                i += 1
                continue
            if i + 1 >= len(raw):
                break
            escape = raw[i + 1]
            if escape != "u":
                out.append(self._ESCAPES.get(escape, escape))
                i += 2
                continue
            decoded, used = _unicode_escape(raw, i)
            if used == 0:
                break
            out.append(decoded)
            i += used
        self.cursor = i
        return "".join(out)


def _unicode_escape(raw: str, i: int) -> tuple[str, int]:
    r"""Decode `\uXXXX` (and a surrogate pair) at `raw[i]`; `(text, 0)` when more input is needed."""
    if i + 6 > len(raw):
        return "", 0
    try:
        code = int(raw[i + 2 : i + 6], 16)
    except ValueError:
        return raw[i : i + 6], 6
    if 0xD800 <= code < 0xDC00:
        if i + 12 > len(raw):
            return "", 0
        if raw[i + 6 : i + 8] == "\\u":
            with contextlib.suppress(ValueError):
                low = int(raw[i + 8 : i + 12], 16)
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12
    return chr(code), 6


class CodeInterpreterUnavailable(ConfigurationError):
    """The server cannot run code (no sandbox and no opt-out); the model and the user are told why."""


class CodeInterpreter:
    """Runs code for sessions through a kernel pool, or explains why it cannot."""

    def __init__(self, pool: CodeKernels | None, *, unavailable: str | None = None) -> None:
        self.pool = pool
        self.unavailable = unavailable
        """Why code cannot run here (set when the pool failed to start), or None."""

    @classmethod
    def from_settings(cls, settings: Settings) -> CodeInterpreter:
        """The interpreter the operator configured (`ASSISTANTS_CODE_*`)."""
        limits = KernelLimits(
            timeout_seconds=settings.code_timeout_seconds,
            cpu_seconds=settings.code_cpu_seconds,
            memory_bytes=settings.code_memory_mb * 1024 * 1024,
            processes=settings.code_max_processes,
            file_bytes=settings.code_max_file_mb * 1024 * 1024,
            output_chars=settings.code_output_chars,
        )
        pool = KernelPool(
            root=settings.sandbox_dir,
            python=settings.code_python,
            limits=limits,
            warm=settings.code_warm_kernels,
            idle_seconds=settings.code_idle_seconds,
            max_per_user=settings.code_kernels_per_user,
            max_total=settings.code_kernels_total,
            sandbox=settings.code_sandbox,
        )
        return cls(pool)

    async def start(self) -> None:
        """Start the pool; if the sandbox is missing, keep the reason and refuse each call with it."""
        if self.pool is None:
            return
        try:
            await self.pool.start()
        except ConfigurationError as exc:
            log.warning("Code interpreter disabled: %s", exc.message)
            self.unavailable = exc.message
            self.pool = None

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def discard(self, session: str) -> None:
        """The session is gone: stop its kernel and delete its files."""
        if self.pool is not None:
            await self.pool.discard(session)

    async def execute(
        self,
        *,
        owner: str,
        session: str,
        code: str,
        inputs: list[InputFile],
        emit: Callable[[Output], Awaitable[None]],
    ) -> tuple[Execution, Written]:
        """Run `code` in the session's kernel; `emit` sees each output as it comes.

        Raises `CodeInterpreterUnavailable` or `KernelCapacityError`, with messages for people.
        """
        if self.pool is None:
            raise CodeInterpreterUnavailable(
                self.unavailable or "The code interpreter is not enabled on this server."
            )
        queue: asyncio.Queue[Output | None] = asyncio.Queue()

        async def forward() -> None:
            while (output := await queue.get()) is not None:
                await emit(output)

        async with self.pool.session(session, owner=owner) as kernel:
            for name, item in await asyncio.to_thread(_missing, kernel.workdir, inputs):
                await kernel.write_file(name, await asyncio.to_thread(item.path.read_bytes))
            forwarder = asyncio.create_task(forward())
            try:
                result = await kernel.execute(code, on_output=queue.put_nowait)
            finally:
                queue.put_nowait(None)
                await forwarder
            written = await _collect(kernel, result.files)
        return result, written


MAX_WRITTEN_FILES = 20
"""Files saved from one execution; code that writes more gets the first ones and a note."""
MAX_WRITTEN_BYTES = 200 * 1024 * 1024
"""Bytes saved from one execution (a sparse file can claim gigabytes while using no disk)."""


@dataclass(frozen=True)
class Written:
    """What one execution left in /mnt/data for the user, and what it could not hand over."""

    files: list[WrittenFile]
    left_out: list[str]


async def _collect(kernel: CodeKernel, names: list[str]) -> Written:
    files: list[WrittenFile] = []
    left_out: list[str] = []
    budget = MAX_WRITTEN_BYTES
    for name in names:
        if len(files) >= MAX_WRITTEN_FILES or budget <= 0:
            left_out.append(name)
            continue
        try:
            content = await kernel.read_file(name, max_bytes=budget)
        except ValueError:
            # Over the remaining budget (or not a regular file any more).
            left_out.append(name)
            continue
        except OSError:
            # Gone again, or a link: nothing to hand to the user.
            continue
        budget -= len(content)
        files.append(WrittenFile(name=name, content=content))
    return Written(files, left_out)


def _assign_names(inputs: list[InputFile]) -> list[tuple[str, InputFile]]:
    """Each input's name in /mnt/data: its own file name, with the id added when two files share it."""
    named: list[tuple[str, InputFile]] = []
    taken: dict[str, str] = {}
    for item in inputs:
        name = _safe_name(item.filename) or item.file_id
        if taken.get(name, item.file_id) != item.file_id:
            stem, dot, suffix = name.rpartition(".")
            name = f"{stem}-{item.file_id[-6:]}.{suffix}" if dot and stem else f"{name}-{item.file_id[-6:]}"
        if name not in taken:
            named.append((name, item))
        taken[name] = item.file_id
    return named


def placed_names(inputs: list[InputFile]) -> list[str]:
    """The names the inputs have in /mnt/data."""
    return [name for name, _ in _assign_names(inputs)]


def _missing(workdir: Path, inputs: list[InputFile]) -> list[tuple[str, InputFile]]:
    """Inputs missing from the folder. One already there is the code's own: changes to it are kept."""
    return [(name, item) for name, item in _assign_names(inputs) if not os.path.lexists(workdir / name) and item.path.exists()]


def _safe_name(filename: str) -> str:
    """A plain file name: no folders, no leading dots."""
    return Path(filename.replace("\\", "/")).name.lstrip(".")


__all__ = [
    "CodeArgumentStream",
    "CodeInterpreter",
    "CodeInterpreterUnavailable",
    "InputFile",
    "KernelCapacityError",
    "WrittenFile",
    "definition",
    "file_path_annotations",
    "parse_code",
    "placed_names",
    "saved_files",
    "saved_note",
]
