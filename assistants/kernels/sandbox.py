"""The operating-system side of a kernel: the bubblewrap sandbox it runs in, and its process.

A kernel process sees a read-only /usr, the few files under /etc that Python, numpy and matplotlib
read, a private /proc, /dev and /tmp, its socket folder at /run/jupyter and its working folder at
/mnt/data, which is the only host folder it can write. It has no network (its own network
namespace has only a loopback device), its own PID namespace (killing the sandbox's first process
kills everything the code started), an empty environment apart from a few harmless variables, and
resource limits set inside the sandbox by a tiny launcher just before it becomes the kernel.

When the server runs as root, the sandbox runs as uid/gid 65534 ("nobody"): root is exempt from
RLIMIT_NPROC even inside a user namespace, and an unprivileged sandbox user is a second wall. The
kernel's folders are handed to that user with `give_to_sandbox`. Because bubblewrap then runs as
that user, it could not reach a working folder below folders private to root (a data folder
under /root, say); a short helper, still root, first shows the folder at a path under the
kernel's socket folder in a mount namespace of its own, then drops to the user and becomes bwrap.

With `sandboxed=False` the same launcher runs the kernel directly (as "nobody" when root, as the
server's user otherwise), with the same clean environment and limits but without any isolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..exceptions import SandboxUnavailable
from .cgroups import Cgroups, KernelCgroup
from .execution import KernelLimits

logger = logging.getLogger(__name__)

SANDBOX_ID = 65534
SHM_BYTES = 64 * 1024**2
"""Size of the sandbox's /dev/shm (shared memory for multiprocessing)."""
"""The uid and gid the sandbox runs as when the server runs as root."""

INSTALL_HINT = (
    "On Debian or Ubuntu: apt-get install bubblewrap python3-ipykernel python3-numpy python3-pandas "
    "python3-matplotlib. Or set ASSISTANTS_CODE_SANDBOX=off to run code without a sandbox, at your "
    "own risk."
)

# Files under /etc the kernel needs: library lookup (Debian picks its BLAS through
# /etc/alternatives), fonts and matplotlib's defaults, user names, time zone and MIME types.
# Nothing else of /etc is visible, so /etc/shadow and the server's configuration stay out.
_ETC = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/fonts",
    "/etc/matplotlibrc",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/mime.types",
)

_INSIDE_SOCKETS = "/run/jupyter"
_INSIDE_DATA = "/mnt/data"

# Runs inside the sandbox: set the limits on itself, then become the kernel. The limits are set
# here rather than by the server so that they count processes inside the sandbox's own user
# namespace (the server may be root, which RLIMIT_NPROC ignores).
#
# Both the launcher and the kernel run isolated (`-I`): the working folder is not on the import
# path while they start, so a `resource.py` the code left in /mnt/data cannot replace the module
# that sets the limits. The launcher starts in `/` and moves to the working folder afterwards.
_LAUNCHER = """\
import os, resource, sys
address, cpu, processes, fsize = (int(a) for a in sys.argv[1:5])
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_AS, (address, address))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
if processes:
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
os.chdir(sys.argv[5])
os.execv(sys.executable, [sys.executable, "-I", "-B", "-m", "ipykernel_launcher", *sys.argv[6:]])
"""

# Runs as root before the sandbox starts (only when the server is root): binds the data folder at
# a path the sandbox user can reach, in a mount namespace of its own, then drops to that user and
# becomes bubblewrap. Python 3.11 has no os.unshare, hence ctypes.
_MOUNT_HELPER = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(result, what):
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
check(libc.unshare(0x00020000), "unshare(CLONE_NEWNS)")
check(libc.mount(b"none", b"/", None, (1 << 14) | (1 << 18), None), "mount --make-rprivate /")
check(libc.mount(sys.argv[1].encode(), sys.argv[2].encode(), None, 4096, None), "mount --bind")
uid = int(sys.argv[3])
# Join the kernel's control groups while still root; everything started from here stays inside.
for procs in filter(None, sys.argv[4].split(",")):
    with open(procs, "w") as fh:
        fh.write(str(os.getpid()))
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
os.execv(sys.argv[5], sys.argv[5:])
"""

_PROBE = """\
import importlib.util, sys
missing = [m for m in ("ipykernel", "numpy", "pandas", "matplotlib") if importlib.util.find_spec(m) is None]
print(" ".join(missing))
"""


def sandbox_ids() -> tuple[int, int]:
    """The uid and gid the kernels run as: "nobody" when the server is root, else the server's own."""
    if os.geteuid() == 0:
        return SANDBOX_ID, SANDBOX_ID
    return os.geteuid(), os.getegid()


