"""Persistence: owns every SQL statement of the proxy."""

from proxy.storage.journal import CountRow, InstanceSeen, JournalEntry
from proxy.storage.store import Store
from proxy.storage.writer import StorageUnavailable

__all__ = ["CountRow", "InstanceSeen", "JournalEntry", "Store", "StorageUnavailable"]
