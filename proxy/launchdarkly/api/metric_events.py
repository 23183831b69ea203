"""GET /api/v2/metrics/{projectKey}/{metricKey}/events?hoursBack=N: the proxy's own extension (no
LaunchDarkly API has it): the custom events counted against a metric, per hour and environment.

An event counts for a metric when its `key` is the metric's eventKey, it came for an environment of
the metric's project, and it arrived once the metric was defined. The stored payloads are cut
before the answer, so it covers every event acknowledged so far."""

from __future__ import annotations

import json

from aiohttp import web

from proxy.api.errors import unavailable
from proxy.api.params import query_int
from proxy.api.render import json_answer
from proxy.launchdarkly.api.common import authorize, key, read
from proxy.launchdarkly.errors import invalid, not_found
from proxy.launchdarkly.schemas.events import MetricEventCounts, MetricEventHour
from proxy.launchdarkly.state import LD_EVENTS
from proxy.launchdarkly.store import events as event_store
from proxy.launchdarkly.store import resources
from proxy.storage import StorageUnavailable

PATH = "/api/v2/metrics/{projectKey}/{metricKey}/events"
DEFAULT_HOURS_BACK = 24
MAX_HOURS_BACK = 24 * 90


async def metric_events(request: web.Request) -> web.Response:
    authorize(request)
    project, metric = key(request, "projectKey"), key(request, "metricKey")
    hours_back = query_int(request, "hoursBack", DEFAULT_HOURS_BACK, minimum=1)
    if hours_back > MAX_HOURS_BACK:
        raise invalid(f"hoursBack must be at most {MAX_HOURS_BACK}")
    doc = await read(request, resources.metric_doc, project, metric)
    if doc is None:
        raise not_found(f"metric {metric!r} of project {project!r}")
    forwarder = request.app[LD_EVENTS]
    try:
        await forwarder.catch_up()
    except StorageUnavailable as exc:
        raise unavailable(f"the store cannot write now: {exc}", 5) from None
    now = forwarder.clock.now()
    since = int(now // 3600 * 3600) - (hours_back - 1) * 3600
    rows = await read(request, event_store.metric_event_hours, project, metric, since)
    parsed = json.loads(doc)
    numeric = bool(parsed.get("isNumeric"))
    items = [MetricEventHour(hour=hour * 1000, environment=env, count=count, sum=value if numeric else None)
             for hour, env, count, value in rows]
    return json_answer(MetricEventCounts(
        projectKey=project, metricKey=metric, eventKey=parsed.get("eventKey"), isNumeric=numeric,
        hoursBack=hours_back, totalCount=sum(i.count for i in items),
        totalSum=sum(i.sum or 0.0 for i in items) if numeric else None, items=items))


def routes() -> list[web.RouteDef]:
    return [web.get(PATH, metric_events)]
