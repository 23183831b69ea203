"""Typed application state: the AppKeys every handler reads its collaborators from."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.api.answer_cache import AnswerCache
from proxy.auth import Authenticator
from proxy.clock import Clock
from proxy.config import Settings
from proxy.forwarding.stats import ForwarderStats
from proxy.observability.telemetry import IngestStats
from proxy.storage import Store
from proxy.unleash.features.cache import FeatureCache
from proxy.unleash.upstream.forwarder import Forwarder

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", Store)
AUTH = web.AppKey("auth", Authenticator)
INGEST_STATS = web.AppKey("ingest_stats", IngestStats)
REGISTRY = web.AppKey("prometheus_registry", CollectorRegistry)
FORWARDER_STATS = web.AppKey("forwarder_stats", ForwarderStats)
FORWARDER = web.AppKey("forwarder", Forwarder)  # only set when [upstream] is configured
FEATURE_CACHE = web.AppKey("feature_cache", FeatureCache)
ANSWER_CACHE = web.AppKey("answer_cache", AnswerCache)  # encoded read answers
# The source of feature documents (proxy.unleash.features.lifecycle.FeatureSource) or None; typed loosely
# because lifecycle imports this module.
FEATURE_SOURCE = web.AppKey("feature_source", object)
