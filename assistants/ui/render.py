"""How engine objects look in the chat, shared by live streaming and by resume.

Live runs and restored sessions go through the same functions, so a reloaded session shows what
the user saw while it streamed. Nothing here imports Chainlit: it only builds text and the plain
step/element dictionaries Chainlit's data layer returns.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from markdown_it import MarkdownIt

from ..tools.code_interpreter import produced_files, saved_files
from ..types import Message, MessageStatus, Run, RunStatus, RunStep, Session, TextContent
from ..types.objects import (
    CodeImageOutput,
    CodeInterpreterToolCall,
    CodeLogsOutput,
    FileSearchToolCall,
    ImageFileContent,
    MessageCreationDetails,
    ToolCallsDetails,
)

MODE_LABELS = {"full": "full", "last_n": "last-N", "one_off": "one-off", "summary": "summary"}

FILE_ROUTE = "/assistants/files"
"""Where the chat downloads stored files (authenticated by the chat's session cookie)."""
CITATION_ROUTE = "/assistants/citations"
"""Where the chat reads the passage an answer's `[n]` marker cites (`/{message_id}/{n}`)."""

IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".gif", ".webp")


def iso(seconds: int | None, offset_ms: int = 0) -> str:
    """Chainlit's timestamp format; `offset_ms` keeps same-second steps in their true order."""
    stamp = datetime.fromtimestamp(seconds or 0, tz=UTC).timestamp() + offset_ms / 1000
    return datetime.fromtimestamp(stamp, tz=UTC).isoformat().replace("+00:00", "Z")


def tokens_label(count: int) -> str:
    return f"{count / 1000:.1f}k" if count >= 1000 else str(count)


def context_label(run: Run) -> str:
    """The quiet line under a reply: what the run sent, e.g. `context: 8 messages · 2.1k tokens · last-N`."""
    if run.context is None:
        return f"{run.model} · {run.status.value}"
    mode = MODE_LABELS.get(run.context.mode, run.context.mode.replace("truncation:", ""))
    parts = [
        f"context: {run.context.messages} message{'s' if run.context.messages != 1 else ''}",
        f"{tokens_label(run.context.prompt_tokens)} tokens",
        mode,
    ]
    if run.context.summary_used:
        parts.append("with summary")
    return " · ".join(parts)


def run_summary(run: Run) -> str:
    """The collapsed run summary: model, status, duration, tokens, and what was left out."""
    lines = [f"**Model** {run.model}", f"**Status** {run.status.value}"]
    end = run.completed_at or run.failed_at or run.cancelled_at
    if run.started_at and end:
        lines.append(f"**Duration** {max(end - run.started_at, 0)} s")
    if run.usage is not None:
        lines.append(
            f"**Tokens** {run.usage.prompt_tokens} prompt + {run.usage.completion_tokens} completion"
            f" = {run.usage.total_tokens}"
        )
    if run.context is not None and run.context.truncated:
        lines.append(f"**Left out** {run.context.truncated} older messages")
    if run.last_error is not None:
        lines.append(f"**Error** {run.last_error.message}")
    return "  \n".join(lines)


def linked_text(message: Message) -> str:
    """The message's text as the chat shows it, its annotations turned into links.

    `sandbox:/mnt/data/...` links (`file_path`) point at the chat's file route; each citation
    marker (`file_citation`, e.g. `[1]`) links to the passage it cites, which the chat opens in a
    side panel (`public/citations.js`).
    """
    parts: list[str] = []
    for part in message.content:
        if not isinstance(part, TextContent):
            continue
        value = part.text.value
        # Replace from the end so earlier indexes stay valid.
        for note in sorted(part.text.annotations, key=lambda a: -int(a.get("start_index", 0))):
            start, end = int(note["start_index"]), int(note["end_index"])
            if note.get("type") == "file_path":
                value = value[:start] + f"{FILE_ROUTE}/{note['file_path']['file_id']}" + value[end:]
            elif note.get("type") == "file_citation" and value[start:end] == note.get("text"):
                number = value[start + 1 : end - 1]
                value = value[:start] + f"[\\[{number}\\]]({CITATION_ROUTE}/{message.id}/{number})" + value[end:]
        parts.append(value)
    return "".join(parts)


