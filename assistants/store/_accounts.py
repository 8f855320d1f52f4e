"""Users, API keys and failed sign-ins (the login throttle)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..exceptions import InvalidRequestError
from . import schema
from ._objects import ObjectsTx

SIGN_IN_NAME_LOCK_SPACE = 0x6C6F6769
"""The first key of the per-user-name advisory locks sign-in tries take turns on (PostgreSQL)."""
SIGN_IN_ADDRESS_LOCK_SPACE = 0x6C6F6761
"""The first key of the per-client-address advisory locks sign-in tries take turns on (PostgreSQL)."""


class AccountsTx(ObjectsTx):
    """User, key and sign-in rows."""

    async def take_turns_signing_in(self, subjects: builtins.list[str]) -> None:
        """Make this transaction wait for any other one counting a sign-in for these subjects (user
        name, client address) to end, so that a count after inserting sees every try before it.
        PostgreSQL: transaction-scoped advisory locks, always taken in the order given; SQLite
        needs none (its writes take turns, and a write transaction reads the latest rows)."""
        if self.conn.dialect.name == "postgresql":
            for subject in subjects:
                # Names and addresses lock in key spaces of their own: a name whose hash equals an
                # address's cannot make two tries take the same two locks in opposite orders.
                space = SIGN_IN_NAME_LOCK_SPACE if subject.startswith("name:") else SIGN_IN_ADDRESS_LOCK_SPACE
                await self.conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:subject))"),
                    {"space": space, "subject": subject},
                )

    async def add_login_failures(self, subjects: builtins.list[str], at_ms: int) -> builtins.list[int]:
        """Count a try against each subject; the rows' `seq`s, in order."""
        table = schema.login_failures
        seqs = []
        for subject in subjects:
            result = await self.conn.execute(table.insert().values(subject=subject, at_ms=at_ms).returning(table.c.seq))
            seqs.append(int(result.scalar_one()))
        return seqs

    async def recent_login_failures(self, subject: str, *, since_ms: int, limit: int, besides: int) -> builtins.list[int]:
        """When the subject's newest `limit` tries after `since_ms` were made, newest first,
        leaving out the row `besides` (the try being decided)."""
        table = schema.login_failures
        query = (
            sa.select(table.c.at_ms)
            .where(table.c.subject == subject, table.c.at_ms > since_ms, table.c.seq != besides)
            .order_by(table.c.at_ms.desc())
            .limit(limit)
        )
        return [int(value) for value in (await self.conn.execute(query)).scalars()]

    async def forget_login_failures(self, *, subject: str, seq: int) -> None:
        """Clear every try of `subject` (a user name that signed in) and the row `seq` (that try's
        address row: a right password does not count against its address)."""
        table = schema.login_failures
        await self.conn.execute(table.delete().where(sa.or_(table.c.subject == subject, table.c.seq == seq)))

    async def prune_login_failures(self, before_ms: int, subjects: builtins.list[str] | None = None) -> None:
        """Forget tries made at or before `before_ms` (outside every window): of `subjects`, or of all."""
        table = schema.login_failures
        query = table.delete().where(table.c.at_ms <= before_ms)
        if subjects is not None:
            query = query.where(table.c.subject.in_(subjects))
        await self.conn.execute(query)

    async def insert_user(self, user_id: str, name: str, password_hash: str | None, created_at: int) -> None:
        try:
            await self.conn.execute(
                schema.users.insert().values(id=user_id, name=name, password_hash=password_hash, created_at=created_at)
            )
        except IntegrityError as exc:
            raise InvalidRequestError(f"A user named {name!r} already exists.", param="name") from exc

    async def user_by_name(self, name: str) -> Mapping[str, Any] | None:
        row = (await self.conn.execute(sa.select(schema.users).where(schema.users.c.name == name))).mappings().first()
        return dict(row) if row else None

    async def user_by_id(self, user_id: str) -> Mapping[str, Any] | None:
        row = (await self.conn.execute(sa.select(schema.users).where(schema.users.c.id == user_id))).mappings().first()
        return dict(row) if row else None

    async def set_password(self, user_id: str, password_hash: str) -> None:
        await self.conn.execute(schema.users.update().where(schema.users.c.id == user_id).values(password_hash=password_hash))

    async def user_ids(self) -> builtins.list[str]:
        return [str(row[0]) for row in (await self.conn.execute(sa.select(schema.users.c.id))).all()]

    async def count_users(self) -> int:
        return int((await self.conn.execute(sa.select(sa.func.count()).select_from(schema.users))).scalar_one())

    async def insert_api_key(self, key_id: str, user_id: str, name: str, key_hash: str, created_at: int) -> None:
        await self.conn.execute(
            schema.api_keys.insert().values(id=key_id, user_id=user_id, name=name, key_hash=key_hash, created_at=created_at)
        )

    async def user_id_for_key(self, key_hash: str) -> str | None:
        query = sa.select(schema.api_keys.c.user_id).where(schema.api_keys.c.key_hash == key_hash)
        value = (await self.conn.execute(query)).scalar()
        return None if value is None else str(value)
