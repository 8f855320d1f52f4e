"""OpenAI-style identifiers and Unix-second timestamps."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

PREFIXES = {
    "assistant": "asst_",
    "thread": "thread_",
    "message": "msg_",
    "run": "run_",
    "step": "step_",
    "call": "call_",
    "file": "file-",
    "user": "user_",
    "key": "key_",
    "vector_store": "vs_",
    "file_batch": "vsfb_",
}


def new_id(kind: str) -> str:
    """A fresh id such as `asst_3kT...`: the kind's prefix and 24 random base-62 characters."""
    return PREFIXES[kind] + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def now() -> int:
    """The current time in Unix seconds, the unit every Assistants timestamp uses."""
    return int(time.time())
