"""The exception tree, split by who must act.

    AssistantsError
    ├── ConfigurationError          the operator: a setting is missing or wrong (no provider, bad URL)
    │   └── SandboxUnavailable      bubblewrap or the kernel's Python packages are missing
    ├── InvalidTransitionError      the developer: engine code asked for an illegal run transition
    ├── MetadataDefinitionError     the developer: a metadata-backed class declares too much
    ├── RequestError                the API caller: the request is wrong; HTTP 4xx
    │   ├── InvalidRequestError     400, names the offending field in `param`
    │   │   └── MetadataError       400, a metadata key or value breaks OpenAI's limits
    │   ├── AuthenticationError     401, missing or unknown API key
    │   ├── NotFoundError           404, no such object for this user
    │   └── TooManyRequestsError    429, a per-user limit (concurrent runs, failed logins) is reached
    ├── ProviderError               the provider: the upstream model call failed
    │   ├── ProviderRateLimitError  429 upstream; retried, then `rate_limit_exceeded`
    │   └── ProviderConnectionError unreachable or timed out; retried, then `server_error`
    ├── ModelBehaviourError         the model: invalid tool arguments, unknown tool, runaway loops
    ├── KernelCapacityError         the user: too many code sessions running; wait or end one
    └── IngestionError              the uploader: file search cannot read a file; `code` is the
        │                           vector store file's `last_error.code`
        ├── UnsupportedFileError    `unsupported_file`: a type file search does not read
        └── InvalidFileError        `invalid_file`: corrupt, encrypted, too large, or no text

Foreign exceptions (openai, SQLAlchemy, httpx) are translated at the adapter that meets them with
`raise ... from exc`, so the rest of the engine only sees this tree. Messages are written for the
person who must act: they say what happened and what to do.
"""

from __future__ import annotations


class AssistantsError(Exception):
    """Base of every error the engine raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(AssistantsError):
    """The operator must change a setting."""


class SandboxUnavailable(ConfigurationError):
    """The code interpreter cannot run its kernels: bubblewrap or the kernel Python's packages are missing."""


class InvalidTransitionError(AssistantsError):
    """Engine code asked for a run status change the transition table forbids."""


class MetadataDefinitionError(AssistantsError, TypeError):
    """A metadata-backed class declares more than `metadata` can hold."""


class RequestError(AssistantsError):
    """The API caller must change the request. Carries the HTTP status and the OpenAI error shape."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code

    def to_dict(self) -> dict[str, object]:
        """The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(RequestError):
    """A field is missing, malformed or out of range; `param` names it."""


class TooManyRequestsError(RequestError):
    """A per-user limit is reached; the message says which and when to try again."""

    status_code = 429
    error_type = "rate_limit_exceeded"


class MetadataError(InvalidRequestError):
    """A metadata key or value breaks the limits (16 keys, keys ≤ 64 chars, values ≤ 512 chars)."""


class AuthenticationError(RequestError):
    """No API key, or one we do not know."""

    status_code = 401
    error_type = "invalid_request_error"


class NotFoundError(RequestError):
    """No such object, or one that belongs to another user: both read the same."""

    status_code = 404


class ProviderError(AssistantsError):
    """The Chat Completions provider failed. `code` is the run's `last_error.code`."""

    code = "server_error"

    def __init__(self, message: str, *, retry_after: float | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.retryable = retryable


class ProviderRateLimitError(ProviderError):
    """The provider said 429."""

    code = "rate_limit_exceeded"


class ProviderConnectionError(ProviderError):
    """The provider could not be reached, or timed out."""


class ExpiredVectorStoreError(AssistantsError):
    """A run would search a vector store whose `expires_after` policy has run out."""


class ModelBehaviourError(AssistantsError):
    """The model produced something the engine cannot act on (reported back to the model)."""


class KernelCapacityError(AssistantsError):
    """Every code interpreter kernel the user (or the server) may run is busy; none could be stopped."""


class IngestionError(AssistantsError):
    """File search could not turn an uploaded file into text.

    `code` is what the vector store file reports as `last_error.code`; the message tells the
    uploader what was wrong with the file and what to do about it.
    """

    code = "server_error"

    def to_last_error(self) -> dict[str, str]:
        """The vector store file's `last_error` object: `{"code", "message"}`."""
        return {"code": self.code, "message": self.message}


class UnsupportedFileError(IngestionError):
    """The file's type is not one file search can read."""

    code = "unsupported_file"


class InvalidFileError(IngestionError):
    """The file claims a supported type but is corrupt, encrypted, too large or has no text."""

    code = "invalid_file"
