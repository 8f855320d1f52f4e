"""File contents on disk, under the data folder; the store keeps their rows."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import aiofiles
import aiofiles.os

from ..ids import new_id, now
from ..types import File

if TYPE_CHECKING:
    from .sql import SqlStore


class FileStore:
    """Writes and reads file bytes. Writes go to a temporary name first, so a crash leaves no half file.

    A file's row keeps the path its writer used, but the bytes are always found under this
    process's own folder (see `locate`): processes that share one folder mounted at different
    paths, or a backup restored elsewhere, find every file.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, file_id: str) -> Path:
        return self.root / file_id[-2:] / file_id

    def locate(self, stored: str) -> Path:
        """Where the bytes of a file whose row says `stored` are in this folder: the stored path's
        last two parts (`xx/file-id`, see `path_for`) under `root`. Rows keep the writer's full
        path so that processes of earlier versions, which open it as it is, still find new files."""
        return self.root.joinpath(*Path(stored).parts[-2:])

    async def write(self, file_id: str, content: bytes) -> Path:
        path = self.path_for(file_id)
        await aiofiles.os.makedirs(path.parent, exist_ok=True)
        tmp = path.with_suffix(".part")
        async with aiofiles.open(tmp, "wb") as handle:
            await handle.write(content)
        os.replace(tmp, path)
        return path

    async def read(self, stored: str) -> bytes:
        """The bytes of the file whose row says `stored`."""
        async with aiofiles.open(self.locate(stored), "rb") as handle:
            data: bytes = await handle.read()
        return data

    async def remove(self, stored: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(self.locate(stored))

    async def save(
        self, store: SqlStore, owner: str, *, filename: str, purpose: str, content: bytes, expires_in: int | None = None
    ) -> File:
        """Write the bytes, then the file's row; a failed row leaves no orphan bytes behind.
        `expires_in`: seconds from now until the expiry sweep deletes the file (None: kept)."""
        created = now()
        file = File(
            id=new_id("file"),
            bytes=len(content),
            created_at=created,
            filename=filename,
            purpose=purpose,
            expires_at=None if expires_in is None else created + expires_in,
        )
        path = await self.write(file.id, content)
        try:
            async with store.transaction() as tx:
                await tx.insert(file, owner=owner, path=str(path))
        except BaseException:
            await self.remove(str(path))
            raise
        return file
