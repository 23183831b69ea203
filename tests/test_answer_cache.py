"""The answer cache's bounds, LRU order, version and time checks, and Accept-Encoding parsing."""

from __future__ import annotations

import pytest

from proxy.api.answer_cache import AnswerCache, CachedAnswer, timeless
from proxy.api.cached_read import accepts_gzip


def test_least_recently_used_goes_first_when_bytes_run_out():
    cache = AnswerCache(max_bytes=300, max_entries=10)
    for key in "abc":
        cache.put(key, 1, timeless(b"x" * 100))
    assert cache.get("a", 1, 0.0) is not None  # a is now the most recently used
    cache.put("d", 1, timeless(b"y" * 100))
    assert [k for k in "abcd" if cache.get(k, 1, 0.0) is not None] == ["a", "c", "d"]
    assert cache.bytes == 300 and cache.evictions == 1


def test_an_answer_larger_than_the_bound_is_not_kept_and_zero_keeps_nothing():
    cache = AnswerCache(max_bytes=100, max_entries=10)
    cache.put("big", 1, timeless(b"x" * 101))
    assert cache.get("big", 1, 0.0) is None and cache.bytes == 0
    off = AnswerCache(max_bytes=0, max_entries=10)
    off.put("a", 1, timeless(b"x"))
    assert len(off) == 0


def test_the_gzip_variant_counts_against_the_bound():
    cache = AnswerCache(max_bytes=250, max_entries=10)
    cache.put("a", 1, timeless(b"x" * 100))
    entry = timeless(b"y" * 100)
    cache.put("b", 1, entry)
    cache.add_gzipped("b", entry, b"z" * 50)
    assert cache.bytes == 250 and len(cache) == 2
    cache.add_gzipped("a", cache.get("a", 1, 0.0), b"z" * 60)  # 310 bytes: b is now the oldest
    assert cache.get("b", 1, 0.0) is None and cache.bytes == 160


def test_entry_bound():
    cache = AnswerCache(max_bytes=10_000, max_entries=2)
    for key in "abc":
        cache.put(key, 1, timeless(b"x"))
    assert len(cache) == 2 and cache.get("a", 1, 0.0) is None


def test_a_new_data_version_drops_everything_and_an_older_one_is_not_kept():
    cache = AnswerCache(max_bytes=10_000, max_entries=10)
    cache.put("a", 1, timeless(b"x"))
    assert cache.get("a", 2, 0.0) is None and len(cache) == 0
    cache.put("a", 1, timeless(b"computed from older data"))
    assert cache.get("a", 2, 0.0) is None


def test_an_entry_holds_from_its_computation_until_its_window_moves():
    cache = AnswerCache(max_bytes=10_000, max_entries=10)
    cache.put("w", 1, CachedAnswer(b"x", valid_from=100.0, valid_until=160.0))
    assert cache.get("w", 1, 99.9) is None  # an earlier clock reading: the window held more rows
    cache.put("w", 1, CachedAnswer(b"x", valid_from=100.0, valid_until=160.0))
    assert cache.get("w", 1, 100.0) is not None and cache.get("w", 1, 159.99) is not None
    assert cache.get("w", 1, 160.0) is None and len(cache) == 0


@pytest.mark.parametrize(("header", "allowed"), [
    ("gzip", True), ("gzip, deflate, br", True), ("GZIP;q=0.5", True), ("br;q=1.0, gzip;q=0.8", True),
    ("*", True), ("x-gzip", True), ("", False), ("identity", False), ("deflate, br", False),
    ("gzip;q=0", False), ("gzip;q=0.0, *", False), ("*;q=0", False), ("gzip;q=bad", False),
])
def test_accept_encoding(header, allowed):
    assert accepts_gzip(header) is allowed
