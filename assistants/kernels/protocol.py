"""The two small protocols the engine depends on, so that its tests can pass a faithful fake.

`KernelPool` and `Kernel` implement them; a fake needs only these methods. Streaming, limits and
restarts are part of the contract: `execute` never raises for anything the code does, it reports it
in the `Execution`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from .execution import Execution, OutputCallback


class CodeKernel(Protocol):
    """A session's kernel, as seen inside `CodeKernels.session`."""

    @property
    def workdir(self) -> Path:
        """The host folder the code sees as `data_path`."""
        ...

    @property
    def data_path(self) -> str:
        """The working folder as the code sees it (/mnt/data in the sandbox)."""
        ...

    async def execute(self, code: str, *, on_output: OutputCallback | None = None) -> Execution:
        """Run code in the session's state; outputs stream to `on_output` as they come."""
        ...

    async def write_file(self, name: str, data: bytes) -> None:
        """Put an input file into the working folder, owned by the code."""
        ...

    async def read_file(self, name: str, max_bytes: int = ...) -> bytes:
        """Read a file the code wrote, never following links."""
        ...


class CodeKernels(Protocol):
    """Kernels for all sessions."""

    async def start(self) -> None:
        """Check the sandbox and start warming kernels up."""
        ...

    def session(self, session_id: str, *, owner: str) -> AbstractAsyncContextManager[CodeKernel]:
        """The session's running kernel, for exclusive use inside `async with`."""
        ...

    async def discard(self, session_id: str) -> None:
        """The session was deleted: stop its kernel, delete its files."""
        ...

    async def close(self) -> None:
        """Stop every kernel."""
        ...
