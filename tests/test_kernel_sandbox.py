"""The sandbox holds against code that attacks its own limits (real kernels under bubblewrap).

These complement `test_kernels.py`: the limits must survive the code planting modules in its
working folder, memory must be bounded across all of a kernel's processes (its control group),
and the memory-backed filesystems must be small or read-only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from assistants.kernels import Execution, KernelLimits, KernelPool

LIMITS = KernelLimits(timeout_seconds=20, memory_bytes=1024**3, processes=32)


def logs(result: Execution) -> str:
    return "".join(o.logs for o in result.outputs if o.type == "logs")


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[KernelPool]:
    pool = KernelPool(root=tmp_path, limits=LIMITS, warm=0)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_planted_resource_module_does_not_lift_the_limits(pool: KernelPool) -> None:
    async with pool.session("thread_plant", owner="mallory") as kernel:
        fake = "def setrlimit(*args):\n    pass\nRLIMIT_CORE = RLIMIT_AS = RLIMIT_CPU = RLIMIT_FSIZE = RLIMIT_NPROC = 0\n"
        await kernel.write_file("resource.py", fake.encode())
        crashed = await kernel.execute("import os\nos._exit(1)")
        assert crashed.restarted
        checked = await kernel.execute("import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0], resource.__file__)")
    limit, origin = logs(checked).split()
    assert int(limit) == LIMITS.memory_bytes
    assert origin.startswith("/usr/lib/"), "the real module, not the planted one"


async def test_memory_is_bounded_across_all_of_a_kernels_processes(pool: KernelPool) -> None:
    code = (
        "import subprocess, sys\n"
        "hog = 'b = bytearray(700 * 1024 * 1024); import time; time.sleep(3)'\n"
        "children = [subprocess.Popen([sys.executable, '-c', hog]) for _ in range(3)]\n"
        "print([c.wait() for c in children])\n"
    )
    async with pool.session("thread_hog", owner="mallory") as kernel:
        result = await kernel.execute(code)
        after = await kernel.execute("print('alive')")
    # Each child is under the per-process limit (1 GB), but together they would need 2.1 GB: the
    # kernel's control group (1 GB) stops some of them, or the kernel itself, which restarts.
    exits = logs(result)
    assert result.restarted or "-9" in exits, (exits, result.error, result.limit)
    assert "alive" in logs(after)


async def test_memory_backed_folders_are_small_or_read_only(pool: KernelPool) -> None:
    code = (
        "import subprocess\n"
        "try:\n"
        "    open('/dev/shm/big', 'wb').write(b'x' * (100 * 1024 * 1024))\n"
        "except OSError as e:\n"
        "    print('shm', e.errno)\n"
        "try:\n"
        "    open('/dev/new', 'wb')\n"
        "except OSError as e:\n"
        "    print('dev', e.errno)\n"
        "print('unshare', subprocess.run(['unshare', '-Urm', 'true'], capture_output=True).returncode)\n"
    )
    async with pool.session("thread_tmpfs", owner="mallory") as kernel:
        result = await kernel.execute(code)
    lines = logs(result).split("\n")
    assert "shm 28" in lines  # ENOSPC: /dev/shm holds 64 MB
    assert "dev 30" in lines  # EROFS: /dev is read-only
    assert "unshare 1" in lines  # no user namespaces (and so no private mounts) inside


async def test_the_code_runs_in_its_working_folder(pool: KernelPool) -> None:
    async with pool.session("thread_cwd", owner="alice") as kernel:
        result = await kernel.execute("import os\nprint(os.getcwd())")
    assert logs(result).strip() == "/mnt/data"


async def test_more_changed_files_than_listed_is_said_in_plain_words(pool: KernelPool) -> None:
    async with pool.session("thread_many", owner="alice") as kernel:
        result = await kernel.execute("for i in range(150):\n    open(f'n{i:03}.txt', 'w').write('x')")
    assert len(result.files) == 100 and result.files[0] == "n000.txt"
    assert result.limit == "150 files changed; only the first 100 (by name) are listed."
