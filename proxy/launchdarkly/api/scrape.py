"""The LaunchDarkly families of a scrape: write outcomes, replays and refreshes (counters of this
process), queued writes and dead letters (read from the store)."""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from proxy.api.state import STORE
from proxy.launchdarkly.model.payload import VENDOR as EVENTS_VENDOR
from proxy.launchdarkly.state import LD_EVENT_STATS, LD_EVENTS, LD_STATS
from proxy.launchdarkly.store import events as event_store
from proxy.launchdarkly.store import queue
from proxy.observability.exposition import family
from proxy.storage.outbox_status import queue_gauges


async def families(app: web.Application) -> list[str]:
    stats = app[LD_STATS]
    lines = family("metrics_proxy_launchdarkly_writes_total", "counter",
                   "LaunchDarkly API writes answered, by outcome: local (no upstream), upstream (relayed), "
                   "queued (upstream unreachable, 202 pending)",
                   [((("outcome", k),), v) for k, v in sorted(stats.writes.items())])
    lines += family("metrics_proxy_launchdarkly_replays_total", "counter",
                    "Queued LaunchDarkly writes settled on replay, by outcome: delivered, dead_letter",
                    [((("outcome", k),), v) for k, v in sorted(stats.replays.items())])
    lines += family("metrics_proxy_launchdarkly_refreshes_total", "counter",
                    "Refreshes of a project from LaunchDarkly, by outcome: ok, skipped (writes queued), failed",
                    [((("outcome", k),), v) for k, v in sorted(stats.refreshes.items())])
    lines += _event_families(app)
    store = app[STORE]
    if store.writer is None:
        return lines
    writes = store.on_writer(queue_gauges, queue.VENDOR)
    lines += family("metrics_proxy_launchdarkly_queued_writes", "gauge",
                    "LaunchDarkly writes waiting to be replayed, by project",
                    [((("project", p),), g.batches) for p, g in writes.items()])
    lines += family("metrics_proxy_launchdarkly_dead_letters", "gauge",
                    "Queued LaunchDarkly writes the upstream refused, by project",
                    [((("project", p),), g.dead_letters) for p, g in writes.items()])
    streams = store.on_writer(queue_gauges, EVENTS_VENDOR)
    lines += family("metrics_proxy_launchdarkly_event_batches", "gauge",
                    "Batches of SDK events waiting to be sent, by stream (environment:credential kind)",
                    [((("stream", s),), g.batches) for s, g in streams.items()])
    lines += family("metrics_proxy_launchdarkly_event_dead_letters", "gauge",
                    "SDK events LaunchDarkly refused for good, kept in dead_letters, by stream",
                    [((("stream", s),), g.dead_letters) for s, g in streams.items()])
    lines += family("metrics_proxy_launchdarkly_event_stream_paused", "gauge",
                    "1 while LaunchDarkly refuses a stream's credential (401/403/404); its events are kept",
                    [((("stream", s),), 1 if g.paused else 0) for s, g in streams.items()])
    totals = store.on_writer(event_store.metric_event_totals)
    lines += family("metrics_proxy_launchdarkly_metric_events_total", "counter",
                    "Custom events counted against a metric (its eventKey), by project, metric and environment",
                    [((("project", p), ("metric", m), ("environment", e)), c) for p, m, e, c, _ in totals])
    lines += family("metrics_proxy_launchdarkly_metric_event_value_total", "counter",
                    "The sum of metricValue of the custom events counted against a numeric metric",
                    [((("project", p), ("metric", m), ("environment", e)), v) for p, m, e, _, v in totals if v])
    return lines


def _event_families(app: web.Application) -> list[str]:
    stats = app[LD_EVENT_STATS]
    delivery = app[LD_EVENTS].delivery_stats
    by_kind = [("payloads", "SDK event posts and metric imports stored, by credential kind", stats.payloads),
               ("events", "events in the stored posts, by credential kind", stats.events),
               ("duplicate_payloads", "posts whose X-LaunchDarkly-Payload-ID was stored before (202, not "
                                      "stored again), by credential kind", stats.duplicates),
               ("refused_payloads", "posts refused as bad bodies (400), by credential kind", stats.refused)]
    lines: list[str] = []
    for name, help_text, counter in by_kind:
        lines += family(f"metrics_proxy_launchdarkly_{name}_total", "counter", help_text,
                        [((("kind", k),), v) for k, v in sorted(counter.items())])
    space = app[STORE].space
    dropped = stats.dropped + (space.dropped_payloads if space is not None else Counter())
    lines += family("metrics_proxy_launchdarkly_events_dropped_total", "counter",
                    "SDK events given up, by reason (rejected_400, rejected_413: dead-lettered; "
                    "overflow_drop_oldest: the store was full, a stored payload counting as one)",
                    [((("reason", k),), v) for k, v in sorted(dropped.items())])
    lines += family("metrics_proxy_launchdarkly_event_requests_total", "counter",
                    "Requests to events_url, by answer (status, network, ambiguous)",
                    [((("status", k),), v) for k, v in sorted(delivery.requests.items())])
    lines += family("metrics_proxy_launchdarkly_event_retries_total", "counter",
                    "Retries of event batches (429, 5xx, network)", [((), delivery.retries)])
    lines += family("metrics_proxy_launchdarkly_event_ambiguous_batches_total", "counter",
                    "Event batches whose send had no answer after the body went out: resent with the same "
                    "X-LaunchDarkly-Payload-ID", [((), delivery.ambiguous_batches)])
    return lines
