"""The assistants engine: the Assistants data plane on our own store, runs on any Chat Completions provider."""

__version__ = "0.1.0"
