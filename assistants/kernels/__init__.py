"""The code interpreter's backend: sandboxed, stateful Python kernels, one per chat session.

    from assistants.kernels import KernelPool, KernelLimits

    pool = KernelPool(root=data_dir / "sandbox", limits=KernelLimits(timeout_seconds=60))
    await pool.start()                                   # SandboxUnavailable if bwrap or packages are missing
    async with pool.session(thread_id, owner=user_id) as kernel:
        await kernel.write_file("sales.csv", data)       # the code sees /mnt/data/sales.csv
        result = await kernel.execute(code, on_output=show)
    await pool.close()

Each kernel is a Jupyter kernel (ipykernel, reached with jupyter_client over ipc sockets) inside a
bubblewrap sandbox: no network, a read-only view of the system, no environment from the server,
and only the session's working folder writable. Variables, imports and files persist from one
execution to the next. See `pool` for the lifecycle, `sandbox` for the isolation, `execution` for
the limits and how they are reported.

    execution.py   KernelLimits, Output, Execution; output budget; limits in plain words
    sandbox.py     the bubblewrap command line and the kernel's OS process
    client.py      the Jupyter messaging protocol: start, execute, interrupt
    kernel.py      a session's kernel: restarts, changed files, safe file access
    folders.py     working folders: hand-over to warm kernels, change scan, no-follow file access
    pool.py        warm pool, caps, idle reaper, discard, close
    protocol.py    the two small protocols the engine depends on
"""

from typing import TYPE_CHECKING

from ..exceptions import KernelCapacityError, SandboxUnavailable
from .execution import Execution, KernelLimits, Output, OutputCallback
from .kernel import Kernel
from .pool import KernelPool, PoolStatus
from .protocol import CodeKernel, CodeKernels

if TYPE_CHECKING:

    def _implements_the_protocols(pool: KernelPool, kernel: Kernel) -> tuple[CodeKernels, CodeKernel]:
        # mypy checks here that the pool and its kernels satisfy the protocols the engine uses.
        return pool, kernel


__all__ = [
    "CodeKernel",
    "CodeKernels",
    "Execution",
    "Kernel",
    "KernelCapacityError",
    "KernelLimits",
    "KernelPool",
    "Output",
    "OutputCallback",
    "PoolStatus",
    "SandboxUnavailable",
]
