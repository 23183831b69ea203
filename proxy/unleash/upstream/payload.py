"""Bulk request bodies for Unleash's /client/metrics/bulk: items, size-bounded chunks, encoding.

Each item is encoded from the Structs that validate inbound bulk posts (SentApplication, SentMetric,
SentImpactMetric refine BulkApplication, BulkMetric and ImpactMetric for what the proxy writes), so
what the proxy sends is what it would accept. Items are stored in the outbox as the exact JSON text that goes on the wire, so a resent batch is
byte-for-byte the body that was sent before, and a body's size is known before it is cut.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

import msgspec

from proxy.storage.journal import ImpactRow
from proxy.storage.outbox import OutboxItem
from proxy.unleash.schemas.client import SentApplication, SentMetric
from proxy.unleash.schemas.impact import HistogramBucket, ImpactSample, SentImpactMetric
from proxy.unleash.store.pending import InstanceRow, PendingImpact, PendingRow

_encode = msgspec.json.Encoder().encode
_decode_impact = msgspec.msgpack.Decoder(ImpactRow).decode
_decode_json_list = msgspec.json.Decoder(list[str | None]).decode
_decode_variants = msgspec.json.Decoder(dict[str, int]).decode
_decode_labels = msgspec.json.Decoder(dict[str, str | int | float]).decode
_decode_time = msgspec.json.Decoder(datetime).decode
_HEAD, _MIDDLE, _IMPACT, _TAIL = b'{"applications":[', b'],"metrics":[', b'],"impactMetrics":[', b"]}"
BODY_OVERHEAD = len(_HEAD) + len(_MIDDLE) + len(_IMPACT) + len(_TAIL)


@lru_cache(maxsize=256)
def hour_time(hour: int) -> datetime:
    """An hour as a UTC date-time: a backlog's rows share a few hours, and making each row's took
    most of the time spent building a cut's items."""
    return datetime.fromtimestamp(hour, tz=UTC)


def _started(inst: InstanceRow) -> datetime:
    # Stored as the RFC 3339 text ingest made of what the SDK sent; before any register, the
    # proxy's first sighting stands in.
    if inst.started:
        return _decode_time(b'"' + inst.started.encode() + b'"')
    return datetime.fromtimestamp(inst.created_at, tz=UTC)


def metric_item(environment: str, row: PendingRow) -> OutboxItem:
    body = SentMetric(
        featureName=row.feature_name, appName=row.app_name, environment=environment,
        timestamp=hour_time(row.hour), yes=row.yes, no=row.no,
        variants=_decode_variants(row.variants) if row.variants else {},
    )
    return OutboxItem("metric", _encode(body).decode(), row.yes, row.no)


def application_item(environment: str, inst: InstanceRow) -> OutboxItem:
    body = SentApplication(
        appName=inst.app_name, instanceId=inst.instance_id, environment=environment,
        interval=inst.interval if inst.interval is not None else 0, started=_started(inst),
        strategies=_decode_json_list(inst.strategies) if inst.strategies else [],
        sdkVersion=inst.sdk_version or None,
    )
    return OutboxItem("application", _encode(body).decode())


def impact_item(pending: PendingImpact) -> OutboxItem:
    """One merged impact-metric series in Unleash's impactMetrics shape (one sample each)."""
    row = _decode_impact(pending.row)
    labels = _decode_labels(row.labels)
    if row.kind == "histogram":
        buckets = [HistogramBucket(le="+Inf" if le == "+Inf" else float(le), count=n) for le, n in row.buckets or []]
        sample = ImpactSample(labels=labels, count=row.count, sum=row.sum, buckets=buckets)
    else:
        sample = ImpactSample(labels=labels, value=row.value)
    # appName as Unleash Edge sends it: a bulk body has no app of its own, and a proxy it is chained
    # to files an entry without one nowhere (Unleash accepts the field).
    body = SentImpactMetric(name=row.name, help=row.help, type=row.kind, samples=[sample], appName=row.app_name)
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

