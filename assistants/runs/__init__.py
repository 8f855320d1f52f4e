"""The run engine: a thin runner and one private module per phase of a run."""

from ._status import ACTIVE, TERMINAL, TRANSITIONS, transition
from .runner import Begun, RunExecutor

__all__ = ["ACTIVE", "TERMINAL", "TRANSITIONS", "Begun", "RunExecutor", "transition"]
