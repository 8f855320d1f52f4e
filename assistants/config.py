"""Settings, read from the environment and from `.env` (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can configure. Every field is documented in the README."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    """Base URL of the OpenAI-compatible Chat Completions provider (OpenAI, Ollama, vLLM, ...)."""
    openai_api_key: str | None = Field(default=None, alias="OPENAI_API_KEY")
    """API key for the provider; local providers accept any non-empty value."""
    assistants_model: str | None = Field(default=None, alias="ASSISTANTS_MODEL")
    """Model used when neither the run nor the assistant names one."""
    data_dir: Path = Field(default=Path(".assistants"), alias="ASSISTANTS_DATA_DIR")
    """Folder holding the SQLite database and the stored files."""
    database_url: str | None = Field(default=None, alias="ASSISTANTS_DATABASE_URL")
    """SQLAlchemy async URL; `postgresql+asyncpg://...` selects PostgreSQL."""
    context_window: int = Field(default=128_000, alias="ASSISTANTS_CONTEXT_WINDOW", ge=1024)
    """Tokens the model accepts; `full` context mode trims the history to fit in it."""
    run_expiry_seconds: int = Field(default=600, alias="ASSISTANTS_RUN_EXPIRY_SECONDS", ge=1)
    """How long a run may wait in `requires_action` for tool outputs before it expires."""
    run_timeout_seconds: float = Field(default=600.0, alias="ASSISTANTS_RUN_TIMEOUT", gt=0)
    """Longest a run may work at a stretch (model calls and tools) before it is stopped as `expired`."""
    run_lease_seconds: int = Field(default=30, alias="ASSISTANTS_RUN_LEASE_SECONDS", ge=3)
    """A process renews its claim on the runs it executes this often (a third of it); a run whose
    claim ran out (its process stopped) is ended by another process, or at the next start."""
    resume_turns: int = Field(default=10, alias="ASSISTANTS_RESUME_TURNS", ge=0)
    """Turns a reopened chat session shows (0: all); a link above them opens the whole conversation."""
    max_runs_per_user: int = Field(default=8, alias="ASSISTANTS_MAX_RUNS_PER_USER", ge=1)
    """Runs one user may have active (queued, in progress, waiting for tools) at once."""
    max_tool_rounds: int = Field(default=16, alias="ASSISTANTS_MAX_TOOL_ROUNDS", ge=1)
    """Bound on model-tool round trips in one run, to end runaway runs."""
    tool_timeout_seconds: float = Field(default=30.0, alias="ASSISTANTS_TOOL_TIMEOUT", gt=0)
    """Timeout for one server-side function tool call."""
    provider_max_retries: int = Field(default=3, alias="ASSISTANTS_PROVIDER_RETRIES", ge=0)
    """Retries of a provider request that fails before its first token."""
    provider_timeout_seconds: float = Field(default=120.0, alias="ASSISTANTS_PROVIDER_TIMEOUT", gt=0)
    """Read timeout for the provider's HTTP calls."""
    max_file_bytes: int = Field(default=512 * 1024 * 1024, alias="ASSISTANTS_MAX_FILE_BYTES", ge=1)
    """Largest file accepted by `POST /v1/files`."""
    max_ingest_bytes: int = Field(default=50 * 1024 * 1024, alias="ASSISTANTS_MAX_INGEST_BYTES", ge=1)
    """Largest file file search reads (50 MB, `search.parse.DEFAULT_MAX_BYTES`); a larger one added to a
    vector store fails with a `last_error` naming the limit. A Word document may unpack to four times it."""

    code_sandbox: bool = Field(default=True, alias="ASSISTANTS_CODE_SANDBOX")
    """Run the code interpreter's kernels under bubblewrap. `off` runs them unsandboxed: only for
    a single trusted user on a machine without bubblewrap."""
    code_python: str = Field(default="/usr/bin/python3", alias="ASSISTANTS_CODE_PYTHON")
    """The Python (with ipykernel, numpy, pandas, matplotlib) that runs inside the sandbox."""
    code_timeout_seconds: float = Field(default=60.0, alias="ASSISTANTS_CODE_TIMEOUT", gt=0)
    """Wall-clock limit of one code execution; past it the code is interrupted."""
    code_cpu_seconds: int = Field(default=600, alias="ASSISTANTS_CODE_CPU_SECONDS", ge=1)
    """CPU time a session's kernel may use in its lifetime before it is restarted."""
    code_memory_mb: int = Field(default=2048, alias="ASSISTANTS_CODE_MEMORY_MB", ge=256)
    """Memory (address space) limit of a kernel."""
    code_max_processes: int = Field(default=64, alias="ASSISTANTS_CODE_MAX_PROCESSES", ge=4)
    """Processes a kernel may run at once (fork bombs stop here)."""
    code_max_file_mb: int = Field(default=100, alias="ASSISTANTS_CODE_MAX_FILE_MB", ge=1)
    """Largest file the code may write."""
    code_output_chars: int = Field(default=20_000, alias="ASSISTANTS_CODE_OUTPUT_CHARS", ge=100)
    """Output kept per execution; the rest is cut with a note."""
    code_warm_kernels: int = Field(default=2, alias="ASSISTANTS_CODE_WARM_KERNELS", ge=0)
    """Kernels started ahead of need, so a session's first call does not wait for one."""
    code_idle_seconds: float = Field(default=1200.0, alias="ASSISTANTS_CODE_IDLE_SECONDS", gt=0)
    """A session's kernel shuts down after this long unused (its files stay)."""
    code_kernels_per_user: int = Field(default=3, alias="ASSISTANTS_CODE_KERNELS_PER_USER", ge=1)
    """Kernels one user may have running at once."""
    code_kernels_total: int = Field(default=20, alias="ASSISTANTS_CODE_KERNELS_TOTAL", ge=1)
    """Kernels the server runs at once, for all users."""
    embedding_model: str | None = Field(default=None, alias="ASSISTANTS_EMBEDDING_MODEL")
    """Embedding model for hybrid file search (the provider's `/v1/embeddings`); unset: full text only."""
    embedding_dimensions: int | None = Field(default=None, alias="ASSISTANTS_EMBEDDING_DIMENSIONS", ge=1, le=8192)
    """Vector size to ask the embedding model for (e.g. 256 for text-embedding-3-small); unset: the model's own."""
    search_cache_mb: int = Field(default=256, alias="ASSISTANTS_SEARCH_CACHE_MB", ge=0)
    """Memory for stores' vectors kept between hybrid searches; a store that does not fit is read each time."""

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file inside the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'assistants.db').resolve()}"

    @property
    def default_model(self) -> str:
        """The model for assistants that do not name one."""
        return self.assistants_model or "gpt-4o-mini"

    @property
    def files_dir(self) -> Path:
        """Where uploaded file contents live."""
        return self.data_dir / "files"

    @property
    def sandbox_dir(self) -> Path:
        """Where the code interpreter keeps each session's working folder (`/mnt/data`)."""
        return self.data_dir / "sandbox"

    @property
    def provider_configured(self) -> bool:
        """Whether runs can reach a provider at all."""
        return bool(self.openai_api_key or self.openai_base_url)
