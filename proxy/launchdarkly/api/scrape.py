"""The LaunchDarkly families of a scrape: write outcomes, replays and refreshes (counters of this
process), queued writes and dead letters (read from the store)."""

from __future__ import annotations

from aiohttp import web

from proxy.api.state import STORE
from proxy.launchdarkly.state import LD_STATS
from proxy.launchdarkly.store import queue
from proxy.observability.exposition import family


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
    store = app[STORE]
    if store.writer is None:
        return lines
    report = store.on_writer(queue.status_report)
    lines += family("metrics_proxy_launchdarkly_queued_writes", "gauge",
                    "LaunchDarkly writes waiting to be replayed, by project",
                    [((("project", p),), e["queued"]) for p, e in report["projects"].items()])
    lines += family("metrics_proxy_launchdarkly_dead_letters", "gauge",
                    "Queued LaunchDarkly writes the upstream refused, by project",
                    [((("project", p),), e["dead_letters"]) for p, e in report["projects"].items()])
    return lines
