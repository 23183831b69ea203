"""A JSON array or object written entry by entry into one buffer, never past a size.

Why: a read answer whose size is a product (seen-apps: flags x apps) cannot be bounded by counting
one dimension. Entries are encoded straight into one growing buffer, so the answer exists once (no
list of pieces joined into a second copy), the caller can yield to the event loop between batches
of entries, and the entry that would take the answer past `max_bytes` is left out, with everything
after it: the answer ends where the bound falls, still valid JSON.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


class BoundedJson:
    def __init__(self, max_bytes: int, kind: str = "[") -> None:
        if kind not in ("[", "{"):
            raise ValueError(f"a JSON array or object, not {kind!r}")
        self.max_bytes = max_bytes
        self._close = b"]" if kind == "[" else b"}"
        self._buffer = bytearray(kind.encode())
        self.entries = 0
        self.full = False  # an entry was left out: the answer stops before it

    def add(self, value: Any, key: str | None = None) -> bool:
        """Append `value` (an object's member `key`: `value`); False, and nothing written, when it
        would take the answer (with its closing bracket) past `max_bytes`, or once one did."""
        if self.full:
            return False
        buffer = self._buffer
        start = len(buffer)
        if self.entries:
            buffer += b","
        if key is not None:
            _encoder.encode_into(key, buffer, -1)
            buffer += b":"
        _encoder.encode_into(value, buffer, -1)
        if len(buffer) + len(self._close) > self.max_bytes:
            del buffer[start:]
            self.full = True
            return False
        self.entries += 1
        return True

    def close(self) -> bytearray:
        """The finished JSON (the buffer itself: no copy)."""
        self._buffer += self._close
        return self._buffer
