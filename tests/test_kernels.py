"""The code interpreter's kernels: real Jupyter kernels in the real bubblewrap sandbox.

Nothing is mocked. Without bubblewrap or Debian's python3-ipykernel (and numpy, pandas,
matplotlib) these tests fail: `KernelPool.start` raises `SandboxUnavailable` saying what to
install. Most tests share one pool (each in its own session); lifecycle tests that need other
settings start their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from assistants.exceptions import ConfigurationError
from assistants.kernels import (
    Execution,
    KernelCapacityError,
    KernelLimits,
    KernelPool,
    Output,
    SandboxUnavailable,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROJECT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-d0-not-leak-4f1c"
LIMITS = KernelLimits(timeout_seconds=3, file_bytes=10 * 1024**2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KernelPool]:
    """One pool for the tests that do not depend on its settings; every test uses its own session."""
    # A secret in the server's environment, which no kernel may see.
    os.environ["ASSISTANTS_TEST_SECRET"] = SECRET
    pool = KernelPool(
        root=tmp_path_factory.mktemp("sandbox"), limits=LIMITS, warm=2, max_per_user=50, max_total=20
    )
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()
        del os.environ["ASSISTANTS_TEST_SECRET"]


@asynccontextmanager
async def started(root: Path, **options: Any) -> AsyncIterator[KernelPool]:
    """A pool of its own for one test, closed afterwards."""
    pool = KernelPool(root=root, limits=options.pop("limits", LIMITS), **options)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def run(pool: KernelPool, session: str, code: str, owner: str = "alice") -> Execution:
    async with pool.session(session, owner=owner) as kernel:
        return await kernel.execute(code)


def logs(result: Execution) -> str:
    return "".join(o.logs for o in result.outputs if o.type == "logs")


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def on_host(path: str) -> bool:
    return os.path.exists(path)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (a sandbox's init and the kernel it runs, and their children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


async def eventually(condition: Any, seconds: float = 10.0) -> None:
    """Wait until `condition()` holds (for background work the pool does on its own clock)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still not true after {seconds} s")


# State, files, outputs ----------------------------------------------------------------------------


async def test_variables_imports_and_files_persist_within_a_session(pool: KernelPool) -> None:
    async with pool.session("thread_state", owner="alice") as kernel:
        first = await kernel.execute("import math\nx = 40\nopen('notes.txt', 'w').write('kept')")
        second = await kernel.execute("print(x + 2, math.pi > 3, open('/mnt/data/notes.txt').read())")
        assert kernel.data_path == "/mnt/data"
    assert first.error is None and first.files == ["notes.txt"]
    assert logs(second) == "42 True kept\n"
    assert second.error is None and second.limit is None and not second.restarted
    assert (kernel.workdir / "notes.txt").read_text() == "kept"


async def test_the_last_expression_is_shown_like_a_notebook(pool: KernelPool) -> None:
    result = await run(pool, "thread_expr", "print('sum:')\n1 + 1")
    assert logs(result) == "sum:\n2"
    assert result.outputs == [Output(type="logs", logs="sum:\n2")]


async def test_a_csv_copied_into_the_workdir_is_read_with_pandas(pool: KernelPool) -> None:
    async with pool.session("thread_csv", owner="alice") as kernel:
        # The engine copies attachments in as the server's user; `write_file` hands them to the code.
        (kernel.workdir / "sales.csv").write_text("region,amount\nnorth,10\nsouth,32\n")
        await kernel.write_file("input/more.csv", b"region,amount\neast,5\n")
        result = await kernel.execute(
            "import pandas as pd\n"
            "df = pd.concat([pd.read_csv('/mnt/data/sales.csv'), pd.read_csv('input/more.csv')])\n"
            "print(df.amount.sum(), len(df))\n"
            "open('input/more.csv', 'a').write('west,1\\n')"
        )
    assert result.error is None, logs(result)
    assert logs(result).startswith("47 3\n")
    assert result.files == ["input/more.csv"]


