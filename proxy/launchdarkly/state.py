"""Typed application state of the LaunchDarkly room: the AppKeys its handlers read their collaborators from."""

from __future__ import annotations

from aiohttp import web

from proxy.launchdarkly.auth import AccessTokens
from proxy.launchdarkly.credentials import EventCredentials
from proxy.launchdarkly.upstream.events import EventForwarder
from proxy.launchdarkly.upstream.stats import EventStats, WriteStats
from proxy.launchdarkly.upstream.writes import Writes

LD_AUTH = web.AppKey("launchdarkly_auth", AccessTokens)
LD_WRITES = web.AppKey("launchdarkly_writes", Writes)
LD_STATS = web.AppKey("launchdarkly_stats", WriteStats)
# The refresher of projects from the upstream (proxy.launchdarkly.upstream.refresh.Refresher) or
# None without an upstream; typed loosely as the Unleash room's feature source is.
LD_REFRESH = web.AppKey("launchdarkly_refresh", object)
LD_CREDENTIALS = web.AppKey("launchdarkly_credentials", EventCredentials)
LD_EVENT_STATS = web.AppKey("launchdarkly_event_stats", EventStats)
LD_EVENTS = web.AppKey("launchdarkly_events", EventForwarder)
