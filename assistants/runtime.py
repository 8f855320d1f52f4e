"""Wiring: settings, store, provider, tools and engine, built once per process.

`app.py` (Chainlit), the `/v1` routes and the CLI share one `Runtime`. Collaborators are built
here and injected; nothing inside the engine builds its own clients.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from .config import Settings
from .engine import Engine
from .providers import ChatProvider, OpenAIChatProvider, UnconfiguredProvider, build_provider
from .search.embed import build_embedder
from .store import open_store
from .tokens import count_text
from .tools import FunctionRegistry, default_registry
from .tools.code_interpreter import CodeInterpreter
from .users import Accounts

FULL_COLLECTION_THRESHOLD = 100
"""Collections of the garbage collector's middle generation between two full ones (Python's
default is 10; `gc.set_threshold`)."""

log = logging.getLogger(__name__)


class Runtime:
    """The process's engine, started lazily and at most once."""

    def __init__(self, settings: Settings | None = None, *, provider: ChatProvider | None = None,
                 registry: FunctionRegistry | None = None) -> None:
        self.settings = settings or Settings()
        self._provider = provider
        self._registry = registry
        self._engine: Engine | None = None
        self._built_provider: OpenAIChatProvider | UnconfiguredProvider | None = None
        """The provider built from the settings, closed with the runtime (an injected one is the caller's)."""
        self._accounts: Accounts | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> Engine:
        """Open the store (migrating it), build the provider, start the engine."""
        async with self._lock:
            if self._engine is not None:
                return self._engine
            from .tools import examples  # noqa: F401  (registers the example tools)

            store = await open_store(self.settings)
            provider = self._provider
            if provider is None:
                await self._close_provider()  # one left by a start that failed
                provider = self._built_provider = build_provider(self.settings)
            if not self.settings.provider_configured and self._provider is None:
                log.warning("No model provider configured: set OPENAI_BASE_URL / OPENAI_API_KEY. Runs will fail until then.")
            engine = Engine(
                store=store,
                provider=provider,
                settings=self.settings,
                registry=self._registry or default_registry,
                code=CodeInterpreter.from_settings(self.settings),
                embedder=build_embedder(
                    base_url=self.settings.openai_base_url,
                    api_key=self.settings.openai_api_key,
                    model=self.settings.embedding_model,
                    dimensions=self.settings.embedding_dimensions,
                    retries=self.settings.provider_max_retries,
                    timeout=self.settings.provider_timeout_seconds,
                ),
            )
            await engine.start()
            self._accounts = Accounts(store)
            self._engine = engine
            # Load the tokenizer now rather than in the first run, then move everything built at
            # start-up out of the garbage collector's sight: full collections over those objects
            # otherwise pause every run for ~100 ms now and then.
            count_text("warm up")
            gc.collect()
            gc.freeze()
            # A full collection still scans everything made since: under load, 70-200 ms during
            # which no token is relayed, every 2 s or so with Python's default threshold (16 in
            # 35 s at 200 streaming sessions, BENCHMARKS.md). Ten times rarer (1-2 in 35 s, 0.2-1%
            # of the time), they no longer decide the 99th percentile; garbage in reference
            # cycles waits longer to be freed. The setting is process-wide.
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
            return engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the runtime has not been started")
        return self._engine

    @property
    def accounts(self) -> Accounts:
        if self._accounts is None:
            raise RuntimeError("the runtime has not been started")
        return self._accounts

    async def close(self) -> None:
        try:
            if self._engine is not None:
                engine, self._engine = self._engine, None
                try:
                    await engine.close()
                finally:
                    await engine.store.close()
        finally:
            await self._close_provider()

    async def _close_provider(self) -> None:
        if self._built_provider is not None:
            provider, self._built_provider = self._built_provider, None
            await provider.close()


runtime = Runtime()
"""The process-wide runtime used by `app.py` and the `/v1` routes."""
