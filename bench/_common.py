"""What the benchmarks share: percentiles, the machine line, process CPU, a provider that must not be called."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def print_in_temp_folder(prefix: str, work: Callable[[Path], Coroutine[Any, Any, str]]) -> None:
    """Run `work` in a fresh temporary folder and print the report it returns; Ctrl-C exits quietly."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            text = asyncio.run(work(Path(tmp)))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
    print(text)


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
        f" ({platform.python_implementation()})"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class NoModel:
    """A provider for benchmarks that must not reach a model: any call to it is a bug in the benchmark."""

    def __init__(self, benchmark: str, models: Sequence[str] = ()) -> None:
        self.benchmark = benchmark
        self.models = list(models)

    def stream(self, request: dict[str, Any]) -> Any:
        raise AssertionError(f"the {self.benchmark} benchmark called the model")

    async def complete(self, request: dict[str, Any]) -> str:
        raise AssertionError(f"the {self.benchmark} benchmark called the model")

    async def list_models(self) -> list[str]:
        return list(self.models)