def tool_input(arguments: str) -> str:
    """Arguments pretty-printed when they are JSON, verbatim when the model wrote something else."""
    try:
        return json.dumps(json.loads(arguments or "{}"), indent=2, ensure_ascii=False)
    except json.JSONDecodeError:
        return arguments


INCOMPLETE_NOTES = {
    "run_cancelled": "\n\n*— stopped*",
    "run_failed": "\n\n*— interrupted by an error*",
    "run_expired": "\n\n*— expired*",
    "max_tokens": "\n\n*— cut off at the token limit*",
}


def incomplete_note(reason: str | None) -> str:
    """The marker under an answer that did not finish, saying why."""
    return INCOMPLETE_NOTES.get(reason or "", "\n\n*— incomplete*")


def stopped_note(message: Message) -> str:
    """The marker for a stored answer, or "" when it finished."""
    if message.status is not MessageStatus.incomplete or message.incomplete_details is None:
        return ""
    return incomplete_note(message.incomplete_details.reason)


def failure_text(run: Run) -> str:
    """What the chat says when a run ends without an answer."""
    if run.last_error is not None:
        return f"⚠️ {run.last_error.message}"
    if run.incomplete_details is not None:
        return f"⚠️ The answer was cut short: the run reached its {run.incomplete_details.reason.replace('_', ' ')} budget."
    if run.status.value == "expired":
        return "⚠️ The run waited too long for tool outputs and expired."
    return ""


def file_element(file_id: str, filename: str, thread_ui_id: str, for_id: str, size: int | None = None) -> dict[str, Any]:
    """An element dictionary for a stored file, downloadable through the chat's file route."""
    is_image = filename.lower().endswith(IMAGE_TYPES)
    return {
        "id": file_id,
        "threadId": thread_ui_id,
        "type": "image" if is_image else "file",
        "name": filename,
        "url": f"{FILE_ROUTE}/{file_id}",
        "display": "inline",
        "size": "medium" if is_image else None,
        "forId": for_id,
        "mime": None,
        "chainlitKey": None,
        "path": None,
        "objectKey": None,
        "language": None,
        "page": None,
        "props": {"bytes": size} if size is not None else {},
        "autoPlay": None,
        "playerConfig": None,
    }


CODE_STEP_NAME = "Python"
"""How code-interpreter calls are titled in the chat."""

SEARCH_STEP_NAME = "File search"
"""How file-search calls are titled in the chat."""
PASSAGE_CHARS = 400
"""How much of each passage the chat shows under a search."""


def search_results(call: FileSearchToolCall) -> str:
    """The results as the chat lists them: citation marker, file, score, the start of the passage."""
    results = call.file_search.results
    if not results:
        return "No passages matched."
    lines = []
    for position, result in enumerate(results):
        passage = " ".join("".join(p.text for p in result.content or []).split())
        if len(passage) > PASSAGE_CHARS:
            passage = passage[:PASSAGE_CHARS].rsplit(" ", 1)[0] + " …"
        lines.append(f"**{call.file_search.marker(position)} {result.file_name}** · score {result.score:.2f}\n> {passage}")
    return "\n\n".join(lines)


CODE_ERROR_MARKERS = ("Traceback (most recent call last)", "Error: ", "Limit: ")


def code_logs(call: CodeInterpreterToolCall) -> str:
    """Everything the code printed, errors and limit notes included, as one text."""
    return "".join(o.logs for o in call.code_interpreter.outputs if isinstance(o, CodeLogsOutput))


def code_failed(logs: str) -> bool:
    """Whether a code call ended in an error or hit a limit (shown as a failed step)."""
    return any(marker in logs for marker in CODE_ERROR_MARKERS)


def code_images(call: CodeInterpreterToolCall) -> list[str]:
    """File ids of the images a code call showed, in order."""
    return [o.image.file_id for o in call.code_interpreter.outputs if isinstance(o, CodeImageOutput)]


def code_written(call: CodeInterpreterToolCall) -> list[tuple[str, str]]:
    """`(file_id, name)` of the files a code call wrote to /mnt/data."""
    return [(file_id, name) for name, file_id in saved_files(code_logs(call))]


code_files = produced_files
"""Every file id a code call produced: images, then written files."""


