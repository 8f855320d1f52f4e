"""The chat in a real browser: resuming a long session, and socket events while an answer streams.

Resume. A session of 1,000 messages (500 turns) is written straight into the store of a real data
folder: a user (`Runtime.accounts.add_user`), the default profile's assistant
(`profiles.ensure_assistant`), a session tied to a chat UI thread id (`Sessions.create(...,
ui_thread=...)`), then, in one transaction, for each turn a user message, a completed run placed
after it (usage and context record), a `tool_calls` step (a `calculate` call with its output),
the answer, and a `message_creation` step pointing at the answer. That is 2,000 rendered steps
(question, tool call, answer, run summary per turn). Then:

- in-process: `EngineDataLayer.get_thread(ui_id)`, the call Chainlit makes to show a session,
  timed on its own and split into reading the latest turns (`thread_tail`: SQL and pydantic
  validation), rendering and JSON encoding;
- HTTP: the real server (`chainlit run app.py`, started by `tests/server.py` on that data folder)
  answering `GET /project/thread/{ui_id}` (Chainlit's route that returns a thread for resume)
  with the login cookie;
- browser: headless Chromium (Playwright) logged in through the login form, opening
  `/thread/<ui_id>` (a full page load), and also clicking the session in the sidebar (in-app
  navigation); the time until the LAST answer's text is visible, and when the thread itself
  reached the page (Chainlit's frontend resumes over the socket: a `resume_thread` event, not
  `GET /project/thread/{id}`). A 2-message session, loaded the same way, is the baseline.

Streaming. The scripted model (in-process `ScriptedModel`) streams a 2,000-word answer in 2,000
chunks with a small delay (about 4 s in all); the browser sends a message and counts the
socket.io frames it receives (`page.on("websocket")` / `framereceived`): all of them, and those
for the streamed answer (`stream_start`, `stream_token`, `update_message`, `new_message` with its
id), giving events per second per message, on average and in the busiest 1-second window. The
frames' times are the browser's own arrival timestamps (CDP `Network.webSocketFrameReceived`),
so a busy benchmark process does not bunch them up.

Prints Markdown; asserts nothing. Usage::

    .venv/bin/python bench/chat_resume_stream.py            # full run
    .venv/bin/python bench/chat_resume_stream.py --quick    # a smoke run (fewer repeats)

Needs Chromium (`/usr/bin/chromium`, or `chromium` on PATH) and the `playwright` package.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from assistants.config import Settings  # noqa: E402
from assistants.ids import new_id, now  # noqa: E402
from assistants.profiles import default_profile, ensure_assistant, load_profiles  # noqa: E402
from assistants.runtime import Runtime  # noqa: E402
from assistants.sessions import Sessions  # noqa: E402
from assistants.types import (  # noqa: E402
    Assistant,
    ContextRecord,
    FunctionToolCall,
    Message,
    Run,
    RunStatus,
    RunStep,
    StepStatus,
    TextContent,
    TextValue,
    Usage,
)
from assistants.types.objects import (  # noqa: E402
    MessageCreation,
    MessageCreationDetails,
    StepFunction,
    ToolCallsDetails,
)
from bench._common import NoModel, cpu_seconds, machine, percentile  # noqa: E402
from tests.scripted_model import ScriptedModel  # noqa: E402
from tests.server import Server, start_server  # noqa: E402

MODEL = "scripted-model"  # what tests/server.py sets as ASSISTANTS_MODEL
USER = "bench"
PASSWORD = "bench-password"
TITLE = "Bench: a long session"
SHORT_TITLE = "Bench: a short session"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
MESSAGE_EVENTS = ("stream_start", "stream_token", "update_message", "new_message")
SERVER_TARGET_S = 1.0
BROWSER_TARGET_S = 2.0
EVENTS_TARGET = 25.0
WORDS = (
    "the a of to and in that it is was for on are with as be at by this have from or one had "
    "word but what some we can out other were all there when up use your how said an each she "
    "which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people my "
    "over know water than call first who may down side been now find any new work part take get "
    "place made live where after back little only round man year came show every good me give"
)
VOCABULARY = WORDS.split(" ")


# Helpers -----------------------------------------------------------------------------------------




def ms(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value * 1000:,.0f}" if value >= 0.1 else f"{value * 1000:.1f}"




def load() -> str:
    with suppress(OSError):
        one, five, _ = os.getloadavg()
        return f"{one:.2f} / {five:.2f}"
    return "n/a"




def wait_idle(pid: int, *, quiet: float = 0.01, step: float = 0.25, limit: float = 15.0) -> float:
    """Wait until a process uses less than `quiet` CPU seconds in `step` seconds; returns its CPU then."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(step)
        current = cpu_seconds(pid)
        if current - last < quiet:
            return current
        last = current
    return last


def own_children() -> set[int]:
    """Pids of this process's direct children (Linux), to stop a server left half-started."""
    pids: set[int] = set()
    with suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with suppress(OSError), open(f"/proc/self/task/{task}/children") as fh:
                pids.update(int(p) for p in fh.read().split())
    return pids


