"""The SQLite store: event log, cursors, retry schedule, dead letters, worker lease."""

from evroute.store.db import Store

__all__ = ["Store"]
