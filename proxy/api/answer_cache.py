"""A bounded LRU of encoded read answers, valid for one store data version and one span of time.

Why: the large read answers (seen-apps is 20 MB with 100 apps x 1,000 flags) cost SQLite and the
encoder hundreds of milliseconds each, while the data behind them changes only when a fold or a
pruning pass writes (Store.data_version). An entry is served only under the data version it was
computed at and only while the clock is inside the span its answer holds for (answers over a
sliding window change when a row leaves the window, not only when data arrives). Any new data
version makes every entry stale at once, so the whole cache is dropped then.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(slots=True)
class CachedAnswer:
    body: bytes | bytearray  # the encoded JSON
    valid_from: float  # the clock reading it was computed at
    valid_until: float  # the first moment the clock alone may change it (math.inf: never)
    gzipped: bytes | None = None  # made on the first request that accepts gzip
    headers: tuple[tuple[str, str], ...] = ()  # sent with the body (e.g. that a list was cut short)

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"")

    def holds_at(self, now: float) -> bool:
        return self.valid_from <= now < self.valid_until


def timeless(body: bytes) -> CachedAnswer:
    """An answer that depends on the stored data only, not on the clock."""
    return CachedAnswer(body, -math.inf, math.inf)


class AnswerCache:
    """Entries keyed by (route, normalised parameters); bounded by bytes and by entries (LRU).
    `max_bytes = 0` keeps nothing."""

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, CachedAnswer] = OrderedDict()
        self._version: int | None = None
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # entries dropped to stay within the bounds (not stale ones)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, version: int, now: float) -> CachedAnswer | None:
        self._follow(version)
        entry = self._entries.get(key)
        if entry is not None and not entry.holds_at(now):
            self._drop(key)
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: Hashable, version: int, entry: CachedAnswer) -> None:
        """Keep `entry`, computed from data of `version`; ignored if the data has moved on since."""
        if self._version is not None and version < self._version:
            return
        self._follow(version)
        if key in self._entries:
            self._drop(key)
        if entry.size > self.max_bytes:
            return
        self._entries[key] = entry
        self.bytes += entry.size
        self._shrink()

    def add_gzipped(self, key: Hashable, entry: CachedAnswer, gzipped: bytes) -> None:
        """Attach the compressed variant to `entry`, counting it against the bound if it is kept."""
        if entry.gzipped is not None:
            return
        entry.gzipped = gzipped
        if self._entries.get(key) is entry:
            self.bytes += len(gzipped)
            if entry.size > self.max_bytes:
                self._drop(key)
            else:
                self._shrink()

    def _follow(self, version: int) -> None:
        if version != self._version:
            self._entries.clear()
            self.bytes = 0
            self._version = version

    def _drop(self, key: Hashable) -> None:
        self.bytes -= self._entries.pop(key).size

    def _shrink(self) -> None:
        while self.bytes > self.max_bytes or len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1


class Windowed(NamedTuple):
    """An answer over a window ending "now", and the first moment at which the clock moving on
    can change it (a row leaves the window, a minute or hour bucket boundary passes) while the
    data stays the same; the answer cache serves it until then (proxy/api/answer_cache.py)."""

    answer: Any
    valid_until: float


class Encoded(NamedTuple):
    """An answer its compute function encoded itself (a large one, written entry by entry between
    loop passes: proxy/api/bounded_json.py): its JSON is kept and sent as it is, with `headers`;
    `valid_until` as in Windowed."""

    body: bytes | bytearray
    valid_until: float = math.inf
    headers: tuple[tuple[str, str], ...] = ()


def leaves_window(oldest_inside: float | None, window: float, otherwise: float = math.inf) -> float:
    """When the oldest row inside a window `>= now - window` drops out of it."""
    return otherwise if oldest_inside is None else min(otherwise, oldest_inside + window)
