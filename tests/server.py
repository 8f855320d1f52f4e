"""Start the real server (`chainlit run app.py`) against the scripted model, as a user would."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running server process and the environment it (and the CLI) use."""

    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/v1"

    def cli(self, *args: str) -> str:
        """Run the `assistants` command with the server's settings; returns its stdout."""
        result = subprocess.run(
            [str(BIN / "assistants"), *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            raise AssertionError(f"assistants {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def key_for(self, name: str) -> str:
        """An API key for user `name`, creating the user on first use (through the CLI)."""
        if name not in self.keys:
            self.cli("users", "add", name, "--password", f"{name}-password")
            self.keys[name] = self.cli("keys", "create", name).strip().splitlines()[-1]
        return self.keys[name]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def clock_ahead(seconds: int) -> dict[str, str]:
    """Environment that runs a server with its wall clock `seconds` ahead of the machine's, through
    libfaketime (Debian's `faketime`, which `.ci/run` installs); monotonic clocks are left alone."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    assert found, "libfaketime is missing: apt-get install faketime"
    return {"LD_PRELOAD": str(found[0]), "FAKETIME": f"+{seconds}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def start_server(tmp: Path, *, model_url: str | None, extra_env: dict[str, str] | None = None) -> Server:
    """Start `chainlit run app.py --headless` on a free port and wait until `/v1` answers."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # Chainlit's --ci would fake the API key.
    env.pop("OPENAI_BASE_URL", None)
    env.pop("OPENAI_API_KEY", None)
    env.pop("CHAINLIT_AUTH_SECRET", None)  # Generated into the data folder, as on a fresh install.
    env.update(
        ASSISTANTS_DATA_DIR=str(tmp / "data"),
        CHAINLIT_APP_ROOT=str(tmp / "app"),
        ASSISTANTS_MODEL="scripted-model",
        ASSISTANTS_RUN_EXPIRY_SECONDS="4",
        ASSISTANTS_PROVIDER_RETRIES="2",
        ASSISTANTS_PROVIDER_TIMEOUT="20",
        PYTHONUNBUFFERED="1",
    )
    if model_url is not None:
        env.update(OPENAI_BASE_URL=model_url, OPENAI_API_KEY="sk-test-provider-secret")
    env.update(extra_env or {})
    # The app root is a temporary folder (Chainlit writes `.chainlit/` and `.files/` there); give it
    # the project's Chainlit configuration, welcome page and public assets.
    app_root = tmp / "app"
    (app_root / ".chainlit").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ".chainlit" / "config.toml", app_root / ".chainlit" / "config.toml")
    shutil.copy(ROOT / "chainlit.md", app_root / "chainlit.md")
    if not (app_root / "public").exists():
        (app_root / "public").symlink_to(ROOT / "public")
    port = free_port()
    log_path = tmp / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [str(BIN / "chainlit"), "run", str(ROOT / "app.py"), "--headless", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp / "app",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(env=env, port=port, process=process, log_path=log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.api_url}/models", timeout=1).status_code == 401:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the server did not start in 60 s:\n{server.log()}")


def start_instances(
    tmp: Path, *, model_url: str | None, database_url: str, count: int = 2, extra_env: dict[str, str] | None = None
) -> list[Server]:
    """`count` server processes as behind a load balancer: one database and one shared data folder
    (stored files, the generated login secret), each with its own app folder and log.

    Each reaches the shared folder by a path of its own (`instance-N/data`, a link to it), as hosts
    mounting one share do, so nothing can depend on the path another process used. They start one
    after the other: the first runs the migrations and writes the secret the others read.
    """
    shared = tmp / "shared-data"
    shared.mkdir(parents=True)
    started: list[Server] = []
    try:
        for number in range(count):
            folder = tmp / f"instance-{number}"
            folder.mkdir()
            (folder / "data").symlink_to(shared, target_is_directory=True)
            env = {"ASSISTANTS_DATABASE_URL": database_url, **(extra_env or {})}
            started.append(start_server(folder, model_url=model_url, extra_env=env))
    except BaseException:
        for srv in started:
            srv.stop()
        raise
    for srv in started[1:]:
        srv.keys = started[0].keys  # One database: the users and keys made through one work on all.
    return started
