"""Phase 1 of a run: decide what the model reads.

The thread's history is turned into Chat Completions messages according to the session's context
mode (or the run's `truncation_strategy` for plain threads):

- `full`: newest messages first until the token budget is spent, so the oldest fall away;
- `last_n`: the last N messages (`truncation_strategy: last_messages`);
- `one_off`: only the newest user message;
- `summary`: a rolling summary of older turns, refreshed when turns leave the verbatim window,
  then the last N messages verbatim.

Messages of the current run (assistant text, tool calls and their outputs) form the `tail`; it is
kept whole so a tool call is never separated from its result. Every run records what it sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import AssistantsError
from ..store import StoreTx
from ..tokens import REPLY_PRIMING, count_message, count_messages, count_tools
from ..types import (
    ContextMode,
    ContextRecord,
    Message,
    Run,
    Session,
    Thread,
)
from ..types.session import session_of
from ._history import HISTORY_BATCH, HistoryMemory, history_within, is_history, to_chat_message

SUMMARY_MAX_NEW = 200
"""Most messages folded into the summary at once."""

SUMMARY_SYSTEM = (
    "You maintain a running summary of a conversation between a user and an assistant. "
    "Merge the previous summary with the new messages into one concise summary that keeps names, "
    "numbers, decisions, open questions and the user's preferences, in at most 70 words. "
    "Reply with the summary only."
)


class PromptBudgetExceeded(AssistantsError):
    """Even the smallest context does not fit in what `max_prompt_tokens` leaves."""


@dataclass
class PreparedContext:
    messages: list[dict[str, Any]]
    record: ContextRecord
    summary: SummaryUpdate | None = None
    """A rolling summary brought up to date for this request, to store (`save_summary`)."""


@dataclass(frozen=True)
class SummaryUpdate:
    """The session's rolling summary, now covering every message up to `upto` (a message id)."""

    session_id: str
    text: str
    upto: str


async def save_summary(tx: StoreTx, update: SummaryUpdate) -> None:
    """Store an updated rolling summary on the session as it is now: only the summary changes, so
    a rename or a settings change made while the summary was written is kept."""
    current = session_of(await tx.get(Thread, update.session_id, owner=None))
    if current is not None:
        await tx.save(current.with_updates(summary=update.text, summary_upto=update.upto))


async def build_context(
    tx: StoreTx,
    *,
    run: Run,
    thread: Thread,
    tail: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    window: int,
    prompt_budget: int | None,
    summarize: Any,
    read_file: Any,
    memory: HistoryMemory | None = None,
) -> PreparedContext:
    """The messages for the next model request, and the record of what they hold.

    It only reads: run it on `store.read()`. In `summary` mode it may ask the model to bring the
    session's rolling summary up to date, which takes seconds; that summary comes back in
    `PreparedContext.summary`, for the caller to store (`save_summary`) in a short transaction
    of its own, so no transaction (on SQLite, no turn at the database) waits for the model.
    `memory` remembers what `full` context sent, so the thread's next run reads only what is new."""
    system: list[dict[str, Any]] = [{"role": "system", "content": run.instructions}] if run.instructions else []
    fixed = count_messages(system + tail) + count_tools(tools)
    budget = window - fixed
    if prompt_budget is not None:
        budget = min(budget, prompt_budget - fixed)
    if budget <= 0:
        raise PromptBudgetExceeded("The instructions, tools and this run's tool results use the whole prompt budget.")

    session = session_of(thread)
    strategy = run.truncation_strategy
    mode = session.context_mode.value if session else f"truncation:{strategy.type}"
    summary_used = False
    summary_update: SummaryUpdate | None = None
    costs: list[int] | None = None

    if session is not None and session.context_mode is ContextMode.one_off:
        history = await _newest_user_message(tx, thread.id, run.id, read_file)
        left_out = await tx.count_messages(thread.id) - len(history)
    elif session is not None and session.context_mode is ContextMode.summary:
        history, left_out, summary_text, summary_update = await _summary_context(tx, session, run, summarize, read_file)
        if summary_text:
            summary_used = True
            note = {"role": "system", "content": f"Summary of the earlier conversation:\n{summary_text}"}
            system = [*system, note]
            # The summary is part of the prompt: verbatim turns make room for it.
            budget -= count_message(note)
    elif strategy.type == "last_messages" and strategy.last_messages:
        kept = await _last_messages(tx, thread.id, run.id, strategy.last_messages)
        history = [await to_chat_message(m, read_file) for m in kept]
        left_out = await tx.count_messages(thread.id) - len(history)
    else:
        history, costs, left_out = await history_within(tx, thread.id, run.id, budget, read_file, memory)
    if costs is None:
        costs = [count_message(m) for m in history]

    # Whatever the mode chose must still fit the window and the prompt budget: trim oldest first.
    # Each message is counted once; count_messages(h) == sum(costs) + REPLY_PRIMING.
    history_tokens = sum(costs)
    first = 0
    while len(history) - first > 1 and history_tokens + REPLY_PRIMING > budget:
        history_tokens -= costs[first]
        first += 1
        left_out += 1
    if first:
        history = history[first:]
    messages = system + history + tail
    prompt_tokens = count_messages(system + tail) + history_tokens + count_tools(tools)
    if prompt_budget is not None and prompt_tokens > prompt_budget:
        raise PromptBudgetExceeded(f"The smallest possible prompt needs {prompt_tokens} tokens.")
    record = ContextRecord(
        mode=mode,
        messages=len(history),
        prompt_tokens=prompt_tokens,
        summary_used=summary_used,
        truncated=max(left_out, 0),
    )
    return PreparedContext(messages=messages, record=record, summary=summary_update)


