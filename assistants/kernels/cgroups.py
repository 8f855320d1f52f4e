"""A control group per kernel: one memory, process and CPU budget for everything the kernel starts.

Resource limits (`setrlimit`) count per process, so code that starts 60 processes could use 60
times the memory limit. A control group counts them together. The server creates one per kernel
(it must be root and the cgroup files writable, as on a host or a privileged container), and the
root mount helper moves itself into it before it drops privileges and becomes bubblewrap, so every
process of the sandbox is inside from the start. Both cgroup v1 (separate `memory`, `pids` and
`cpu` hierarchies) and v2 (one unified tree with delegated controllers) are handled; where neither
is writable, the kernel runs with the per-process limits only, and `available` says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per v1 controller (`"memory"`...), and `""` for the v2 tree."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


@dataclass
class KernelCgroup:
    """The cgroup folders of one kernel; `procs` are the files a process writes its pid into to join."""

    folders: list[Path] = field(default_factory=list)

    @property
    def procs(self) -> list[str]:
        return [str(folder / "cgroup.procs") for folder in self.folders]

    def remove(self) -> None:
        """Delete the folders once their processes are gone (a busy folder is left for the next sweep)."""
        for folder in self.folders:
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.folders = []


class Cgroups:
    """Creates per-kernel cgroups under the server's own, when the system lets it."""

    def __init__(self, *, memory_bytes: int, processes: int, cpus: float = 1.0) -> None:
        self.memory_bytes = memory_bytes
        self.processes = processes
        self.cpus = cpus
        self.prefix = f"assistants-kernel-{os.getpid()}-"
        self.available = os.geteuid() == 0 and self._probe()

    def _probe(self) -> bool:
        try:
            probe = self.create()
        except OSError as exc:
            log.info("Kernels run without a control group (%s): each process is limited on its own.", exc)
            return False
        ok = bool(probe.folders)
        probe.remove()
        return ok

    def create(self) -> KernelCgroup:
        """A new cgroup with the limits set (raises OSError when the system refuses)."""
        name = self.prefix + secrets.token_hex(4)
        paths = _own_paths()
        group = KernelCgroup()
        try:
            if (ROOT / "cgroup.controllers").exists() and "" in paths:
                folder = ROOT / paths[""].lstrip("/") / name
                folder.mkdir()
                group.folders.append(folder)
                self._write(folder / "memory.max", str(self.memory_bytes))
                self._write(folder / "memory.swap.max", "0", optional=True)
                self._write(folder / "pids.max", str(self.processes))
                self._write(folder / "cpu.max", f"{int(self.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}", optional=True)
                return group
            for controller, settings in (
                ("memory", (("memory.limit_in_bytes", str(self.memory_bytes), False),
                            ("memory.memsw.limit_in_bytes", str(self.memory_bytes), True))),
                ("pids", (("pids.max", str(self.processes), False),)),
                ("cpu", (("cpu.cfs_period_us", str(CPU_PERIOD_US), True),
                         ("cpu.cfs_quota_us", str(int(self.cpus * CPU_PERIOD_US)), True))),
            ):
                if controller not in paths or not (ROOT / controller).is_dir():
                    if controller == "cpu":
                        continue
                    raise OSError(f"no cgroup v1 {controller} hierarchy")
                folder = ROOT / controller / paths[controller].lstrip("/") / name
                folder.mkdir()
                group.folders.append(folder)
                for file, value, optional in settings:
                    self._write(folder / file, value, optional=optional)
        except OSError:
            group.remove()
            raise
        return group

    @staticmethod
    def _write(path: Path, value: str, *, optional: bool = False) -> None:
        try:
            path.write_text(value)
        except OSError:
            if not optional:
                raise

    def sweep(self) -> None:
        """Remove folders a previous run of this server left (their kernels are gone)."""
        paths = _own_paths()
        parents = [ROOT / paths[""].lstrip("/")] if "" in paths and (ROOT / "cgroup.controllers").exists() else [
            ROOT / c / paths[c].lstrip("/") for c in ("memory", "pids", "cpu") if c in paths
        ]
        for parent in parents:
            with contextlib.suppress(OSError):
                for folder in parent.iterdir():
                    if folder.is_dir() and folder.name.startswith("assistants-kernel-") and not folder.name.startswith(self.prefix):
                        with contextlib.suppress(OSError):
                            folder.rmdir()
