"""Typed application state of the Unleash room: the AppKeys its handlers read their collaborators from."""

from __future__ import annotations

from aiohttp import web

from proxy.forwarding.stats import ForwarderStats
from proxy.unleash.auth import Authenticator
from proxy.unleash.features.cache import FeatureCache
from proxy.unleash.upstream.forwarder import Forwarder
from proxy.upstream.client import UpstreamClient

AUTH = web.AppKey("auth", Authenticator)
FORWARDER_STATS = web.AppKey("forwarder_stats", ForwarderStats)
FORWARDER = web.AppKey("forwarder", Forwarder)  # only set when [upstream] is configured
UPSTREAM = web.AppKey("upstream", UpstreamClient)  # only set when [upstream] is configured
FEATURE_CACHE = web.AppKey("feature_cache", FeatureCache)
# The source of feature documents (proxy.unleash.feature_source.FeatureSource) or None; typed
# loosely because lifecycle imports this module.
FEATURE_SOURCE = web.AppKey("feature_source", object)
