"""The `assistants` command, run as a user runs it: a real process, a real data folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.scripted_model import ScriptedModel
from tests.server import BIN, ROOT


def run_cli(tmp_path: Path, model: ScriptedModel | None, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "OPENAI_BASE_URL", "OPENAI_API_KEY")}
    env.update(ASSISTANTS_DATA_DIR=str(tmp_path / "data"), ASSISTANTS_MODEL="scripted-model")
    if model is not None:
        env.update(OPENAI_BASE_URL=model.base_url, OPENAI_API_KEY="sk-provider-secret")
    return subprocess.run(
        [str(BIN / "assistants"), *args], input=stdin, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def test_users_and_keys(tmp_path: Path) -> None:
    created = run_cli(tmp_path, None, "users", "add", "dana", "--password", "correct horse")
    assert created.returncode == 0, created.stderr
    again = run_cli(tmp_path, None, "users", "add", "dana", "--password", "x")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    key = run_cli(tmp_path, None, "keys", "create", "dana")
    assert key.returncode == 0, key.stderr
    assert key.stdout.strip().splitlines()[-1].startswith("sk-asst-")
    unknown = run_cli(tmp_path, None, "keys", "create", "nobody")
    assert unknown.returncode == 1
    assert "No user named 'nobody'" in unknown.stderr


def test_terminal_chat_streams_and_runs_tools(tmp_path: Path, model: ScriptedModel) -> None:
    model.add_tool_calls([{"name": "calculate", "arguments": '{"expression": "6*7"}'}])
    model.add_text("The answer is 42.")
    model.add_text("Goodbye!")
    result = run_cli(tmp_path, model, "chat", "--user", "erin", stdin="What is 6*7?\nThanks\n\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '[tool] calculate({"expression": "6*7"}) -> 42' in out
    assert "The answer is 42." in out
    assert "Goodbye!" in out
    # The second turn's request carried the first exchange before the new question.
    second = model.requests[-1].body["messages"]
    assert [m["role"] for m in second][-3:] == ["user", "assistant", "user"]
    assert second[-1]["content"] == "Thanks"
    # The provider key is never printed.
    assert "sk-provider-secret" not in out + result.stderr


def test_chat_ui_is_served_beside_v1(server) -> None:  # type: ignore[no-untyped-def]
    page = httpx.get(server.url, timeout=10)
    assert page.status_code == 200
    assert "<html" in page.text.lower()
    assert ROOT.exists()
