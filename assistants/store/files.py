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
    """Writes and reads file bytes. Writes go to a temporary name first, so a crash leaves no half file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, file_id: str) -> Path:
        return self.root / file_id[-2:] / file_id

    async def write(self, file_id: str, content: bytes) -> Path:
        path = self.path_for(file_id)
        await aiofiles.os.makedirs(path.parent, exist_ok=True)
        tmp = path.with_suffix(".part")
        async with aiofiles.open(tmp, "wb") as handle:
            await handle.write(content)
        os.replace(tmp, path)
        return path

    async def read(self, path: str) -> bytes:
        async with aiofiles.open(path, "rb") as handle:
            data: bytes = await handle.read()
        return data

    async def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(path)

    async def save(self, store: SqlStore, owner: str, *, filename: str, purpose: str, content: bytes) -> File:
        """Write the bytes, then the file's row; a failed row leaves no orphan bytes behind."""
        file = File(id=new_id("file"), bytes=len(content), created_at=now(), filename=filename, purpose=purpose)
        path = await self.write(file.id, content)
        try:
            async with store.transaction() as tx:
                await tx.insert(file, owner=owner, path=str(path))
        except BaseException:
            await self.remove(str(path))
            raise
        return file