def stop_pid(pid: int) -> None:
    with suppress(ProcessLookupError, ChildProcessError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(VOCABULARY) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def marker(turn: int) -> str:
    """The unique opening of answer number `turn` (1-based): what the browser waits for."""
    return f"Answer {turn:04d}:"


def prepare_app_root(tmp: Path) -> None:
    """Give Chainlit its app root before it is imported here: importing it writes a default
    `.chainlit/config.toml` and `.files/` into that folder (the project folder otherwise)."""
    app_root = tmp / "app"
    (app_root / ".chainlit").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ".chainlit" / "config.toml", app_root / ".chainlit" / "config.toml")
    shutil.copy(ROOT / "chainlit.md", app_root / "chainlit.md")
    os.environ["CHAINLIT_APP_ROOT"] = str(app_root)


# Building the session ----------------------------------------------------------------------------




@dataclass
class Built:
    ui_id: str
    session_id: str
    turns: int
    seconds: float


async def build_session(runtime: Runtime, owner: str, assistant: Assistant, turns: int, answer_words: int,
                        title: str) -> Built:
    """A session of `turns` question/answer turns, each answer with its run and steps, in one transaction."""
    began = time.perf_counter()
    engine = runtime.engine
    ui_id = str(uuid.uuid4())
    session = await Sessions(engine).create(owner, assistant.id, title=title, ui_thread=ui_id)
    rng = random.Random(1234)
    base = now() - turns * 60
    prompt_tokens = 400
    async with engine.store.transaction() as tx:
        for turn in range(1, turns + 1):
            stamp = base + turn * 60
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            question = Message(
                id=new_id("message"), created_at=stamp, completed_at=stamp, thread_id=session.id, role="user",
                content=[TextContent(text=TextValue(value=f"Question {turn:04d}: what is {a} times {b}? {sentence(rng, 20)}"))],
                attachments=[],
            )
            await tx.insert(question, owner=owner)
            completion = answer_words + 30
            run = Run(
                id=new_id("run"), created_at=stamp + 1, thread_id=session.id, assistant_id=assistant.id,
                status=RunStatus.completed, started_at=stamp + 1, completed_at=stamp + 4, expires_at=stamp + 601,
                model=assistant.model, instructions=assistant.instructions or "", tools=assistant.tools,
                temperature=assistant.temperature,
                usage=Usage(prompt_tokens=2 * prompt_tokens + 40, completion_tokens=completion,
                            total_tokens=2 * prompt_tokens + 40 + completion),
                context=ContextRecord(mode="full", messages=2 * turn - 1, prompt_tokens=prompt_tokens),
                after_message_id=question.id,
            )
            await tx.insert(run, owner=owner)
            call = FunctionToolCall(
                id=new_id("call"),
                function=StepFunction(name="calculate", arguments=json.dumps({"expression": f"{a} * {b}"}), output=str(a * b)),
            )
            await tx.insert(RunStep(
                id=new_id("step"), created_at=stamp + 2, assistant_id=assistant.id, thread_id=session.id, run_id=run.id,
                type="tool_calls", status=StepStatus.completed, step_details=ToolCallsDetails(tool_calls=[call]),
                completed_at=stamp + 2, usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=20, total_tokens=prompt_tokens + 20),
            ), owner=owner)
            answer = Message(
                id=new_id("message"), created_at=stamp + 3, completed_at=stamp + 4, thread_id=session.id,
                role="assistant", assistant_id=assistant.id, run_id=run.id, attachments=[],
                content=[TextContent(text=TextValue(
                    value=f"{marker(turn)} {a} × {b} = {a * b}. {sentence(rng, answer_words)}"))],
            )
            await tx.insert(answer, owner=owner)
            await tx.insert(RunStep(
                id=new_id("step"), created_at=stamp + 3, assistant_id=assistant.id, thread_id=session.id, run_id=run.id,
                type="message_creation", status=StepStatus.completed,
                step_details=MessageCreationDetails(message_creation=MessageCreation(message_id=answer.id)),
                completed_at=stamp + 4,
                usage=Usage(prompt_tokens=prompt_tokens + 40, completion_tokens=completion - 20,
                            total_tokens=prompt_tokens + 20 + completion),
            ), owner=owner)
            prompt_tokens += 30 + answer_words + 30
    return Built(ui_id, session.id, turns, time.perf_counter() - began)


# Resume, in-process ------------------------------------------------------------------------------


@dataclass
class InProcess:
    cold: float = math.nan
    times: list[float] = field(default_factory=list)
    steps: int = 0
    messages_shown: int = 0
    payload_bytes: int = 0
    fetch: list[float] = field(default_factory=list)
    """`thread_tail`: SQL for the latest turns' messages, runs and steps, validated by pydantic."""
    render: list[float] = field(default_factory=list)
    """`render.history_steps` and `render.latest_turns`."""
    encode: list[float] = field(default_factory=list)
    """`json.dumps` of the thread, as Starlette's JSONResponse does it."""


