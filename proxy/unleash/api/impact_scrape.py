"""GET /internal-backstage/impact/metrics: the merged impact metrics in Prometheus text format.

Each series carries its own labels plus `appName` and `environment` (unless the SDK set those
labels itself), so the same metric from two apps stays two series.
"""

from __future__ import annotations

import json
from itertools import groupby

from aiohttp import web

from proxy.api.state import STORE
from proxy.observability.exposition import format_value, header, label_text, text
from proxy.observability.telemetry import CONTENT_TYPE
from proxy.storage.journal import ImpactRow
from proxy.storage.usage.impact import merge


def _exposed_labels(environment: str, row: ImpactRow) -> tuple[tuple[str, str], ...]:
    labels = {"appName": row.app_name, "environment": environment}
    labels.update(json.loads(row.labels))
    return tuple(sorted(labels.items()))


def _family_lines(name: str, rows: list[tuple[str, ImpactRow]]) -> list[str]:
    kind = rows[0][1].kind
    series: dict[tuple[tuple[str, str], ...], ImpactRow] = {}
    for environment, row in rows:
        if row.kind != kind:
            continue  # one name, one type: later rows of another type are not shown
        key = _exposed_labels(environment, row)
        series[key] = merge(series[key], row) if key in series else row
    lines = header(name, kind, rows[0][1].help or f"Impact metric {name}")
    for labels, row in series.items():
        if kind == "histogram":
            for le, count in row.buckets or []:
                lines.append(f"{name}_bucket{label_text((*labels, ('le', le)))} {count}")
            lines.append(f"{name}_sum{label_text(labels)} {format_value(row.sum)}")
            lines.append(f"{name}_count{label_text(labels)} {row.count}")
        else:
            lines.append(f"{name}{label_text(labels)} {format_value(row.value)}")
    return lines


async def impact_metrics(request: web.Request) -> web.Response:
    store = request.app[STORE]
    lines: list[str] = []
    if store.writer is not None:
        for name, group in groupby(await store.impact_series(), key=lambda pair: pair[1].name):
            lines += _family_lines(name, list(group))
    return web.Response(body=text(lines), headers={"Content-Type": CONTENT_TYPE})


def routes() -> list[web.RouteDef]:
    return [web.get("/internal-backstage/impact/metrics", impact_metrics)]
