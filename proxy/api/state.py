"""Typed application state shared by every room: the AppKeys of the parts below the vendors.

Each vendor keeps its own keys beside its code (proxy/unleash/state.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.api.answer_cache import AnswerCache
from proxy.clock import Clock
from proxy.config import Settings
from proxy.observability.telemetry import IngestStats
from proxy.storage import IngestSink, Store
from proxy.storage.database import StatusReader

# Lines of Prometheus text a room adds to every scrape, read from its own state at scrape time.
ScrapeSource = Callable[[], Awaitable[list[str]]]
# A vendor room's section of the operator status, a proxy/api/status/schemas.py VendorStatus, read
# through `reader` (the Store, or the database file opened read-only by `metrics-proxy status`) at
# `now`; `live` False when no running process is asked (the command reading the file).
StatusSource = Callable[[StatusReader, float, bool], Awaitable[Any]]
# Why the proxy is not ready, or None; every check must pass for /internal-backstage/ready.
ReadinessCheck = Callable[[], str | None]

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", Store)  # the primary's store: reads, folds, the outbox (not in ingest workers)
# Where ingest handlers commit: the primary's Store, or an ingest worker's own journal shard.
INGEST = web.AppKey("ingest", IngestSink)
INGEST_STATS = web.AppKey("ingest_stats", IngestStats)
REGISTRY = web.AppKey("prometheus_registry", CollectorRegistry)
ANSWER_CACHE = web.AppKey("answer_cache", AnswerCache)  # encoded read answers
SCRAPE_SOURCES = web.AppKey("scrape_sources", list)  # list[ScrapeSource]
READINESS_CHECKS = web.AppKey("readiness_checks", list)  # list[ReadinessCheck]
STATUS_SOURCES = web.AppKey("status_sources", list)  # list[StatusSource], one per vendor room
