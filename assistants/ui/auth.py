"""Password login for the chat, against the users in the engine's database, with throttling."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..config import Settings
from ..runtime import Runtime
from ..store import SqlStore

SECRET_FILE = "chainlit_auth_secret"


def ensure_auth_secret(settings: Settings) -> None:
    """Use `CHAINLIT_AUTH_SECRET`, or one generated once and kept (owner-only) in the data folder."""
    if os.environ.get("CHAINLIT_AUTH_SECRET"):
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path: Path = settings.data_dir / SECRET_FILE
    if not path.exists():
        # Written whole under a private name, then linked into place: processes starting together on
        # one shared folder either create it or find it complete, never empty or half written.
        tmp = path.with_name(f"{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    os.environ["CHAINLIT_AUTH_SECRET"] = path.read_text().strip()


async def ensure_first_user(runtime: Runtime) -> None:
    """On the very first start, create `admin` with a random password and print it once."""
    await runtime.start()
    if await runtime.accounts.count() > 0:
        return
    password = secrets.token_urlsafe(12)
    await runtime.accounts.add_user("admin", password)
    banner = (
        "\n"
        "  First start: created the user 'admin' with password:\n"
        f"      {password}\n"
        "  It is shown only this once. Add users with `assistants users add NAME --password PW`.\n"
    )
    print(banner, file=sys.stderr, flush=True)


async def check_login(runtime: Runtime, username: str, password: str) -> str | None:
    """The user's id when the name and password match."""
    await runtime.start()
    return await runtime.accounts.check_password(username, password)


THROTTLE_WINDOW_SECONDS = 15 * 60
"""Failed logins count against a name (and an address) for this long."""
FAILURES_PER_NAME = 5
"""Failed logins for one user name within the window before further tries are refused."""
FAILURES_PER_ADDRESS = 20
"""Failed logins from one client address within the window (any names) before it is refused."""
TOO_MANY_ATTEMPTS_TEXT = "Too many failed sign-ins. Wait a few minutes, then try again."
LOGIN_PAGE_KEY = "too many requests"
"""Chainlit's login page looks its error up among `auth.login.errors` by the response's status
text, lower-cased: for HTTP 429 that is "Too Many Requests"."""


class SignInRefused(Exception):
    """Too many failed sign-ins for the name or the address: try again in `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(TOO_MANY_ATTEMPTS_TEXT)
        self.retry_after = retry_after


class LoginThrottle:
    """Counts failed sign-ins per user name and per client address, in the database, so that every
    server process behind a load balancer counts the same tries.

    A name with `FAILURES_PER_NAME` failures in the last `THROTTLE_WINDOW_SECONDS` (or an address
    with `FAILURES_PER_ADDRESS`) is refused until the oldest of them ages out; a successful sign-in
    clears the name's count. A try is counted before its password is checked, in a transaction
    that first waits for other tries of the same name or address, so tries sent in parallel (to one
    process or several) cannot slip in together. A refused try is not counted.
    """

    def __init__(self, store: Callable[[], Awaitable[SqlStore]], clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def attempt(self, name: str, address: str) -> int:
        """Count a try, or raise `SignInRefused`; returns what `succeeded` needs when it was right."""
        now_ms = int(self._clock() * 1000)
        since_ms = now_ms - THROTTLE_WINDOW_SECONDS * 1000
        limits = {f"name:{name.casefold()}"[:320]: FAILURES_PER_NAME, f"address:{address}"[:320]: FAILURES_PER_ADDRESS}
        store = await self._store()
        # A name or address already at its limit is refused from a plain read: a flood of refused
        # tries neither writes nor queues on the locks below.
        async with store.read() as tx:
            _refuse_if_due(limits, [await tx.recent_login_failures(s, since_ms=since_ms, limit=n, besides=0) for s, n in limits.items()], now_ms)
        async with store.transaction() as tx:
            await tx.take_turns_signing_in(list(limits))
            seqs = await tx.add_login_failures(list(limits), now_ms)
            earlier = [
                await tx.recent_login_failures(subject, since_ms=since_ms, limit=limit, besides=seq)
                for (subject, limit), seq in zip(limits.items(), seqs, strict=True)
            ]
            # Raised inside the transaction: the refused try is rolled back, not counted.
            _refuse_if_due(limits, earlier, now_ms)
            await tx.prune_login_failures(since_ms, list(limits))
        return seqs[-1]

    async def succeeded(self, name: str, token: int) -> None:
        """The try was right: the name's failures are cleared and the try no longer counts."""
        store = await self._store()
        async with store.transaction() as tx:
            await tx.forget_login_failures(subject=f"name:{name.casefold()}"[:320], seq=token)


def _refuse_if_due(limits: dict[str, int], earlier: list[list[int]], now_ms: int) -> None:
    """Raise `SignInRefused` when a subject's earlier tries (newest first) reach its limit."""
    waits = [
        stamps[limit - 1] + THROTTLE_WINDOW_SECONDS * 1000 - now_ms
        for limit, stamps in zip(limits.values(), earlier, strict=True)
        if len(stamps) >= limit
    ]
    if waits:
        raise SignInRefused(max(1, -(-max(waits) // 1000)))


def ensure_login_messages(translations: Path) -> None:
    """Teach the login page our refusal: add it under `auth.login.errors` in each language."""
    for path in sorted(translations.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            errors = data["auth"]["login"]["errors"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(errors, dict) and LOGIN_PAGE_KEY not in errors:
            errors[LOGIN_PAGE_KEY] = TOO_MANY_ATTEMPTS_TEXT
            try:
                path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            except OSError:
                continue  # A read-only deployment: the page shows Chainlit's generic refusal.
