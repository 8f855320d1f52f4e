"""Password login for the chat, against the users in the engine's database, with throttling."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..runtime import Runtime

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
MAX_TRACKED = 100_000
"""Names and addresses counted at most; past it, those without a recent failure are forgotten."""
LOGIN_PAGE_KEY = "too many requests"
"""Chainlit's login page looks its error up among `auth.login.errors` by the response's status
text, lower-cased: for HTTP 429 that is "Too Many Requests"."""


class LoginThrottle:
    """Counts failed logins per user name and per client address, in this process's memory.

    A name with `FAILURES_PER_NAME` failures in the last `THROTTLE_WINDOW_SECONDS` (or an address
    with `FAILURES_PER_ADDRESS`) is refused until the oldest of them ages out; a successful login
    clears the name's count. Each server process counts on its own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._names: dict[str, deque[float]] = {}
        self._addresses: dict[str, deque[float]] = {}

    def retry_after(self, name: str, address: str) -> int | None:
        """Seconds until a try is allowed again, or None when it is allowed now."""
        now = self._clock()
        waits = [
            self._wait(self._names, name.casefold(), FAILURES_PER_NAME, now),
            self._wait(self._addresses, address, FAILURES_PER_ADDRESS, now),
        ]
        longest = max((w for w in waits if w is not None), default=None)
        return None if longest is None else max(1, int(longest + 0.999))

    def attempt(self, name: str, address: str) -> float:
        """Count a try as failed before its password is checked (so parallel tries all count);
        returns its stamp for `succeeded`."""
        now = self._clock()
        if len(self._names) + len(self._addresses) > MAX_TRACKED:
            self._forget_stale(now)
        for table, key in ((self._names, name.casefold()), (self._addresses, address)):
            table.setdefault(key, deque()).append(now)
        return now

    def succeeded(self, name: str, address: str, stamp: float) -> None:
        """The try was right: the name's failures are cleared and the try no longer counts."""
        self._names.pop(name.casefold(), None)
        failures = self._addresses.get(address)
        if failures is not None and stamp in failures:
            failures.remove(stamp)

    def _forget_stale(self, now: float) -> None:
        for table in (self._names, self._addresses):
            for key in [k for k, failures in table.items() if not failures or failures[-1] <= now - THROTTLE_WINDOW_SECONDS]:
                del table[key]

    @staticmethod
    def _wait(table: dict[str, deque[float]], key: str, limit: int, now: float) -> float | None:
        failures = table.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - THROTTLE_WINDOW_SECONDS:
            failures.popleft()
        if not failures:
            del table[key]
            return None
        if len(failures) < limit:
            return None
        return failures[-limit] + THROTTLE_WINDOW_SECONDS - now


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