async def test_a_matplotlib_figure_comes_back_as_png(pool: KernelPool) -> None:
    streamed: list[Output] = []
    async with pool.session("thread_plot", owner="alice") as kernel:
        result = await kernel.execute(
            "import matplotlib.pyplot as plt, numpy as np\n"
            "print('plotting')\n"
            "plt.plot(np.arange(10), np.arange(10) ** 2)\nplt.title('squares')\nplt.show()",
            on_output=streamed.append,
        )
    assert result.error is None, logs(result)
    assert [o.type for o in result.outputs] == ["logs", "image"]
    assert result.outputs[1].png.startswith(b"\x89PNG\r\n\x1a\n")
    assert streamed == result.outputs


async def test_outputs_stream_while_the_code_runs(pool: KernelPool) -> None:
    loop = asyncio.get_running_loop()
    arrivals: list[tuple[float, str]] = []

    async def on_output(output: Output) -> None:
        arrivals.append((loop.time(), output.logs))

    async with pool.session("thread_stream", owner="alice") as kernel:
        result = await kernel.execute(
            "import time\nprint('first', flush=True)\ntime.sleep(0.6)\nprint('second')", on_output=on_output
        )
    finished = loop.time()
    assert logs(result) == "first\nsecond\n"
    assert arrivals[0][1] == "first\n" and finished - arrivals[0][0] > 0.4


async def test_files_lists_what_the_execution_created_or_changed(pool: KernelPool) -> None:
    async with pool.session("thread_files", owner="alice") as kernel:
        await kernel.execute("open('old.txt', 'w').write('a'); open('same.txt', 'w').write('b')")
        result = await kernel.execute(
            "import os\nos.makedirs('out', exist_ok=True)\n"
            "open('out/report.csv', 'w').write('x,y\\n')\nopen('old.txt', 'a').write('more')\n"
            "os.symlink('/etc/passwd', 'link')"
        )
        content = await kernel.read_file("out/report.csv")
        with pytest.raises(OSError):
            # A link the code made points at the host's files once the server follows it: never.
            await kernel.read_file("link")
    assert result.files == ["old.txt", "out/report.csv"]
    assert content == b"x,y\n"


