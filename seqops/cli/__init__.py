"""The `seqops` command (`info`, `bench`, `train`)."""
from .commands import main

__all__ = ["main"]
