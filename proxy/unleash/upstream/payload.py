"""Bulk request bodies for Unleash's /client/metrics/bulk: items, size-bounded chunks, encoding.

Items are stored in the outbox as the exact JSON text that goes on the wire, so a resent batch is
byte-for-byte the body that was sent before, and a body's size is known before it is cut.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache

import msgspec

from proxy.storage.journal import ImpactRow
from proxy.storage.outbox import OutboxItem
from proxy.unleash.store.pending import InstanceRow, PendingImpact, PendingRow

_encode = msgspec.json.encode
_decode_impact = msgspec.msgpack.Decoder(ImpactRow).decode
_HEAD, _MIDDLE, _IMPACT, _TAIL = b'{"applications":[', b'],"metrics":[', b'],"impactMetrics":[', b"]}"
BODY_OVERHEAD = len(_HEAD) + len(_MIDDLE) + len(_IMPACT) + len(_TAIL)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@lru_cache(maxsize=256)
def hour_stamp(hour: int) -> str:
    """iso() of an hour: a backlog's rows share a few hours, and formatting each row's took most
    of the time spent building a cut's items."""
    return iso(hour)


def metric_item(environment: str, row: PendingRow) -> OutboxItem:
    body = {
        "featureName": row.feature_name,
        "appName": row.app_name,
        "environment": environment,
        "timestamp": hour_stamp(row.hour),
        "yes": row.yes,
        "no": row.no,
        "variants": json.loads(row.variants) if row.variants else {},
    }
    return OutboxItem("metric", _encode(body).decode(), row.yes, row.no)


def application_item(environment: str, inst: InstanceRow) -> OutboxItem:
    # Unleash validates bulk applications with its register schema and rejects the whole request
    # when `started`, `interval` or `strategies` is missing; metrics posts do not carry them.
    body: dict = {
        "appName": inst.app_name,
        "instanceId": inst.instance_id,
        "environment": environment,
        "interval": inst.interval if inst.interval is not None else 0,
        "started": inst.started or iso(inst.created_at),
        "strategies": json.loads(inst.strategies) if inst.strategies else [],
    }
    if inst.sdk_version:
        body["sdkVersion"] = inst.sdk_version
    return OutboxItem("application", _encode(body).decode())


def impact_item(pending: PendingImpact) -> OutboxItem:
    """One merged impact-metric series in Unleash's impactMetrics shape (one sample each)."""
    row = _decode_impact(pending.row)
    sample: dict = {"labels": json.loads(row.labels)}
    if row.kind == "histogram":
        sample.update(count=row.count, sum=row.sum,
                      buckets=[{"le": "+Inf" if le == "+Inf" else float(le), "count": n} for le, n in row.buckets or []])
    else:
        sample["value"] = row.value
    body = {"name": row.name, "help": row.help, "type": row.kind, "samples": [sample]}
    return OutboxItem("impact", _encode(body).decode())


def body_size(items: list[OutboxItem]) -> int:
    """An upper bound (by at most 2 bytes) of the encoded body: each item plus one comma."""
    return BODY_OVERHEAD + sum(len(i.item.encode()) + 1 for i in items)


def chunk(items: list[OutboxItem], max_bytes: int) -> list[list[OutboxItem]]:
    """Greedy, order-keeping cut into bodies of at most max_bytes. An item too big on its own gets
    a chunk of its own (the upstream's 413 then dead-letters it)."""
    chunks: list[list[OutboxItem]] = []
    current: list[OutboxItem] = []
    size = BODY_OVERHEAD
    for item in items:
        item_size = len(item.item.encode()) + 1
        if current and size + item_size > max_bytes:
            chunks.append(current)
            current, size = [], BODY_OVERHEAD
        current.append(item)
        size += item_size
    if current:
        chunks.append(current)
    return chunks


def make_chunker(environment: str, max_bytes: int):
    def chunker(pending: list[PendingRow], instances: list[InstanceRow],
                impact: list[PendingImpact] = ()) -> list[list[OutboxItem]]:
        items = [application_item(environment, i) for i in instances]
        items += [metric_item(environment, r) for r in pending]
        items += [impact_item(r) for r in impact]
        return chunk(items, max_bytes)

    return chunker


def encode_body(items: list[OutboxItem]) -> bytes:
    apps = ",".join(i.item for i in items if i.kind == "application").encode()
    metrics = ",".join(i.item for i in items if i.kind == "metric").encode()
    impact = ",".join(i.item for i in items if i.kind == "impact").encode()
    if not impact:
        return _HEAD + apps + _MIDDLE + metrics + _TAIL
    return _HEAD + apps + _MIDDLE + metrics + _IMPACT + impact + _TAIL