def give_to_sandbox(path: Path) -> None:
    """Make a folder (or file) the sandbox's own, private to it and to the server."""
    uid, gid = sandbox_ids()
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    os.chmod(path, 0o700 if path.is_dir() else 0o600)


def _environment(home: str) -> dict[str, str]:
    # Thread pools sized for the whole machine reserve address space per thread, which RLIMIT_AS
    # counts; one thread each keeps numpy and friends well inside the memory limit.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp" if home == "/tmp" else home,
        "LANG": "C.UTF-8",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }


class Sandbox:
    """Starts kernel processes with one Python, one set of limits, sandboxed or not."""

    def __init__(self, python: str, limits: KernelLimits, *, sandboxed: bool = True) -> None:
        self.python = python
        self.limits = limits
        self.sandboxed = sandboxed
        self._bwrap: str | None = None
        self._cgroups: Cgroups | None = None

    @property
    def data_path(self) -> str | None:
        """Where the code sees its working folder: /mnt/data, or None when it sees the host path."""
        return _INSIDE_DATA if self.sandboxed else None

    async def check(self) -> None:
        """Raise `SandboxUnavailable` unless a kernel can start: bubblewrap works, the packages are there."""
        if not os.access(self.python, os.X_OK):
            raise SandboxUnavailable(
                f"The code interpreter's Python {self.python!r} does not exist or cannot run. {INSTALL_HINT}"
            )
        if self.sandboxed:
            self._bwrap = shutil.which("bwrap")
            if self._bwrap is None:
                raise SandboxUnavailable(
                    f"The code interpreter needs bubblewrap (the `bwrap` command) to sandbox code. {INSTALL_HINT}"
                )
            if not _under_usr(self.python):
                raise SandboxUnavailable(
                    f"The code interpreter's Python must live under /usr, the only system folder the "
                    f"sandbox shows; {self.python!r} does not. Use /usr/bin/python3. {INSTALL_HINT}"
                )
        sockets, _, home = self._prepare_sockets()
        try:
            probe_data = sockets / "probe"
            probe_data.mkdir()
            give_to_sandbox(probe_data)
            command, user = self._command(sockets, probe_data, home, [self.python, "-c", _PROBE])
            probe = await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=_environment(home), cwd="/", **user,
            )
            stdout, stderr = await asyncio.wait_for(probe.communicate(), 30)
        except (OSError, TimeoutError) as exc:
            raise SandboxUnavailable(f"The code interpreter's sandbox could not start: {exc}. {INSTALL_HINT}") from exc
        finally:
            shutil.rmtree(sockets, ignore_errors=True)
        if probe.returncode != 0:
            detail = stderr.decode(errors="replace").strip()[-500:]
            raise SandboxUnavailable(
                f"The code interpreter's sandbox could not start ({detail or f'exit status {probe.returncode}'}). "
                f"{INSTALL_HINT}"
            )
        missing = stdout.decode().split()
        if missing:
            raise SandboxUnavailable(
                f"The code interpreter's Python {self.python} lacks {', '.join(missing)}. {INSTALL_HINT}"
            )
        if self.sandboxed and os.geteuid() == 0:
            self._cgroups = await asyncio.to_thread(
                Cgroups, memory_bytes=self.limits.memory_bytes, processes=self.limits.processes
            )
            await asyncio.to_thread(self._cgroups.sweep)

    def _command(
        self,
        sockets: Path,
        data: Path,
        home: str,
        program: list[str],
        status_fd: int | None = None,
        cgroup: KernelCgroup | None = None,
    ) -> tuple[list[str], dict[str, Any]]:
        """The full command line for `program`, and the user/group arguments to start it with."""
        if not self.sandboxed:
            uid, gid = sandbox_ids()
            if os.geteuid() == 0:
                return program, {"user": uid, "group": gid, "extra_groups": []}
            return program, {}
        assert self._bwrap is not None, "Sandbox.check() must run before kernels start"
        source = str(data)
        prefix: list[str] = []
        if os.geteuid() == 0:
            # bubblewrap runs as the sandbox user and must be able to walk to every folder it binds,
            # but the data folder may sit under folders private to root. A private mount namespace
            # shows it at a path under the socket folder first; the helper then drops to the
            # sandbox user and becomes bubblewrap.
            source = str(sockets / "data")
            procs = ",".join(cgroup.procs) if cgroup is not None else ""
            prefix = [self.python, "-I", "-S", "-c", _MOUNT_HELPER, str(data), source, str(SANDBOX_ID), procs]
        command = [
            *prefix, self._bwrap,
            "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            # No user namespaces inside (they would allow mounting memory-backed filesystems).
            "--disable-userns", "--hostname", "sandbox", "--clearenv",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
        ]
        for path in _ETC:
            if os.path.exists(path):
                command += ["--ro-bind", path, path]
        command += [
            "--proc", "/proc", "--dev", "/dev",
            # /dev is memory-backed: read-only, with a small /dev/shm; /tmp is capped.
            "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--size", str(self.limits.tmp_bytes), "--tmpfs", "/tmp",
            "--bind", str(sockets), _INSIDE_SOCKETS,
            "--bind", source, _INSIDE_DATA, "--chdir", "/",
        ]
        for name, value in _environment(home).items():
            command += ["--setenv", name, value]
        if status_fd is not None:
            command += ["--json-status-fd", str(status_fd)]
        return [*command, *program], {}

    async def spawn(self, data: Path) -> SandboxProcess:
        """Start a kernel whose working folder is `data`; it is ready once a client hears from it."""
        sockets, connection, home = self._prepare_sockets()
        limits = self.limits
        inside = _INSIDE_SOCKETS if self.sandboxed else str(sockets)
        launcher = [
            self.python, "-I", "-c", _LAUNCHER,
            str(limits.memory_bytes), str(limits.cpu_seconds),
            # RLIMIT_NPROC counts every process of a user in a user namespace; without a namespace of
            # their own, kernels would share one count, so the limit only applies inside the sandbox.
            str(limits.processes if self.sandboxed else 0), str(limits.file_bytes),
            # Unsandboxed, the process already starts in the folder (a root server enters it before
            # dropping to the sandbox user, who may not be able to reach it by path).
            _INSIDE_DATA if self.sandboxed else ".",
            "-f", f"{inside}/kernel.json", "--HistoryManager.enabled=False",
            "--InteractiveShell.colors=NoColor", "--IPKernelApp.quiet=True",
        ]
        status_read, status_write = os.pipe()
        cgroup = None
        if self._cgroups is not None and self._cgroups.available:
            try:
                cgroup = await asyncio.to_thread(self._cgroups.create)
            except OSError as exc:
                logger.warning("A kernel starts without its control group: %s", exc)
        command, user = self._command(sockets, data, home, launcher, status_write, cgroup)
        log = os.open(sockets / "kernel.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                env=_environment(home), cwd="/" if self.sandboxed else str(data),
                start_new_session=True, pass_fds=(status_write,), **user,
            )
        except BaseException as exc:
            os.close(status_read)
            shutil.rmtree(sockets, ignore_errors=True)
            if cgroup is not None:
                cgroup.remove()
            if isinstance(exc, OSError):
                raise SandboxUnavailable(f"The code interpreter could not start a kernel: {exc}.") from exc
            raise
        finally:
            os.close(log)
            os.close(status_write)
        os.set_blocking(status_read, False)
        return SandboxProcess(process, sockets, connection, status_read, cgroup)

    def _prepare_sockets(self) -> tuple[Path, dict[str, Any], str]:
        """A fresh socket folder holding the kernel's connection file; the server's view of it; HOME."""
        # Unix socket paths must stay under 108 bytes, so the sockets live in a short folder under
        # /tmp rather than next to the (possibly deep) data folder.
        sockets = Path(tempfile.mkdtemp(prefix="ak-", dir="/tmp" if os.path.isdir("/tmp") else None))
        give_to_sandbox(sockets)
        home = "/tmp"
        for name in ("data",) if self.sandboxed else ("home",):
            os.mkdir(sockets / name)
            give_to_sandbox(sockets / name)
        if not self.sandboxed:
            home = str(sockets / "home")
        inside = _INSIDE_SOCKETS if self.sandboxed else str(sockets)
        connection: dict[str, Any] = {
            "transport": "ipc", "ip": f"{inside}/k", "key": secrets.token_hex(32),
            "signature_scheme": "hmac-sha256", "kernel_name": "",
            "shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5,
        }
        path = sockets / "kernel.json"
        path.write_text(json.dumps(connection))
        give_to_sandbox(path)
        # The two views differ only in where the socket folder is.
        return sockets, connection | {"ip": f"{sockets}/k"}, home