def starlette_json(content: Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


async def measure_in_process(runtime: Runtime, built: Built, repeats: int, profile_dir: Path | None) -> InProcess:

    from assistants.ui.data_layer import EngineDataLayer
    from assistants.ui.render import history_steps, latest_turns

    layer = EngineDataLayer(runtime)
    engine = runtime.engine
    result = InProcess()
    began = time.perf_counter()
    thread = await layer.get_thread(built.ui_id)
    result.cold = time.perf_counter() - began
    assert thread is not None, "the data layer did not find the session"
    result.steps = len(thread["steps"])
    result.messages_shown = sum(step["type"].endswith("_message") for step in thread["steps"])
    result.payload_bytes = len(starlette_json(thread))
    for _ in range(repeats):
        began = time.perf_counter()
        await layer.get_thread(built.ui_id)
        result.times.append(time.perf_counter() - began)

    # Where the time goes: the same work as `get_thread`, piece by piece.
    found = await layer._session(built.ui_id)
    assert found is not None
    owner, session = found
    turns = runtime.settings.resume_turns
    for _ in range(repeats):
        async with engine.store.read() as tx:
            began = time.perf_counter()
            messages, runs, steps, total = await tx.thread_tail(session.id, turns)
            result.fetch.append(time.perf_counter() - began)
            assistant = await tx.find(Assistant, session.assistant_id, owner=owner)
        began = time.perf_counter()
        rendered, elements = history_steps(
            session, built.ui_id, USER, assistant.name if assistant and assistant.name else "Assistant",
            messages, runs, steps, {},
        )
        latest_turns(rendered, elements, turns, built.ui_id, total)
        result.render.append(time.perf_counter() - began)
        began = time.perf_counter()
        starlette_json(thread)
        result.encode.append(time.perf_counter() - began)

    if profile_dir is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(5):
            await layer.get_thread(built.ui_id)
        profiler.disable()
        path = profile_dir / "resume-get_thread.prof"
        profiler.dump_stats(path)
        print(f"profile: {path}", file=sys.stderr)
    return result


async def build_and_measure(data_dir: Path, args: argparse.Namespace) -> tuple[Built, Built, InProcess]:
    settings = Settings(ASSISTANTS_DATA_DIR=str(data_dir), ASSISTANTS_MODEL=MODEL)
    runtime = Runtime(settings, provider=NoModel("resume", [MODEL]))
    try:
        engine = await runtime.start()
        owner = await runtime.accounts.add_user(USER, PASSWORD)
        profile = default_profile(load_profiles())
        assistant = await ensure_assistant(engine, owner, profile, runtime.settings.default_model)
        short = await build_session(runtime, owner, assistant, 1, args.answer_words, SHORT_TITLE)
        built = await build_session(runtime, owner, assistant, args.messages // 2, args.answer_words, TITLE)
        print(f"built a session of {built.turns * 2:,} messages in {built.seconds:.1f} s", file=sys.stderr)
        measured = await measure_in_process(runtime, built, args.server_repeats, args.profile)
        return built, short, measured
    finally:
        await runtime.close()


# Resume, over HTTP -------------------------------------------------------------------------------


class Pinger:
    """Asks the server's `/health` every 50 ms from a thread. The server is one asyncio process, so
    the longest wait for that trivial answer during a measurement is how long its event loop was
    blocked, which every other user of the server waits too."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-pinger", daemon=True)

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                with suppress(httpx.HTTPError):
                    client.get("/health")
                self.samples.append((began, time.monotonic() - began))
                self._stop.wait(0.05)

    def longest(self, start: float, end: float) -> float:
        """The longest wait of a ping sent between `start` and `end` (monotonic seconds)."""
        return max((wait for began, wait in list(self.samples) if start <= began <= end), default=math.nan)



@dataclass
class OverHttp:
    cold: float = math.nan
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """Server CPU seconds per request."""
    stall: list[float] = field(default_factory=list)
    """Longest `/health` wait during each request."""
    status: int = 0
    payload_bytes: int = 0


def login_cookies(server: Server) -> httpx.Cookies:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/login", data={"username": USER, "password": PASSWORD})
        response.raise_for_status()
        return client.cookies


def measure_http(server: Server, built: Built, repeats: int, pinger: Pinger) -> OverHttp:
    result = OverHttp()
    pid = server.process.pid
    with httpx.Client(base_url=server.url, cookies=login_cookies(server), timeout=60) as client:
        path = f"/project/thread/{built.ui_id}"
        for index in range(repeats + 1):
            time.sleep(0.2)  # a few pings before, so the window below has some
            cpu_before = cpu_seconds(pid)
            began = time.monotonic()
            response = client.get(path)
            elapsed = time.monotonic() - began
            time.sleep(0.1)
            result.status = response.status_code
            if response.status_code != 200:
                raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
            result.payload_bytes = len(response.content)
            if index == 0:
                result.cold = elapsed
            else:
                result.times.append(elapsed)
                result.cpu.append(cpu_seconds(pid) - cpu_before)
                result.stall.append(pinger.longest(began, began + elapsed))
    return result


# Browser -----------------------------------------------------------------------------------------


@dataclass
class BrowserResume:
    label: str
    times: list[float] = field(default_factory=list)
    """Seconds from navigation start to the last answer's text being visible."""
    data: list[float] = field(default_factory=list)
    """Seconds from navigation start (or the click) until the page received the thread (`resume_thread`)."""
    cpu: list[float] = field(default_factory=list)
    """Server CPU seconds per resume, until the server went quiet again (socket resume included)."""
    stall: list[float] = field(default_factory=list)
    """Longest `/health` wait during each resume."""
    rendered: int = 0
    dom_nodes: int = 0
    avatar_requests: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Frame:
    at: float
    name: str
    data: Any
    size: int


@dataclass
class StreamTurn:
    tokens: int
    send_at: float = math.nan
    message_id: str = ""
    message_events: Counter[str] = field(default_factory=Counter)
    all_events: Counter[str] = field(default_factory=Counter)
    message_bytes: int = 0
    span: float = math.nan
    """First to last frame of the answer, by the browser's network timestamps (CDP) when available."""
    peak: int = 0
    """Most answer frames in any 1-second window, by the same timestamps."""
    peak_dispatch: int = 0
    """The same, by when Playwright handed the frames to this process (can bunch up when it is busy)."""
    clock: str = "Playwright dispatch"
    first_token: float = math.nan
    """Send to the first frame of the answer."""
    visible: float = math.nan
    """Send to the last word visible in the page."""
    complete: bool = False
    error: str = ""

    @property
    def events(self) -> int:
        return sum(self.message_events.values())

    @property
    def rate(self) -> float:
        return self.events / self.span if self.span and self.span > 0 else math.nan


def parse_frame(payload: str | bytes, at: float) -> Frame | None:
    """A socket.io event frame (`42["name", data]`, maybe with a namespace) as a Frame."""
    if isinstance(payload, bytes) or not payload.startswith("42"):
        return None
    body = payload[2:]
    if body.startswith("/"):
        body = body.split(",", 1)[1] if "," in body else ""
    start = body.find("[")
    if start < 0:
        return None
    try:
        decoded = json.loads(body[start:])
    except ValueError:
        return None
    if not isinstance(decoded, list) or not decoded:
        return None
    return Frame(at, str(decoded[0]), decoded[1] if len(decoded) > 1 else None, len(payload))


def peak_per_second(times: Sequence[float]) -> int:
    """The most events inside any 1-second window."""
    ordered = sorted(times)
    best, low = 0, 0
    for high, t in enumerate(ordered):
        while t - ordered[low] >= 1.0:
            low += 1
        best = max(best, high - low + 1)
    return best


def login(page: Any, server: Server) -> None:
    page.goto(server.url)
    page.fill("#email", USER)
    page.fill("#password", PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_text("Do some arithmetic").first.wait_for(timeout=60_000)


RESUME_HOOK = """
(() => {
  // Notes when the thread reaches the page: Chainlit sends it as a `resume_thread` socket.io event,
  // over HTTP long-polling or the WebSocket, whichever carries it.
  window.__benchResumeAt = null;
  const mark = (text) => {
    if (window.__benchResumeAt === null && typeof text === "string" && text.indexOf('"resume_thread"') >= 0) {
      window.__benchResumeAt = performance.now();
    }
  };
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) { super(...args); this.addEventListener("message", (event) => mark(event.data)); }
  };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (...args) {
    this.addEventListener("load", () => { try { mark(this.responseText); } catch (e) {} });
    return open.apply(this, args);
  };
})();
"""


def browser_resume(page: Any, server: Server, built: Built, short: Built, repeats: int,
                   pinger: Pinger) -> tuple[BrowserResume, BrowserResume, BrowserResume, BrowserResume]:
    pid = server.process.pid
    last = marker(built.turns)
    avatars: list[str] = []

    def on_request(request: Any) -> None:
        if "/avatars/" in request.url:
            avatars.append(request.url)

    page.on("request", on_request)
    full = BrowserResume("page load of `/thread/<id>`")
    inapp = BrowserResume("sidebar click (in-app)")
    baseline = BrowserResume("page load of a short session")
    from assistants.ui.render import earlier_turn_choices

    # The larger of the two buttons above the reopened session (all turns up to 100, else 50 more).
    shown = int(Settings.model_fields["resume_turns"].default)
    [*_, (button_label, button_turns)] = earlier_turn_choices(shown, built.turns)
    first_shown = 1 if button_turns == 0 else built.turns - button_turns + 1
    everything = BrowserResume(f"\"{button_label}\" click")

    def load_thread(run: BrowserResume, target: Built) -> None:
        """A full page load of the thread URL, timed from the navigation's start."""
        try:
            page.goto("about:blank")
            wait_idle(pid)
            avatars.clear()
            cpu_before = cpu_seconds(pid)
            began = time.monotonic()
            page.goto(f"{server.url}/thread/{target.ui_id}")
            page.get_by_text(marker(target.turns), exact=False).first.wait_for(state="visible", timeout=180_000)
            finish(run, began, cpu_before, 0.0)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            run.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    def finish(run: BrowserResume, began: float, cpu_before: float, page_began: float) -> None:
        run.times.append(time.monotonic() - began)
        run.cpu.append(wait_idle(pid) - cpu_before)
        run.stall.append(pinger.longest(began, time.monotonic()))
        arrived = page.evaluate("() => window.__benchResumeAt")
        if arrived is not None:
            run.data.append((arrived - page_began) / 1000)
        run.rendered = page.get_by_text("Answer ", exact=False).count()
        run.dom_nodes = page.evaluate("() => document.getElementsByTagName('*').length")
        run.avatar_requests = len(avatars)

    def show_all() -> None:
        """After a page load of the thread: the button that draws the most earlier turns, until the
        earliest of them shows."""
        try:
            button = page.get_by_role("button", name=button_label)
            button.wait_for(timeout=60_000)
            wait_idle(pid)
            cpu_before = cpu_seconds(pid)
            began = time.monotonic()
            button.click()
            page.get_by_text(marker(first_shown), exact=False).first.wait_for(state="visible", timeout=180_000)
            everything.times.append(time.monotonic() - began)
            everything.cpu.append(wait_idle(pid) - cpu_before)
            everything.stall.append(pinger.longest(began, time.monotonic()))
            everything.rendered = page.get_by_text("Answer ", exact=False).count()
            everything.dom_nodes = page.evaluate("() => document.getElementsByTagName('*').length")
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            everything.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    for _ in range(repeats):
        load_thread(baseline, short)
        load_thread(full, built)
        show_all()
        # In-app: from a new chat, click the session in the sidebar.
        try:
            page.goto(server.url)
            entry = page.get_by_text(TITLE).first
            entry.wait_for(timeout=60_000)
            wait_idle(pid)
            avatars.clear()
            page.evaluate("() => { window.__benchResumeAt = null; }")
            cpu_before = cpu_seconds(pid)
            page_began = page.evaluate("() => performance.now()")
            began = time.monotonic()
            entry.click()
            page.get_by_text(last, exact=False).first.wait_for(state="visible", timeout=180_000)
            finish(inapp, began, cpu_before, page_began)
        except Exception as exc:  # noqa: BLE001
            inapp.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    page.remove_listener("request", on_request)
    return full, inapp, baseline, everything


def stream_text(turn: int, tokens: int) -> tuple[str, str]:
    """2,000 words that join back exactly, and the last one (unique per turn)."""
    words = [f"r{turn}w{i:04d}" for i in range(1, tokens + 1)]
    return " ".join(words), words[-1]


def browser_stream(page: Any, url: str, model: ScriptedModel, turns: int, tokens: int, delay: float) -> list[StreamTurn]:
    frames: list[Frame] = []
    """Frames as Playwright's `framereceived` reports them, stamped when they reach this process."""
    network: list[Frame] = []
    """The same frames with the browser's own arrival time (CDP `Network.webSocketFrameReceived`)."""

    def on_websocket(ws: Any) -> None:
        def on_frame(payload: str | bytes) -> None:
            frame = parse_frame(payload, time.monotonic())
            if frame is not None:
                frames.append(frame)

        ws.on("framereceived", on_frame)

    def on_network_frame(params: dict[str, Any]) -> None:
        # CDP's MonotonicTime is the browser's monotonic clock in seconds (CLOCK_MONOTONIC on Linux,
        # the clock time.monotonic() reads), so it compares with the send time taken here.
        frame = parse_frame(params.get("response", {}).get("payloadData", ""), float(params["timestamp"]))
        if frame is not None:
            network.append(frame)

    page.on("websocket", on_websocket)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.on("Network.webSocketFrameReceived", on_network_frame)
    page.goto(url)
    page.get_by_text("Do some arithmetic").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    # A warm-up turn so the measured turns find the code paths warm (and the socket upgraded).
    model.add_text("Warm-up answer.")
    page.locator("#chat-input").fill("Warm up, please.")
    page.keyboard.press("Enter")
    page.get_by_text("Warm-up answer.").first.wait_for(timeout=60_000)
    wait_for_event(page, frames, 0, "task_end")

    results: list[StreamTurn] = []
    for turn in range(1, turns + 1):
        text, last_word = stream_text(turn, tokens)
        result = StreamTurn(tokens)
        model.add_text(text, delay=delay)
        page.wait_for_timeout(300)
        mark, network_mark = len(frames), len(network)
        result.send_at = time.monotonic()
        page.locator("#chat-input").fill(f"Stream {tokens:,} tokens, please (turn {turn}).")
        page.keyboard.press("Enter")
        try:
            page.get_by_text(last_word, exact=False).first.wait_for(state="visible", timeout=180_000)
            result.visible = time.monotonic() - result.send_at
            wait_for_event(page, frames, mark, "task_end")
        except Exception as exc:  # noqa: BLE001
            result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        page.wait_for_timeout(500)  # stragglers
        analyse(result, frames[mark:], network[network_mark:], text)
        results.append(result)
    page.remove_listener("websocket", on_websocket)
    cdp.detach()
    return results


def wait_for_event(page: Any, frames: list[Frame], mark: int, name: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(f.name == name for f in frames[mark:]):
            return
        page.wait_for_timeout(50)
    raise TimeoutError(f"no {name} event within {timeout:.0f} s")


def analyse(result: StreamTurn, frames: Sequence[Frame], network: Sequence[Frame], text: str) -> None:
    result.all_events = Counter(f.name for f in frames)
    tokens_by_id = Counter(
        f.data.get("id") for f in frames if f.name == "stream_token" and isinstance(f.data, dict)
    )
    if not tokens_by_id:
        result.error = result.error or "no stream_token frames"
        return
    message_id = tokens_by_id.most_common(1)[0][0]
    result.message_id = str(message_id)

    def answer(of: Sequence[Frame]) -> list[Frame]:
        return [f for f in of if f.name in MESSAGE_EVENTS and isinstance(f.data, dict) and f.data.get("id") == message_id]

    mine, mine_network = answer(frames), answer(network)
    result.message_events = Counter(f.name for f in mine)
    result.message_bytes = sum(f.size for f in mine)
    result.peak_dispatch = peak_per_second([f.at for f in mine])
    timed = mine
    if len(mine_network) == len(mine):
        timed, result.clock = mine_network, "browser network (CDP)"
    times = [f.at for f in timed]
    result.span = max(times) - min(times)
    result.peak = peak_per_second(times)
    result.first_token = min(times) - result.send_at
    final = [f for f in mine if f.name in ("update_message", "new_message")]
    output = final[-1].data.get("output") if final else None
    result.complete = isinstance(output, str) and output.startswith(text)


# Report ------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def resume_report(built: Built, short: Built, local: InProcess, http: OverHttp, full: BrowserResume,
                  inapp: BrowserResume, baseline: BrowserResume, everything: BrowserResume,
                  args: argparse.Namespace, began: str, load_before: str) -> str:
    server_p95 = max(percentile(local.times, 95), percentile(http.times, 95))
    browser_worst = max(full.times) if full.times else math.nan
    one_call = statistics.median(local.times) if local.times else math.nan

    def row(label: str, values: Sequence[float], cold: float | None = None, cpu: Sequence[float] = (),
            stall: Sequence[float] = ()) -> str:
        return (
            f"| {label} | {len(values)} | {'–' if cold is None else ms(cold)} | {ms(percentile(values, 50))} "
            f"| {ms(percentile(values, 95))} | {ms(max(values, default=math.nan))} "
            f"| {ms(percentile(cpu, 50)) if cpu else '–'} | {ms(max(stall, default=math.nan)) if stall else '–'} |"
        )

    lines = [
        f"## Chat resume: a session of {built.turns * 2:,} messages",
        "",
        f"- Date: {began}",
        f"- Machine: {machine()}; load average (1 / 5 min) {load_before} before, {load()} after"
        f"{'; quick run' if args.quick else ''}.",
        f"- Session: {built.turns} turns written straight into the store (SQLite, WAL): question (~25 words), "
        f"run (completed, usage, context record), `calculate` tool step, answer (~{args.answer_words + 8} words), "
        f"`message_creation` step. Reopened, it shows its latest turns (`ASSISTANTS_RESUME_TURNS`): "
        f"{local.steps:,} rendered steps (a note linking the rest, then question, tool call, answer and run summary "
        f"per turn), {local.payload_bytes / 1024:,.0f} KiB of JSON.",
        "- In-process: `EngineDataLayer.get_thread(ui_id)` in this process, server not running. HTTP: "
        "`GET /project/thread/{ui_id}` with the login cookie against `chainlit run app.py` (Chainlit checks "
        "the author with `get_thread_author`, then calls `get_thread`). Browser: headless Chromium, logged in; "
        "from navigation start (or the sidebar click) until the last answer's text is visible; *thread received* "
        "is when the page got Chainlit's `resume_thread` socket event (the browser does not use "
        "`GET /project/thread/{id}` to resume: the thread comes over the socket). Cold = first call. "
        "*Event loop blocked*: the longest wait of a `/health` request sent every 50 ms by a thread of this "
        "process during the measurement (the server is one asyncio process: every other user waits as long).",
        "",
        "| measurement | samples | cold ms | median ms | p95 ms | max ms | server CPU ms each (median) "
        "| server event loop blocked, longest ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row("in-process `get_thread`", local.times, local.cold),
        row("HTTP `GET /project/thread/{id}`", http.times, http.cold, http.cpu, http.stall),
        row(f"browser: {full.label} → last answer visible", full.times, None, full.cpu, full.stall),
        row("… thread received by the page", full.data),
        row(f"browser: {inapp.label} → last answer visible", inapp.times, None, inapp.cpu, inapp.stall),
        row("… thread received by the page", inapp.data),
        row(f"browser baseline: page load of a {short.turns * 2}-message session", baseline.times, None, baseline.cpu,
            baseline.stall),
        row(f"browser: then {everything.label} → earliest answer shown visible", everything.times, None,
            everything.cpu, everything.stall),
        "",
        "Where in-process `get_thread` spends its time (medians):",
        "",
        "| part | median ms | share |",
        "|---|---:|---:|",
    ]
    parts = [
        ("`thread_tail`: SQL for the latest turns' messages, runs and steps, and their pydantic validation",
         local.fetch),
        ("`render.history_steps` and `render.latest_turns`", local.render),
        ("`json.dumps` of the thread (as Starlette's `JSONResponse`)", local.encode),
    ]
    total = sum(percentile(values, 50) for _, values in parts)
    for label, values in parts:
        value = percentile(values, 50)
        lines.append(f"| {label} | {ms(value)} | {value / total * 100:.0f}% |" if total else f"| {label} | n/a | |")
    lines += [
        "",
        f"In the page after the resume: {full.rendered or inapp.rendered:,} of {built.turns:,} answers found, "
        f"{full.dom_nodes or inapp.dom_nodes:,} DOM elements, {full.avatar_requests or inapp.avatar_requests:,} "
        "`/avatars/...` requests (Chainlit asks for an avatar per distinct step name; every run summary has "
        "its own name).",
    ]
    cpu = percentile(full.cpu, 50)
    if not math.isnan(cpu) and one_call:
        lines.append(
            f"Server CPU per browser resume: {ms(cpu)} ms, {cpu / one_call:.1f}x one in-process `get_thread` "
            f"({ms(one_call)} ms). Chainlit calls `get_thread` twice per socket resume (the connect-time author "
            "check, then `resume_thread`), turns every message step back into a `cl.Message` for `cl.chat_context`, "
            "and emits the whole thread as one socket event; the avatar requests come on top."
        )
    if chainlit_sleeps():
        lines.append(
            f"Chainlit's `Message.__init__` calls `time.sleep(0.001)`: rebuilding `cl.chat_context` on resume blocks "
            f"the server's event loop for at least {local.messages_shown:,} ms for the {local.messages_shown:,} messages "
            "shown (sleeping, so it does not show as CPU)."
        )
    if everything.times:
        lines.append(
            f"After {everything.label}: {everything.rendered:,} of {built.turns:,} answers in the page, "
            f"{everything.dom_nodes:,} DOM elements."
        )
    errors = full.errors + inapp.errors + baseline.errors + everything.errors
    if errors:
        lines += ["", f"Browser errors ({len(errors)}):", *(f"- {e}" for e in errors[:5])]
    lines += [
        "",
        f"Targets (not asserted): resume ≤ {SERVER_TARGET_S:.0f} s server side (worst p95 of in-process and HTTP: "
        f"{ms(server_p95)} ms) — {verdict(server_p95 <= SERVER_TARGET_S)}; ≤ {BROWSER_TARGET_S:.0f} s in the browser "
        f"(slowest page load of `/thread/<id>` until the last answer shows: {ms(browser_worst)} ms) — "
        f"{verdict(bool(full.times) and browser_worst <= BROWSER_TARGET_S)}.",
    ]
    return "\n".join(lines)


def stream_report(turns: Sequence[StreamTurn], args: argparse.Namespace, began: str, load_before: str) -> str:
    lines = [
        f"## Chat streaming: socket events per streamed answer of {args.tokens:,} tokens",
        "",
        f"- Date: {began}",
        f"- Machine: {machine()}; load average (1 / 5 min) {load_before} before, {load()} after"
        f"{'; quick run' if args.quick else ''}.",
        f"- Setup: scripted model in-process, {args.tokens:,} words in {args.tokens:,} chunks, {args.delay * 1000:g} ms "
        f"apart (≥ {args.tokens * args.delay:.1f} s of streaming); `chainlit run app.py`; headless Chromium counts "
        "the socket.io frames it receives (Playwright `framereceived`). *Answer events*: `stream_start`, "
        "`stream_token`, `update_message`, `new_message` for the streamed answer's id; the rate divides them by the "
        "time from its first to its last frame; the peak is the most of them in any 1-second window. Times are "
        "the browser's own arrival timestamps (CDP `Network.webSocketFrameReceived`); *by dispatch time* uses "
        "when Playwright delivered each frame to this process instead, which bunches up when this process is busy. "
        f"`RunView` flushes at most every {flush_seconds() * 1000:g} ms (`FLUSH_SECONDS`).",
        "",
        "| turn | answer events | of which `stream_token` | span s | events/s (mean) | events/s (peak 1 s) "
        "| peak 1 s by dispatch time | all frames in the turn | answer KiB received | send → first frame ms "
        "| send → last word visible ms | text complete | timestamps |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for index, turn in enumerate(turns, 1):
        lines.append(
            f"| {index} | {turn.events} | {turn.message_events.get('stream_token', 0)} | {turn.span:.2f} "
            f"| {turn.rate:.1f} | {turn.peak} | {turn.peak_dispatch} | {sum(turn.all_events.values())} "
            f"| {turn.message_bytes / 1024:,.0f} | {ms(turn.first_token)} | {ms(turn.visible)} "
            f"| {'yes' if turn.complete else 'no'} | {turn.clock} |"
        )
    everything: Counter[str] = Counter()
    for turn in turns:
        everything.update(turn.all_events)
    if turns:
        per_turn = ", ".join(f"`{name}` {count / len(turns):.0f}" for name, count in everything.most_common())
        lines += ["", f"All frames per turn, by event (mean): {per_turn}."]
    errors = [t.error for t in turns if t.error]
    if errors:
        lines += ["", "Errors:", *(f"- {e}" for e in errors)]
    peak = max((t.peak for t in turns), default=0)
    mean = max((t.rate for t in turns), default=math.nan)
    ok = bool(turns) and not errors and peak <= EVENTS_TARGET and mean <= EVENTS_TARGET
    lines += [
        "",
        f"Target (not asserted): ≤ {EVENTS_TARGET:.0f} events per second per message (highest mean {mean:.1f}, "
        f"highest 1-second peak {peak}) — {verdict(ok)}.",
    ]
    return "\n".join(lines)


def chainlit_sleeps() -> bool:
    """Whether the installed Chainlit's `Message.__init__` sleeps (read from its source, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("chainlit")
    if spec is None or spec.origin is None:
        return False
    with suppress(OSError):
        return "time.sleep(0.001)" in (Path(spec.origin).parent / "message.py").read_text()
    return False


def flush_seconds() -> float:
    """`FLUSH_SECONDS` as `assistants/ui/chat.py` sets it (read from the source, without importing Chainlit's handlers)."""
    import ast

    tree = ast.parse((ROOT / "assistants" / "ui" / "chat.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FLUSH_SECONDS" for t in node.targets):
            with suppress(ValueError):
                return float(ast.literal_eval(node.value))
    return math.nan


# Main --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, tmp: Path) -> str:
    from playwright.sync_api import sync_playwright

    began = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = load()
    prepare_app_root(tmp)
    built, short, local = asyncio.run(build_and_measure(tmp / "data", args))
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("Chromium not found on PATH")
    server: Server | None = None
    before = own_children()
    with ScriptedModel() as model:
        try:
            server = start_server(tmp, model_url=model.base_url)
            print(f"server at {server.url} (log: {server.log_path})", file=sys.stderr)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                try:
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    context.add_init_script(RESUME_HOOK)
                    page = context.new_page()
                    login(page, server)
                    with Pinger(server.url) as pinger:
                        http = measure_http(server, built, args.server_repeats, pinger)
                        print(f"HTTP: median {ms(percentile(http.times, 50))} ms", file=sys.stderr)
                        full, inapp, baseline, everything = browser_resume(
                            page, server, built, short, args.browser_repeats, pinger
                        )
                    print(f"browser resume: {[ms(t) for t in full.times]} / {[ms(t) for t in inapp.times]} ms",
                          file=sys.stderr)
                    stream_load = load()
                    stream_began = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
                    turns = browser_stream(page, server.url, model, args.stream_repeats, args.tokens, args.delay)
                finally:
                    browser.close()
        except BaseException:
            if server is not None:
                tail = server.log().splitlines()[-30:]
                print("the server log ends with:", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            if server is not None:
                server.stop()
            else:
                # Interrupted inside start_server: stop the server process it had started.
                for pid in own_children() - before:
                    stop_pid(pid)
    return "\n\n".join([
        resume_report(built, short, local, http, full, inapp, baseline, everything, args, began, load_before),
        stream_report(turns, args, stream_began, stream_load),
    ])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer repeats")
    parser.add_argument("--messages", type=int, default=1000, help="messages in the resumed session (default 1000)")
    parser.add_argument("--answer-words", type=int, default=60, help="words per stored answer (default 60)")
    parser.add_argument("--server-repeats", type=int, default=None, help="timed get_thread calls (default 10, 3 quick)")
    parser.add_argument("--browser-repeats", type=int, default=None, help="browser resumes (default 3, 1 quick)")
    parser.add_argument("--stream-repeats", type=int, default=None, help="streamed answers (default 3, 1 quick)")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens (words) in the streamed answer")
    parser.add_argument("--delay", type=float, default=0.002, help="seconds between the model's chunks")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="also cProfile 5 in-process get_thread calls into DIR/resume-get_thread.prof")
    args = parser.parse_args(argv)
    if args.server_repeats is None:
        args.server_repeats = 3 if args.quick else 10
    if args.browser_repeats is None:
        args.browser_repeats = 1 if args.quick else 3
    if args.stream_repeats is None:
        args.stream_repeats = 1 if args.quick else 3
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop the server, the browser and the model.
    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        try:
            text = run(args, Path(tmp))
        except KeyboardInterrupt:
            print("interrupted; the server, the browser and the model were stopped", file=sys.stderr)
            raise SystemExit(130) from None
    print(text)


if __name__ == "__main__":
    main()