async def test_input_files_never_follow_links_the_code_made(pool: KernelPool, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    async with pool.session("thread_links", owner="alice") as kernel:
        await kernel.execute(
            f"import os\nos.symlink({str(victim)!r}, 'report.csv')\nos.symlink({str(tmp_path)!r}, 'folder')"
        )
        await kernel.write_file("report.csv", b"a,b\n")
        with pytest.raises(OSError):
            await kernel.write_file("folder/victim.txt", b"a,b\n")
        result = await kernel.execute("print(os.path.islink('report.csv'), open('report.csv').read())")
    assert logs(result) == "False a,b\n\n"
    assert not on_host(str(victim))


async def test_an_error_is_reported_with_its_traceback(pool: KernelPool) -> None:
    result = await run(pool, "thread_error", "undefined_name + 1")
    assert result.error == "NameError: name 'undefined_name' is not defined"
    assert "Traceback" in logs(result) and "\x1b[" not in logs(result)
    assert result.limit is None and not result.restarted


# Hostile code is contained --------------------------------------------------------------------------


async def test_there_is_no_network(pool: KernelPool) -> None:
    connect = await run(pool, "thread_net", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)")
    resolve = await run(pool, "thread_net", "socket.getaddrinfo('example.com', 443)")
    assert connect.error == "OSError: [Errno 101] Network is unreachable"
    assert connect.limit == "No network access in the sandbox."
    assert resolve.error is not None and resolve.error.startswith("gaierror")
    assert resolve.limit == "No network access in the sandbox."


async def test_the_server_files_are_invisible_and_the_system_is_read_only(
    pool: KernelPool, tmp_path: Path
) -> None:
    database = tmp_path / "assistants.db"
    database.write_bytes(b"SQLite format 3\x00 secret rows")
    async with pool.session("thread_fs", owner="alice") as kernel:
        result = await kernel.execute(
            "import os\n"
            "def attempt(action):\n"
            "    try:\n"
            "        action()\n"
            "        return 'allowed'\n"
            "    except OSError as exc:\n"
            "        return type(exc).__name__\n"
            f"print(attempt(lambda: open({str(database)!r}, 'rb').read()))\n"
            "print(attempt(lambda: open('/etc/shadow').read()))\n"
            f"print(os.path.exists({str(PROJECT)!r}), os.path.exists('/root'), os.path.exists('/home'))\n"
            "print(attempt(lambda: open('/usr/evil', 'w')), attempt(lambda: open('/etc/passwd', 'a')))\n"
            "print(sorted(os.listdir('/mnt')), os.getcwd())"
        )
    assert logs(result).splitlines() == [
        "FileNotFoundError",
        "FileNotFoundError",
        "False False False",
        "OSError PermissionError",
        "['data'] /mnt/data",
    ]
    assert not on_host("/usr/evil")


async def test_other_sessions_folders_are_out_of_reach(pool: KernelPool) -> None:
    async with pool.session("thread_one", owner="alice") as one:
        await one.execute("open('private.txt', 'w').write('one only')")
        other_workdir = one.workdir
    result = await run(
        pool, "thread_two",
        "import os\n"
        f"print(os.path.exists({str(other_workdir)!r}), os.listdir('/mnt/data'))\n"
        "print([os.path.join(d, f) for top in ('/mnt', '/tmp', '/run') for d, _, fs in os.walk(top) for f in fs"
        " if f == 'private.txt'])",
        owner="bob",
    )
    assert logs(result).splitlines() == ["False []", "[]"]


async def test_the_server_environment_stays_outside(pool: KernelPool) -> None:
    assert os.environ["ASSISTANTS_TEST_SECRET"] == SECRET
    result = await run(
        pool, "thread_env",
        "import os, glob\n"
        f"leaks = [k for k, v in os.environ.items() if {SECRET!r} in v]\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        f"        if {SECRET!r}.encode() in open(path, 'rb').read():\n"
        "            leaks.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]\n"
        "print(leaks, 'ASSISTANTS_TEST_SECRET' in os.environ, max(pids) < 10)",
    )
    assert logs(result) == "[] False True\n"


async def test_a_fork_bomb_hits_the_process_limit_and_the_kernel_restarts(tmp_path: Path) -> None:
    # The bomb's copies share one CPU core (the kernel's control group), so the kernel needs a few
    # seconds to report the failed fork: a longer timeout than the shared pool's keeps the process
    # limit, not the clock, the thing that stops it.
    limits = dataclasses.replace(LIMITS, timeout_seconds=20)
    async with started(tmp_path, limits=limits, warm=0) as pool, pool.session("thread_fork", owner="alice") as kernel:
        await kernel.execute("open('survives.txt', 'w').write('yes')")
        bomb = await kernel.execute("import os\nwhile True:\n    os.fork()")
        after = await kernel.execute(
            "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]) < 5, open('survives.txt').read())"
        )
    assert bomb.error == "BlockingIOError: [Errno 11] Resource temporarily unavailable"
    assert bomb.limit == "The sandbox allows at most 64 processes; the kernel was restarted."
    assert bomb.restarted
    assert logs(after) == "True yes\n" and not after.restarted


async def test_allocating_10_gb_runs_out_of_memory_and_the_kernel_lives_on(pool: KernelPool) -> None:
    async with pool.session("thread_memory", owner="alice") as kernel:
        await kernel.execute("kept = 'still here'")
        result = await kernel.execute("blob = bytearray(10 * 1024**3)")
        after = await kernel.execute("print(kept)")
    assert result.error == "MemoryError"
    assert result.limit == "The kernel ran out of memory (2 GB limit)."
    assert not result.restarted and logs(after) == "still here\n"


async def test_an_infinite_loop_is_interrupted_at_the_timeout(pool: KernelPool) -> None:
    async with pool.session("thread_loop", owner="alice") as kernel:
        await kernel.execute("kept = 7")
        result = await kernel.execute("while True:\n    pass")
        after = await kernel.execute("print(kept)")
    assert result.error == "KeyboardInterrupt"
    assert result.limit == "The code ran longer than 3 s and was interrupted."
    # Interrupted at the timeout: not before it, and (the loop never ends) not much after.
    assert not result.restarted and 3 <= result.duration < 20
    assert logs(after) == "7\n"


async def test_code_that_ignores_the_interrupt_gets_its_kernel_restarted(pool: KernelPool) -> None:
    async with pool.session("thread_stubborn", owner="alice") as kernel:
        await kernel.execute("kept = 7")
        result = await kernel.execute(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(600)"
        )
        after = await kernel.execute("kept")
    assert result.limit == (
        "The code ran longer than 3 s and was interrupted. "
        "It did not stop when interrupted, so the kernel was restarted."
    )
    assert result.error == "TimeoutError: the code ran longer than 3 s" and result.restarted
    assert after.error == "NameError: name 'kept' is not defined"


async def test_printing_100_mb_keeps_20000_characters(pool: KernelPool) -> None:
    async with pool.session("thread_flood", owner="alice") as kernel:
        once = await kernel.execute("print('x' * 100_000_000)")
        lines = await kernel.execute("for i in range(1_000_000):\n    print(i)\n'done'")
    note = "Output exceeded 20,000 characters; the rest was cut."
    for result in (once, lines):
        assert result.limit == note and result.error is None and not result.restarted
    assert logs(once) == "x" * 20_000 + f"\n[{note}]\n"
    assert logs(lines).startswith("0\n1\n2\n") and logs(lines).endswith(f"[{note}]\n'done'")
    assert len(logs(lines)) < 20_100


async def test_files_are_limited_in_size(pool: KernelPool) -> None:
    result = await run(pool, "thread_fsize", "open('big.bin', 'wb').write(b'0' * (20 * 1024**2))")
    assert result.error == "OSError: [Errno 27] File too large"
    assert result.limit == "Files are limited to 10 MB."


async def test_a_crashed_kernel_restarts_transparently(pool: KernelPool) -> None:
    async with pool.session("thread_crash", owner="alice") as kernel:
        await kernel.execute("kept = 1\nopen('file.txt', 'w').write('kept')")
        crashed_pid = kernel.pid
        crash = await kernel.execute("import os\nos._exit(1)")
        after = await kernel.execute("print(open('file.txt').read())\nkept")
    assert crash.restarted and crash.error is not None and crash.error.startswith("KernelDied")
    assert crashed_pid is not None and not running(crashed_pid)
    assert logs(after).startswith("kept\n") and after.error == "NameError: name 'kept' is not defined"
    assert not after.restarted


async def test_a_kernel_that_died_between_executions_is_replaced(pool: KernelPool) -> None:
    async with pool.session("thread_died", owner="alice") as kernel:
        await kernel.execute("import os, threading\nthreading.Timer(0.2, os._exit, (3,)).start()")
        pid = kernel.pid
        assert pid is not None
        await eventually(lambda: not running(pid))
        result = await kernel.execute("1 + 1")
    assert logs(result) == "2" and result.restarted and result.error is None
    assert result.limit is not None and result.limit.startswith("The kernel had stopped unexpectedly (exit status 3)")


async def test_a_cancelled_execution_does_not_run_on(pool: KernelPool) -> None:
    async with pool.session("thread_cancel", owner="alice") as kernel:
        await kernel.execute("kept = 5")
        task = asyncio.create_task(kernel.execute("import time\ntime.sleep(60)\nkept = 0"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = await kernel.execute("kept")
    # The 60-second sleep did not run on: the next execution did not wait for it.
    assert logs(after) == "5" and after.duration < 30 and not after.restarted


async def test_the_cpu_budget_ends_the_kernel(tmp_path: Path) -> None:
    limits = KernelLimits(timeout_seconds=20, cpu_seconds=4)
    async with started(tmp_path, limits=limits, warm=1) as pool, pool.session("thread_cpu", owner="alice") as kernel:
        result = await kernel.execute("while True:\n    pass")
        after = await kernel.execute("1 + 1")
    assert result.limit == "The kernel used its CPU time budget (4 s) and was restarted."
    # Ended by the 4-second CPU budget, well before the 20-second timeout.
    assert result.restarted and result.duration < 15
    assert logs(after) == "2"


# Lifecycle ----------------------------------------------------------------------------------------


async def test_discard_stops_the_kernel_and_deletes_the_folder(pool: KernelPool) -> None:
    async with pool.session("thread_gone", owner="alice") as kernel:
        await kernel.execute("open('data.txt', 'w').write('x')")
        pid, workdir = kernel.pid, kernel.workdir
    assert pid is not None and (workdir / "data.txt").exists()
    await pool.discard("thread_gone")
    assert not workdir.exists() and not running(pid)
    assert "thread_gone" not in pool.status().sessions
    with pytest.raises(ValueError, match="not a valid session id"):
        async with pool.session("../escape", owner="alice"):
            pass


async def test_an_idle_kernel_shuts_down_and_its_files_survive(tmp_path: Path) -> None:
    async with started(tmp_path, warm=1, idle_seconds=1) as pool:
        async with pool.session("thread_idle", owner="alice") as kernel:
            await kernel.execute("kept = 1\nopen('result.txt', 'w').write('42')")
            pid = kernel.pid
        assert pid is not None
        await eventually(lambda: "thread_idle" not in pool.status().sessions and not running(pid))
        async with pool.session("thread_idle", owner="alice") as kernel:
            result = await kernel.execute("print(open('result.txt').read())\nkept")
    assert logs(result).startswith("42\n") and result.error == "NameError: name 'kept' is not defined"
    assert result.restarted
    assert result.limit == (
        "The session's kernel had been stopped after 1 s without use and was started again; "
        "variables were lost, files in /mnt/data were kept."
    )


async def test_caps_evict_the_least_recently_used_idle_kernel(tmp_path: Path) -> None:
    async with started(tmp_path, warm=1, max_per_user=2, max_total=3) as pool:
        await run(pool, "thread_a", "1", owner="alice")
        await run(pool, "thread_b", "1", owner="alice")
        await run(pool, "thread_a", "1", owner="alice")  # b is now alice's least recently used
        await run(pool, "thread_c", "1", owner="alice")
        assert set(pool.status().sessions) == {"thread_a", "thread_c"}
        async with pool.session("thread_a", owner="alice"), pool.session("thread_c", owner="alice"):
            with pytest.raises(KernelCapacityError, match="You already have 2 code interpreter sessions"):
                async with pool.session("thread_d", owner="alice"):
                    pass
            # The total cap: bob's second session can only evict his own idle first one.
            await run(pool, "thread_x", "1", owner="bob")
            await run(pool, "thread_y", "1", owner="bob")
            assert set(pool.status().sessions) == {"thread_a", "thread_c", "thread_y"}
            async with pool.session("thread_y", owner="bob"):
                with pytest.raises(KernelCapacityError, match=r"as many code interpreter sessions as it allows \(3\)"):
                    async with pool.session("thread_z", owner="carol"):
                        pass
        evicted = await run(pool, "thread_b", "1", owner="alice")
    assert evicted.restarted and evicted.limit is not None and "to make room" in evicted.limit


async def test_close_leaves_no_process_behind(tmp_path: Path) -> None:
    pool = KernelPool(root=tmp_path, limits=LIMITS, warm=2)
    await pool.start()
    async with asyncio.timeout(60):
        await pool.wait_warm()
    async with pool.session("thread_close", owner="alice") as kernel:
        await kernel.execute("import subprocess\nchild = subprocess.Popen(['sleep', '300'])")
    await pool.wait_warm()
    sandboxes = pool.status().pids
    processes = set(sandboxes).union(*(descendants(pid) for pid in sandboxes))
    assert len(sandboxes) == 3 and len(processes) >= 3 * 3 + 1  # bwrap, its init, the kernel; plus sleep
    await pool.close()
    assert [pid for pid in processes if running(pid)] == []
    assert not (tmp_path / "warm").exists() and (tmp_path / "sessions" / "thread_close").exists()


async def test_without_the_sandbox_kernels_still_run_with_a_clean_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSISTANTS_TEST_SECRET", SECRET)
    async with started(tmp_path, warm=1, sandbox=False) as pool, pool.session("thread_open", owner="a") as kernel:
        first = await kernel.execute("import os\nx = 2\nopen('out.txt', 'w').write('1')\nos.getcwd()")
        second = await kernel.execute("print(x * 21, 'ASSISTANTS_TEST_SECRET' in os.environ)")
    assert kernel.data_path == str(kernel.workdir)
    assert logs(first) == repr(str(kernel.workdir)) and first.files == ["out.txt"]
    assert logs(second) == "42 False\n"


async def test_a_missing_sandbox_is_a_clear_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable) as missing:
        await KernelPool(root=tmp_path / "a").start()
    assert isinstance(missing.value, ConfigurationError)
    assert "bubblewrap" in missing.value.message and "ASSISTANTS_CODE_SANDBOX=off" in missing.value.message
    assert "python3-ipykernel" in missing.value.message
    monkeypatch.undo()
    with pytest.raises(SandboxUnavailable, match="must live under /usr"):
        await KernelPool(root=tmp_path / "b", python=sys.executable).start()


# A kernel that breaks the protocol's limits ---------------------------------------------------------

# Sends on the kernel's own IOPub socket, in the thread that owns it, as hostile code can.
_SEND = (
    "k = get_ipython().kernel\n"
    "def send(parts, times=1):\n"
    "    k.iopub_thread.schedule(lambda: [k.iopub_thread.socket.send_multipart(parts, copy=False)"
    " for _ in range(times)])\n"
)


async def test_a_message_too_big_in_all_its_parts_gets_the_kernel_restarted(pool: KernelPool) -> None:
    async with pool.session("thread_parts", owner="alice") as kernel:
        await kernel.execute("kept = 1")
        result = await kernel.execute(_SEND + "send([b'x' * (8 * 1024**2)] * 10)\nimport time\ntime.sleep(60)")
        after = await kernel.execute("kept")
    assert result.error is not None and result.error.startswith("KernelOutputError: the kernel sent more")
    assert result.limit == "The kernel sent more output than allowed and was restarted."
    # Restarted as the message arrived, not after the code's 60-second sleep.
    assert result.restarted and result.duration < 30
    assert after.error == "NameError: name 'kept' is not defined" and not after.restarted


async def test_a_kernel_that_floods_between_executions_is_killed(pool: KernelPool) -> None:
    async with pool.session("thread_unasked", owner="alice") as kernel:
        await kernel.execute(
            _SEND + "import threading\n"
            "threading.Timer(0.3, send, ([b'x', b'y' * (4 * 1024**2)], 40)).start()"
        )
        pid = kernel.pid
        assert pid is not None
        await eventually(lambda: not running(pid))
        result = await kernel.execute("1 + 1")
    assert logs(result) == "2" and result.restarted
    assert result.limit is not None and result.limit.startswith("The kernel had stopped unexpectedly")


async def test_the_server_never_reconnects_to_a_link_in_the_socket_folder(
    pool: KernelPool, tmp_path: Path
) -> None:
    connections: list[object] = []
    host = await asyncio.start_unix_server(lambda r, w: connections.append(w), path=str(tmp_path / "host.sock"))
    async with host, pool.session("thread_relink", owner="alice") as kernel:
        result = await kernel.execute(
            "import json, os, time\n"
            "info = json.load(open('/run/jupyter/kernel.json'))\n"
            "for port in ('shell_port', 'iopub_port', 'control_port'):\n"
            "    path = f\"/run/jupyter/k-{info[port]}\"\n"
            "    os.unlink(path)\n"
            f"    os.symlink({str(tmp_path / 'host.sock')!r}, path)\n"
            "get_ipython().kernel.shell_stream.socket.close(linger=0)\n"
            "time.sleep(2)"
        )
        after = await kernel.execute("1 + 1")
        await asyncio.sleep(0.3)
    assert connections == []
    assert result.error is not None and result.error.startswith("KernelConnectionError")
    assert result.limit == "The kernel broke its connection to the server and was restarted."
    assert result.restarted and logs(after) == "2"


# The working folder's scan --------------------------------------------------------------------------


async def test_the_scan_stops_at_its_cap_and_lists_at_most_100_changes(tmp_path: Path) -> None:
    from assistants.kernels import folders

    before = folders.snapshot(tmp_path)
    for i in range(folders.MAX_SCANNED + 500):
        (tmp_path / f"f{i:05}").touch()
    after = folders.snapshot(tmp_path)
    assert len(after) == folders.MAX_SCANNED
    assert len(folders.changed(before, after)) == folders.MAX_REPORTED
    assert folders.changed_count(before, after) == folders.MAX_SCANNED


async def test_the_scan_never_enters_a_link(tmp_path: Path) -> None:
    from assistants.kernels import folders

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host only")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "mine.txt").write_text("x")
    (data / "link").symlink_to(outside)
    assert set(folders.snapshot(data)) == {"sub/mine.txt"}


async def test_colour_codes_are_stripped_only_from_what_is_kept() -> None:
    from assistants.kernels.execution import OutputCollector

    collector = OutputCollector(KernelLimits(output_chars=100), None)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await collector.logs("\x1b[31mred\x1b[0m " * 2_000_000)
    await collector.logs("more " * 1_000_000)
    assert loop.time() - began < 0.5
    text = "".join(o.logs for o in collector.outputs())
    assert text.startswith("red red ") and "\x1b" not in text and collector.truncated
