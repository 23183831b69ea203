"""Answering a read endpoint through the answer cache, gzip-compressed when the client allows it.

Every read folds the journal first, so an answer includes every acknowledged count; the fold
moves the store's data version when it wrote anything, so a count acknowledged before the read can
never be answered from an entry computed before it (proxy/api/answer_cache.py).
"""

from __future__ import annotations

import asyncio
import gzip
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import msgspec
from aiohttp import web

from proxy.api.answer_cache import CachedAnswer, Encoded, Windowed, timeless
from proxy.api.state import ANSWER_CACHE, CLOCK, STORE

# Smaller answers go out as they are: a few hundred bytes gain nothing from gzip's framing.
GZIP_MIN_BYTES = 2048
# Level 5 makes seen-apps' 20 MB into ~210 KB in ~95 ms here; level 9 saves a third more and takes
# twice as long, level 1 is 3x faster and a third larger.
GZIP_LEVEL = 5
# Compressing more than this leaves the event loop for a thread (zlib releases the GIL).
INLINE_GZIP_MAX_BYTES = 64 * 1024

_encode = msgspec.json.Encoder().encode

Compute = Callable[[float], Awaitable[Any]]


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (RFC 9110: `gzip;q=0` refuses it, `*` allows it
    unless gzip is named)."""
    star = False
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if name in ("gzip", "x-gzip"):
            return quality > 0
        if name == "*":
            star = quality > 0
    return star


async def cached_answer(request: web.Request, key: Hashable, compute: Compute) -> web.Response:
    """The answer of `compute(now)`: a payload for msgspec to encode, a `Windowed` one whose
    `valid_until` says when the clock alone changes it, or one already `Encoded`. Errors it raises
    are not cached."""
    app = request.app
    store, cache, now = app[STORE], app[ANSWER_CACHE], app[CLOCK].now()
    await store.fold_in_chunks()  # before the version is read: it covers every count acknowledged so far
    version = store.data_version
    entry = cache.get(key, version, now)
    if entry is None:
        result = await compute(now)
        if isinstance(result, Windowed):
            entry = CachedAnswer(_encode(result.answer), now, result.valid_until)
        elif isinstance(result, Encoded):
            entry = CachedAnswer(result.body, -math.inf if result.valid_until == math.inf else now,
                                 result.valid_until, headers=result.headers)
        else:
            entry = timeless(_encode(result))
        if store.data_version == version:  # else a fold landed while computing: keep it out
            cache.put(key, version, entry)
    return await _response(request, key, entry)


async def _response(request: web.Request, key: Hashable, entry: CachedAnswer) -> web.Response:
    headers = dict(entry.headers)
    body = entry.body
    if len(body) >= GZIP_MIN_BYTES:
        headers["Vary"] = "Accept-Encoding"
        if accepts_gzip(request.headers.get("Accept-Encoding", "")):
            if entry.gzipped is None:
                request.app[ANSWER_CACHE].add_gzipped(key, entry, await _gzip(body))
            body = entry.gzipped
            headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, content_type="application/json", headers=headers)


async def _gzip(body: bytes) -> bytes:
    if len(body) <= INLINE_GZIP_MAX_BYTES:
        return gzip.compress(body, GZIP_LEVEL, mtime=0)
    return await asyncio.to_thread(gzip.compress, body, GZIP_LEVEL, mtime=0)
