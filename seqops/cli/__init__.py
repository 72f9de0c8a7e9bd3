"""The `seqops` command (`info`, `bench`, `train`)."""
from .main import main

__all__ = ["main"]
