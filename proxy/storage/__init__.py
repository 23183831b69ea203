"""The SQLite engine every room shares: connections, the one write-transaction helper, migrations,
the journal and its group commit, the usage ledger, capacity, worker shards and the outbox tables.

Nothing outside the storage layer (this package and each vendor's `store` package) holds a
connection or runs SQL: the rest of the proxy goes through `Store`."""

from proxy.storage.ingest import IngestSink
from proxy.storage.journal import CountRow, InstanceSeen, JournalEntry
from proxy.storage.store import Store
from proxy.storage.writer import StorageUnavailable

__all__ = ["CountRow", "IngestSink", "InstanceSeen", "JournalEntry", "Store", "StorageUnavailable"]