async def _last_messages(tx: StoreTx, thread_id: str, run_id: str, count: int) -> list[Message]:
    """The thread's last `count` messages before this run's own (oldest first).

    The run's messages (text written before its tool calls) are newest, and there may be one per
    tool round, so pages are read until `count` earlier messages are found.
    """
    kept: list[Message] = []
    before_seq: int | None = None
    while len(kept) < count:
        limit = min(HISTORY_BATCH, count - len(kept) + 1)
        rows = await tx.messages_page_desc(thread_id, limit=limit, before_seq=before_seq)
        kept.extend(m for _, m in rows if is_history(m, run_id))
        if len(rows) < limit:
            break
        before_seq = rows[-1][0]
    kept = kept[:count]
    kept.reverse()
    return kept


async def _newest_user_message(tx: StoreTx, thread_id: str, run_id: str, read_file: Any) -> list[dict[str, Any]]:
    # Small pages first: the newest user message is almost always among the last few.
    before_seq: int | None = None
    limit = 8
    while True:
        rows = await tx.messages_page_desc(thread_id, limit=limit, before_seq=before_seq)
        for _, message in rows:
            if message.role == "user" and is_history(message, run_id):
                return [await to_chat_message(message, read_file)]
        if len(rows) < limit:
            return []
        before_seq = rows[-1][0]
        limit = HISTORY_BATCH


async def _summary_context(
    tx: StoreTx, session: Session, run: Run, summarize: Any, read_file: Any
) -> tuple[list[dict[str, Any]], int, str | None, SummaryUpdate | None]:
    """Recent turns verbatim, and the rolling summary brought up to date with the turns before them
    (returned as an update to store when it changed)."""
    # The summary state is read afresh: an earlier round of this run (or another run) may have
    # moved it on since the run loaded its thread.
    current = session_of(await tx.get(Thread, session.id, owner=None))
    if current is not None:
        session = current
    keep = session.context_n

    def split(rows: list[tuple[int, Message]]) -> tuple[list[Message], list[Message]]:
        ordered = [m for _, m in reversed(rows) if is_history(m, run.id)]
        recent = ordered[-keep:] if keep else []
        return recent, ordered[: len(ordered) - len(recent)]

    # Usually the summary already covers everything before the verbatim turns, and checking that
    # needs only the message just before them: read a small page, and the large one only if needed.
    small = keep + 5
    rows = await tx.messages_page_desc(session.id, limit=small, before_seq=None)
    recent, older = split(rows)
    if len(rows) == small and not (older and session.summary_upto == older[-1].id):
        rows = await tx.messages_page_desc(session.id, limit=keep + SUMMARY_MAX_NEW, before_seq=None)
        recent, older = split(rows)
    summary = session.summary
    update: SummaryUpdate | None = None
    if older and session.summary_upto != older[-1].id:
        ids = [m.id for m in older]
        start = ids.index(session.summary_upto) + 1 if session.summary_upto in ids else 0
        fresh = older[start:]
        transcript = "\n".join(f"{m.role}: {m.text}" for m in fresh)
        prompt = f"Previous summary:\n{summary or '(none)'}\n\nNew messages:\n{transcript}"
        summary = (await summarize([{"role": "system", "content": SUMMARY_SYSTEM}, {"role": "user", "content": prompt}])).strip()
        summary = summary[:500]
        update = SummaryUpdate(session_id=session.id, text=summary, upto=older[-1].id)
    history = [await to_chat_message(m, read_file) for m in recent]
    left_out = await tx.count_messages(session.id) - len(history)
    return history, left_out, summary, update
