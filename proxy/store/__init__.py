"""Persistence: owns every SQL statement of the proxy."""

from proxy.store.journal import CountRow, InstanceSeen, JournalEntry
from proxy.store.store import Store
from proxy.store.writer import StorageUnavailable

__all__ = ["CountRow", "InstanceSeen", "JournalEntry", "Store", "StorageUnavailable"]
