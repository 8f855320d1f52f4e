"""A session's working folder on the host: handing it to a kernel, noticing changes, safe file access.

The folder is what the code sees as /mnt/data, and the sandboxed code can put anything in it,
symbolic links included. A link there points at whatever its target names *on the host* once the
server follows it, so the server never follows one: the scan below skips links, and `write_file`
and `read_file` open every path component with O_NOFOLLOW relative to the folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from .sandbox import give_to_sandbox

MAX_SCANNED = 10_000
"""Entries looked at when listing changed files; a folder bigger than this is only partly compared."""

MAX_DEPTH = 32
"""Folder levels looked into when listing changed files; deeper files are not listed."""

MAX_REPORTED = 100
"""Changed files listed per execution; `changed_count` says how many there were in all."""

Snapshot = dict[str, tuple[int, int, int]]
"""Relative file name → (inode, size, modification time in ns), regular files only."""

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def snapshot(folder: Path) -> Snapshot:
    """The regular files under `folder`, without following links, at most `MAX_SCANNED` entries."""
    found: Snapshot = {}
    try:
        top = os.open(folder, _DIRECTORY)
    except OSError:
        return found
    try:
        _scan(top, "", os.fstat(top).st_dev, found, [0], 0)
    finally:
        os.close(top)
    return found


def _scan(fd: int, prefix: str, device: int, found: Snapshot, seen: list[int], depth: int) -> bool:
    """Add the files of the folder open as `fd` to `found`; False once `MAX_SCANNED` entries were seen.

    Every folder is opened relative to its parent with O_NOFOLLOW, so a folder the code swaps for a
    link between the listing and the open is refused, not followed; a folder on another file
    system (a mount the server's side put there) is not entered. Entries are read one at a time,
    so a folder of a million files costs no more than the cap.
    """
    with os.scandir(fd) as entries:
        for entry in entries:
            seen[0] += 1
            if seen[0] > MAX_SCANNED:
                return False
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            name = prefix + entry.name
            if stat.S_ISREG(info.st_mode):
                found[name] = (info.st_ino, info.st_size, info.st_mtime_ns)
            elif stat.S_ISDIR(info.st_mode) and info.st_dev == device and depth < MAX_DEPTH:
                try:
                    child = os.open(entry.name, _DIRECTORY, dir_fd=fd)
                except OSError:
                    continue
                try:
                    opened = os.fstat(child)
                    # The folder listed may have been replaced (by another folder, a mount) since.
                    if (opened.st_dev, opened.st_ino) == (device, info.st_ino) and not _scan(
                        child, name + "/", device, found, seen, depth + 1
                    ):
                        return False
                finally:
                    os.close(child)
    return True


def changed(before: Snapshot, after: Snapshot) -> list[str]:
    """Files that are new in `after` or differ from `before`, sorted, at most `MAX_REPORTED`."""
    return sorted(name for name, facts in after.items() if before.get(name) != facts)[:MAX_REPORTED]


def changed_count(before: Snapshot, after: Snapshot) -> int:
    """How many files are new in `after` or differ from `before` (`changed` lists `MAX_REPORTED`)."""
    return sum(1 for name, facts in after.items() if before.get(name) != facts)


def prepare(folder: Path) -> None:
    """Create a working folder (if missing) that belongs to the sandbox user; replace a link with one."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    give_to_sandbox(folder)


def adopt(fresh: Path, folder: Path) -> None:
    """Make `fresh` (a warm kernel's empty folder) the session's `folder`, keeping the session's files.

    A warm kernel already has `fresh` mounted as /mnt/data; renaming it keeps the mount, so the
    session's existing files move into it entry by entry and it then takes the session folder's name.
    """
    for stale in os.listdir(fresh):
        _remove(fresh / stale)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        folder.unlink()
    elif folder.exists():
        for name in os.listdir(folder):
            os.rename(folder / name, fresh / name)
        folder.rmdir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.rename(fresh, folder)


def remove(folder: Path) -> None:
    """Delete a working folder and everything in it (links are removed, never followed)."""
    if folder.is_symlink():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _parts(name: str) -> list[str]:
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or any(p in ("..", ".", "") for p in parts):
        raise ValueError(f"{name!r} is not a plain relative file name inside the working folder")
    return list(parts)


def _open_parent(folder: Path, parts: list[str], *, create: bool) -> int:
    """A descriptor of the folder holding `parts[-1]`, reached without following any link."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(folder, flags)
    try:
        for part in parts[:-1]:
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    if os.geteuid() == 0:
                        owner = os.stat(fd)
                        os.chown(part, owner.st_uid, owner.st_gid, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    pass
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_file(folder: Path, name: str, data: bytes) -> None:
    """Write `data` to `folder/name` as a file the sandboxed code owns; links on the way are refused."""
    parts = _parts(name)
    parent = _open_parent(folder, parts, create=True)
    try:
        temporary = f".{parts[-1]}.incoming"
        # Whatever the code left under the temporary name (a link, say) goes; the file is new.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=parent)
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent
        )
        try:
            _write_all(fd, data)
            if os.geteuid() == 0:
                owner = os.stat(parent)
                os.fchown(fd, owner.st_uid, owner.st_gid)
        finally:
            os.close(fd)
        # The rename makes the file appear whole to code that reads it while it is being copied.
        os.rename(temporary, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
    finally:
        os.close(parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_file(folder: Path, name: str, max_bytes: int) -> bytes:
    """The content of the regular file `folder/name`, refusing links and anything over `max_bytes`."""
    parts = _parts(name)
    parent = _open_parent(folder, parts, create=False)
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
    finally:
        os.close(parent)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{name!r} is not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"{name!r} is larger than {max_bytes} bytes")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(max_bytes + 1)[:max_bytes]
    finally:
        os.close(fd)
