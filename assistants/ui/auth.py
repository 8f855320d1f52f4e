"""Password login for the chat, against the users in the engine's database."""

from __future__ import annotations

import os
import secrets
import sys
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
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