class SandboxProcess:
    """One running kernel process: its socket folder, connection details, log, and how to kill it."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        sockets: Path,
        connection: dict[str, Any],
        status_fd: int,
        cgroup: KernelCgroup | None = None,
    ) -> None:
        self.process = process
        self.cgroup = cgroup
        self.sockets = sockets
        self.connection = connection
        """The connection file's content as the server sees it (`ip` is the host socket path)."""
        self._status_fd = status_fd
        self._inner_pid: int | None = None
        self.exited: asyncio.Task[int] = asyncio.ensure_future(process.wait())

    @property
    def pid(self) -> int:
        """The host pid of the process the server started (bwrap, or the kernel when not sandboxed)."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process ended; 128 + N when a signal N killed the kernel."""
        if self.process.returncode is None:
            return None
        code = self.process.returncode
        return 128 - code if code < 0 else code

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the kernel's own stderr (start-up errors land here)."""
        try:
            with open(self.sockets / "kernel.log", "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - chars))
                return fh.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def _read_status(self) -> None:
        # bwrap writes the sandbox's first process's host pid once the sandbox is set up; reading it
        # lets `kill` wait until that process, and with it the whole PID namespace, is gone.
        if self._inner_pid is not None or self._status_fd < 0:
            return
        with contextlib.suppress(OSError, ValueError):
            for line in os.read(self._status_fd, 65536).decode().splitlines():
                pid = json.loads(line).get("child-pid")
                if isinstance(pid, int):
                    self._inner_pid = pid
                    break

    async def kill(self) -> None:
        """Kill the kernel and everything it started, remove its socket folder; safe to call twice."""
        self._read_status()
        if self.process.returncode is None and self._inner_pid is not None:
            # Killing the sandbox's first process ends its PID namespace, and bwrap, its parent,
            # reaps it and exits; killing bwrap first would leave that process to whoever adopts
            # orphans (the server itself, when it runs as a container's PID 1).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self._inner_pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), 2)
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        await self.exited
        if self._inner_pid is not None:
            await _wait_gone(self._inner_pid)
            self._inner_pid = None
        if self._status_fd >= 0:
            os.close(self._status_fd)
            self._status_fd = -1
        await asyncio.to_thread(shutil.rmtree, self.sockets, True)
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)


def _under_usr(python: str) -> bool:
    return os.path.realpath(python).startswith("/usr/")


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no resources any more)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


async def _wait_gone(pid: int, seconds: float = 5.0) -> None:
    """Wait until a process has exited, or `seconds` passed."""
    for _ in range(int(seconds / 0.01)):
        if not _running(pid):
            return
        await asyncio.sleep(0.01)