def search_output(call: FileSearchToolCall, status: str, error: str | None = None) -> str:
    """A search step's output: its results once it completed, else why there are none."""
    return search_results(call) if status == "completed" else no_output(status, error)


def no_output(status: str, error: str | None = None) -> str:
    """What a tool step shows when its call has no output, by the step's status (a failed step's
    own error when it has one)."""
    if status == "in_progress":
        return "(waiting for output)"
    if status == "failed" and error:
        return f"⚠️ {error}"
    return "(stopped)" if status == "cancelled" else "(no output)"


def step_error(step: RunStep) -> str | None:
    """A stored step's error message, if it failed with one."""
    return step.last_error.message if step.last_error else None


def _step(step_id: str, thread_ui_id: str, kind: str, name: str, created: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": step_id,
        "threadId": thread_ui_id,
        "parentId": None,
        "type": kind,
        "name": name,
        "input": "",
        "output": "",
        "createdAt": created,
        "start": created,
        "end": created,
        "streaming": False,
        "waitForAnswer": False,
        "isError": False,
        "metadata": {},
        "tags": None,
        "showInput": False,
        "language": None,
        "defaultOpen": False,
        "autoCollapse": False,
        "feedback": None,
    }
    base.update(fields)
    return base


def history_steps(
    session: Session,
    thread_ui_id: str,
    user_name: str,
    assistant_name: str,
    messages: list[Message],
    runs: list[Run],
    steps: list[RunStep],
    file_names: dict[str, tuple[str, int]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A session as the chat shows it: (steps, elements), in the order the user saw them."""
    by_message = {m.id: m for m in messages}
    runs_by_id = {r.id: r for r in runs}
    steps_by_run: dict[str, list[RunStep]] = {}
    for step in steps:
        steps_by_run.setdefault(step.run_id, []).append(step)
    out: list[dict[str, Any]] = []
    elements: list[dict[str, Any]] = []
    tick = 0

    def stamp(seconds: int | None) -> str:
        nonlocal tick
        tick += 1
        return iso(seconds, tick)

    def add_message(message: Message) -> None:
        kind = "user_message" if message.role == "user" else "assistant_message"
        name = user_name if message.role == "user" else assistant_name
        feedback = None
        if "feedback" in message.metadata:
            feedback = {
                "id": message.id,
                "forId": message.id,
                "threadId": thread_ui_id,
                "value": int(message.metadata["feedback"]),
                "comment": message.metadata.get("feedback_comment"),
            }
        out.append(
            _step(message.id, thread_ui_id, kind, name, stamp(message.created_at), output=linked_text(message) + stopped_note(message), feedback=feedback)
        )
        for attachment in message.attachments or []:
            if attachment.file_id in file_names:
                filename, size = file_names[attachment.file_id]
                elements.append(file_element(attachment.file_id, filename, thread_ui_id, message.id, size))
        for part in message.content:
            if isinstance(part, ImageFileContent) and part.image_file.file_id in file_names and not any(
                a.file_id == part.image_file.file_id for a in message.attachments or []
            ):
                filename, size = file_names[part.image_file.file_id]
                elements.append(file_element(part.image_file.file_id, filename, thread_ui_id, message.id, size))

    def add_run(run: Run) -> None:
        for step in steps_by_run.get(run.id, []):
            details = step.step_details
            if isinstance(details, MessageCreationDetails):
                message = by_message.get(details.message_creation.message_id)
                if message is not None and (message.text or message.status is MessageStatus.incomplete):
                    add_message(message)
            elif isinstance(details, ToolCallsDetails):
                for call in details.tool_calls:
                    if isinstance(call, FileSearchToolCall):
                        out.append(
                            _step(
                                f"{step.id}-{call.id}",
                                thread_ui_id,
                                "tool",
                                SEARCH_STEP_NAME,
                                stamp(step.created_at),
                                input=call.file_search.query,
                                output=search_output(call, step.status.value, step_error(step)),
                                showInput="text",
                                language=None,
                                isError=step.status.value == "failed",
                            )
                        )
                        continue
                    if isinstance(call, CodeInterpreterToolCall):
                        ui_id = f"{step.id}-{call.id}"
                        logs = code_logs(call)
                        out.append(
                            _step(
                                ui_id,
                                thread_ui_id,
                                "tool",
                                CODE_STEP_NAME,
                                stamp(step.created_at),
                                input=call.code_interpreter.input,
                                output=logs or no_output(step.status.value, step_error(step)),
                                showInput="python",
                                language="text",
                                isError=step.status.value == "failed" or code_failed(logs),
                            )
                        )
                        for file_id in code_files(call):
                            if file_id in file_names:
                                filename, size = file_names[file_id]
                                elements.append(file_element(file_id, filename, thread_ui_id, ui_id, size))
                        continue
                    failed = step.status.value == "failed" or (call.function.output or "").startswith("Error:")
                    if call.function.output is not None:
                        output = call.function.output
                    else:
                        output = no_output(step.status.value, step_error(step))
                    out.append(
                        _step(
                            # Some providers number calls per response (`call_0`...): keep steps apart.
                            f"{step.id}-{call.id}",
                            thread_ui_id,
                            "tool",
                            call.function.name,
                            stamp(step.created_at),
                            input=tool_input(call.function.arguments),
                            output=output,
                            showInput="json",
                            language="json",
                            isError=failed,
                        )
                    )
        text = failure_text(run)
        if text:
            out.append(_step(f"{run.id}-error", thread_ui_id, "assistant_message", "System", stamp(run.created_at), output=text))
        out.append(
            _step(f"{run.id}-summary", thread_ui_id, "run", context_label(run), stamp(run.created_at), output=run_summary(run))
        )

    # Each run is shown right after the message that was newest when it started.
    runs_after: dict[str | None, list[Run]] = {}
    for run in runs:
        runs_after.setdefault(run.after_message_id, []).append(run)
    for run in runs_after.pop(None, []):
        add_run(run)
    for message in messages:
        if message.run_id is None or message.run_id not in runs_by_id:
            add_message(message)
        for run in runs_after.pop(message.id, []):
            add_run(run)
    # Runs placed after a message that has since been deleted go last, in order.
    for leftover in runs_after.values():
        for run in leftover:
            add_run(run)
    return out, elements


TRANSCRIPT_ROUTE = "/assistants/transcripts"
"""`{TRANSCRIPT_ROUTE}/{thread ui id}`: a whole session as one page, for turns the chat leaves out."""


def _just_before(created: str) -> str:
    """A timestamp in `iso`'s format one millisecond before `created` (also one of `iso`'s)."""
    moment = datetime.fromisoformat(created.replace("Z", "+00:00")) - timedelta(milliseconds=1)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def earlier_note_id(thread_ui_id: str) -> str:
    """The id of the note `latest_turns` puts above a shortened session."""
    return f"{thread_ui_id}-earlier"


def latest_turns(
    steps: list[dict[str, Any]],
    elements: list[dict[str, Any]],
    turns: int,
    thread_ui_id: str,
    total: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The newest `turns` turns of a rendered session (0: all), after a note that says how many are
    left out and links the whole conversation on one page.

    A long session reopens at once in the browser only if it shows a part of itself: Chainlit's page
    renders every step it is given (about 5 ms each). A turn starts at a user message; the model
    still reads the whole thread, only the screen is shortened. The note's metadata carries
    `turns_shown` and `turns_total`, for the chat's "show earlier turns" buttons. `steps` may
    already be the tail of the session (read that way from the store); `total` is then how many
    turns the session holds.
    """
    starts = [i for i, step in enumerate(steps) if step["type"] == "user_message" and step["parentId"] is None]
    total = max(total or 0, len(starts))
    if turns <= 0 or total <= turns or not starts:
        return steps, elements
    first = starts[-turns] if len(starts) >= turns else starts[0]
    kept = steps[first:]
    ids = {step["id"] for step in kept}
    shown = min(turns, len(starts))
    link = f"{TRANSCRIPT_ROUTE}/{thread_ui_id}"
    note = _step(
        earlier_note_id(thread_ui_id),
        thread_ui_id,
        "assistant_message",
        "Earlier turns",
        _just_before(kept[0]["createdAt"]),
        output=f"Showing the latest {shown} of {total} turns. [Read the whole conversation]({link}) on one page.",
        metadata={"turns_shown": shown, "turns_total": total},
    )
    return [note, *kept], [element for element in elements if element.get("forId") in ids]


EARLIER_TURNS_STEP = 10
"""How many more turns the first "show earlier turns" button adds to a reopened session's screen."""
ALL_TURNS_AT_ONCE = 100
"""Sessions up to this many turns offer "Show all"; longer ones 50 more at a time (and the page
with the whole conversation): Chainlit's page takes tens of milliseconds per turn to draw, so all
500 turns of a long session would freeze the browser for 10-25 seconds."""


def earlier_turn_choices(shown: int, total: int) -> list[tuple[str, int]]:
    """(label, turns to show) for the buttons above a session showing its latest `shown` of
    `total` turns; 0 turns means all of them."""
    left = total - shown
    if left <= 0:
        return []
    more = min(EARLIER_TURNS_STEP, left)
    choices = [(f"Show {more} earlier turn{'s' if more > 1 else ''}", shown + more)]
    if more < left:
        if total <= ALL_TURNS_AT_ONCE:
            choices.append((f"Show all {total} turns", 0))
        else:
            many = min(5 * EARLIER_TURNS_STEP, left)
            choices.append((f"Show {many} earlier turns", shown + many))
    return choices


def pending_calls(run: Run) -> str:
    """The client-side tool calls a run waits for, as a markdown list."""
    calls = run.required_action.submit_tool_outputs.tool_calls if run.required_action else []
    return "\n".join(f"- `{c.function.name}({c.function.arguments})`" for c in calls)


def active_run_note(thread_ui_id: str, after: str, run: Run) -> dict[str, Any]:
    """A note at the end of a session reopened while one of its runs is still going: writing its
    answer, or waiting for tool outputs only a client application can give."""
    if run.status is RunStatus.requires_action and run.required_action is not None:
        text = (
            "The assistant is waiting for tools that only a client application can run:\n"
            f"{pending_calls(run)}\n\nSend a message to end that run and go on, or answer the calls through the "
            "`/v1` API with `submit_tool_outputs`."
        )
    else:
        text = (
            "An answer is still being written in this conversation. Reopen it in a moment to see the "
            "whole answer; a message you send now waits until it is done."
        )
    return _step(f"{thread_ui_id}-active-run", thread_ui_id, "assistant_message", "System", after, output=text)


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
"""Markdown for the transcript page: raw HTML in a message is shown as text, never as markup, and
links are checked (no `javascript:` and the like)."""


def transcript_page(title: str, steps: list[dict[str, Any]], elements: list[dict[str, Any]]) -> str:
    """A rendered session as one plain page: every message (its markdown rendered, its images
    shown and its files linked), and each tool step folded under it."""
    parts = [
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem}"
        ".m{margin:0 0 1.2rem}.who{font-weight:600;margin-top:1.2rem}.m img{max-width:100%}"
        "details{margin:.2rem 0 .6rem 1rem;color:#444}pre{white-space:pre-wrap;background:#f5f5f5;padding:.5rem}"
        "</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    attached: dict[str, list[dict[str, Any]]] = {}
    for element in elements:
        attached.setdefault(str(element.get("forId")), []).append(element)
    for step in steps:
        shown = "".join(
            f"<p><img src='{html.escape(e['url'])}' alt='{html.escape(e['name'])}'></p>"
            if e["type"] == "image"
            else f"<p><a href='{html.escape(e['url'])}' download='{html.escape(e['name'])}'>{html.escape(e['name'])}</a></p>"
            for e in attached.get(step["id"], [])
        )
        if step["type"] in ("user_message", "assistant_message") and step["parentId"] is None:
            parts.append(
                f"<p class=who>{html.escape(step['name'])}</p><div class=m>{_MARKDOWN.render(step['output'])}{shown}</div>"
            )
        else:
            parts.append(
                f"<details><summary>{html.escape(step['name'])}</summary>"
                + (f"<pre>{html.escape(step['input'])}</pre>" if step["input"] else "")
                # A run's summary is markdown; a tool's input and output are code, JSON or logs.
                + (_MARKDOWN.render(step["output"]) if step["type"] == "run" else f"<pre>{html.escape(step['output'])}</pre>" if step["output"] else "")
                + shown
                + "</details>"
            )
    return "".join(parts)
