"""The engine's files: upload (with the hosted API's size, type and expiry rules), read, delete
(also out of file search) and the expiry of files whose `expires_at` has come."""

from __future__ import annotations

import contextlib

from .config import Settings
from .exceptions import InvalidRequestError, NotFoundError
from .ids import now
from .store import FileStore, ListParams, Page, SqlStore
from .store.sniff import clean_filename, image_type
from .types import File
from .types.requests import FileExpiry
from .vector_stores import VectorStores

BATCH_FILE_SECONDS = 30 * 24 * 3600
"""A `batch` file uploaded without `expires_after` expires after 30 days, as on the hosted API."""


class EngineFiles:
    """`Engine`'s file operations (see `engine.py`)."""

    store: SqlStore
    settings: Settings
    files: FileStore
    vector_stores: VectorStores

    async def create_file(
        self, owner: str, *, filename: str, purpose: str, content: bytes, expires_after: FileExpiry | None = None
    ) -> File:
        """Store an uploaded file. `expires_after` (seconds from its creation) has the expiry sweep
        delete it then; without one, a `batch` file expires after 30 days and others are kept, as
        on the hosted API."""
        if len(content) > self.settings.max_file_bytes:
            raise InvalidRequestError(
                f"Invalid 'file': {len(content)} bytes is over the limit of {self.settings.max_file_bytes} bytes.",
                param="file",
            )
        if purpose == "vision" and image_type(content) is None:
            raise InvalidRequestError(
                "Invalid 'file': a file for 'vision' must be a PNG, JPEG, GIF or WebP image, and this one's "
                "content is not.",
                param="file",
            )
        if expires_after is not None:
            expires_in: int | None = expires_after.seconds
        else:
            expires_in = BATCH_FILE_SECONDS if purpose == "batch" else None
        # Only the name's last part is kept, printable and bounded; the bytes are stored by id.
        return await self.files.save(
            self.store, owner, filename=clean_filename(filename), purpose=purpose, content=content, expires_in=expires_in
        )

    async def get_file(self, owner: str, file_id: str) -> File:
        async with self.store.read() as tx:
            return await tx.get(File, file_id, owner=owner)

    async def file_content(self, owner: str, file_id: str) -> tuple[File, bytes]:
        async with self.store.read() as tx:
            file = await tx.get(File, file_id, owner=owner)
            path = await tx.file_path(file_id, owner=owner)
        return file, await self.files.read(path)

    async def delete_file(self, owner: str, file_id: str) -> bool:
        async with self.store.transaction() as tx:
            await tx.get(File, file_id, owner=owner)
            path = await tx.file_path(file_id, owner=owner)
            deleted = await tx.delete(File, file_id, owner=owner)
        await self.files.remove(path)
        # A deleted file must stop turning up in file search.
        await self.vector_stores.forget_file(owner, file_id)
        return deleted

    async def expire_files(self) -> list[str]:
        """Delete the files whose `expires_at` has come (bytes, row, and their place in file search)."""
        deleted: list[str] = []
        while True:
            async with self.store.read() as tx:
                due = await tx.expired_files(now())
            for owner, file_id in due:
                with contextlib.suppress(NotFoundError):  # Deleted meanwhile, here or by another process.
                    if await self.delete_file(owner, file_id):
                        deleted.append(file_id)
            if len(due) < 100:
                return deleted

    async def list_files(self, owner: str, params: ListParams, purpose: str | None = None) -> Page[File]:
        async with self.store.read() as tx:
            fields = {"purpose": purpose} if purpose is not None else None
            return await tx.list(File, owner=owner, params=params, fields=fields)
