"""Users and their API keys. Passwords are hashed with argon2; keys are stored as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .exceptions import AuthenticationError, InvalidRequestError
from .ids import new_id, now
from .store import SqlStore

KEY_PREFIX = "sk-asst-"

_hasher = PasswordHasher()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Accounts:
    """Create users, check passwords, issue and resolve API keys."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    async def add_user(self, name: str, password: str | None) -> str:
        """Create a user; returns its id. Names are unique."""
        name = name.strip()
        if not name or len(name) > 128:
            raise InvalidRequestError("A user name must be 1 to 128 characters long.", param="name")
        user_id = new_id("user")
        password_hash = _hasher.hash(password) if password else None
        async with self.store.transaction() as tx:
            await tx.insert_user(user_id, name, password_hash, now())
        return user_id

    async def user_id(self, name: str) -> str | None:
        async with self.store.read() as tx:
            row = await tx.user_by_name(name)
        return None if row is None else str(row["id"])

    async def ensure_user(self, name: str) -> str:
        """The id of the user `name`, created without a password if missing."""
        existing = await self.user_id(name)
        return existing if existing is not None else await self.add_user(name, None)

    async def count(self) -> int:
        async with self.store.read() as tx:
            return await tx.count_users()

    async def check_password(self, name: str, password: str) -> str | None:
        """The user's id when the password is right, else None (same answer for unknown users)."""
        async with self.store.read() as tx:
            row = await tx.user_by_name(name)
        if row is None or not row["password_hash"]:
            return None
        try:
            _hasher.verify(row["password_hash"], password)
        except (VerificationError, InvalidHashError):
            return None
        return str(row["id"])

    async def create_key(self, user_name: str, label: str = "default") -> str:
        """Issue a new API key for a user; the key itself is shown only this once."""
        user_id = await self.user_id(user_name)
        if user_id is None:
            raise InvalidRequestError(f"No user named {user_name!r}; create it with `assistants users add`.", param="name")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        async with self.store.transaction() as tx:
            await tx.insert_api_key(new_id("key"), user_id, label, _digest(key), now())
        return key

    async def user_for_key(self, key: str) -> str:
        """The user an API key belongs to, or `AuthenticationError`."""
        async with self.store.read() as tx:
            user_id = await tx.user_id_for_key(_digest(key))
        if user_id is None:
            raise AuthenticationError(
                "Incorrect API key provided. Create one with `assistants keys create USER`.", code="invalid_api_key"
            )
        return user_id
