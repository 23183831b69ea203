"""Turning the `impactMetrics` of a usage post into journal rows. Pure functions: no HTTP, no SQL.

Names and label names are sanitised as Unleash does (characters outside [a-zA-Z0-9_] become `_`;
a name that then does not start with a letter or `_` is dropped). Entries that do not decode, and
samples that make no sense (a negative counter increment, a histogram without buckets), are
dropped and counted by the caller: Unleash too logs such failures and keeps the flag metrics.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import msgspec

from proxy.observability.exposition import format_value
from proxy.storage.journal import ImpactRow, JournalEntry
from proxy.storage.usage.impact import SeriesGuard
from proxy.unleash.api.custom import sanitise
from proxy.unleash.schemas.impact import ImpactMetric, ImpactSample
from proxy.unleash.store.custom_metrics import labels_key

_entries = msgspec.json.Decoder(list[msgspec.Raw])
_metric = msgspec.json.Decoder(ImpactMetric)


def _label_text(value: str | int | float) -> str:
    return value if isinstance(value, str) else format_value(value)


def _le_text(le: float | str) -> str:
    return "+Inf" if le == "+Inf" or (isinstance(le, float) and math.isinf(le) and le > 0) else format_value(float(le))


def _usable_label(name: str, kind: str) -> bool:
    # `__` names are Prometheus' own; `le` is the bucket bound of a histogram.
    if not (name[:1].isalpha() or name.startswith("_")) or name.startswith("__"):
        return False
    return not (kind == "histogram" and name == "le")


def _sample_row(metric: ImpactMetric, name: str, app: str, sample: ImpactSample) -> ImpactRow | None:
    labels = {sanitise(k): _label_text(v) for k, v in (sample.labels or {}).items()}
    if not all(_usable_label(k, metric.type) for k in labels):
        return None
    base = dict(app_name=app, name=name, kind=metric.type, help=metric.help, labels=labels_key(labels))
    if metric.type == "histogram":
        if sample.count is None or sample.sum is None or not sample.buckets or not math.isfinite(sample.sum):
            return None
        bounds = sorted(sample.buckets, key=lambda b: math.inf if b.le == "+Inf" else b.le)
        buckets = [(_le_text(b.le), b.count) for b in bounds]
        if buckets[-1][0] != "+Inf":
            buckets.append(("+Inf", sample.count))
        return ImpactRow(**base, count=sample.count, sum=sample.sum, buckets=buckets)
    if sample.value is None or not math.isfinite(sample.value):
        return None
    if metric.type == "counter" and sample.value < 0:
        return None
    return ImpactRow(**base, value=sample.value)


def impact_rows(raw: msgspec.Raw, app_name: str | None) -> tuple[dict[str | None, list[ImpactRow]], int]:
    """Rows by the environment an entry names (None if it names none), and how many were dropped."""
    if not raw or bytes(raw) == b"null":
        return {}, 0
    # RecursionError: an entry nested about as deep as the body decoder allows, decoded here a few
    # stack frames deeper (api/body.py refuses deeper bodies whole).
    try:
        entries = _entries.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return {}, 1
    rows: dict[str | None, list[ImpactRow]] = defaultdict(list)
    dropped = 0
    for entry in entries:
        try:
            metric = _metric.decode(entry)
        except (msgspec.DecodeError, RecursionError):
            dropped += 1
            continue
        name = sanitise(metric.name)
        app = metric.appName or app_name
        if not (name[:1].isalpha() or name.startswith("_")) or not app:
            dropped += len(metric.samples) or 1
            continue
        for sample in metric.samples:
            row = _sample_row(metric, name, app, sample)
            if row is None:
                dropped += 1
            else:
                rows[metric.environment].append(row)
    return rows, dropped


def attach_impact(entries: list[JournalEntry], raw: msgspec.Raw, app_name: str | None,
                  environment: str | None, received: float, guard: SeriesGuard, limit: int) -> Counter[str]:
    """Add a post's impact rows to its journal entries; returns dropped samples by reason.

    With `environment` set (token auth) every row belongs to the token's environment; in open
    mode an entry's own `environment` is kept (else "default"). New series beyond `limit` are
    dropped: a rogue SDK must not grow the table and the scrape without bound."""
    by_env, invalid = impact_rows(raw, app_name)
    dropped: Counter[str] = Counter(impact_metric_invalid=invalid)
    for named_env, all_rows in by_env.items():
        env = environment or named_env or "default"
        rows, refused = guard.admit(env, all_rows, limit)
        dropped["impact_series_limit"] += refused
        if not rows:
            continue
        target = next((e for e in entries if e.environment == env), None)
        if target is None:
            target = JournalEntry(env, received)
            entries.append(target)
        target.impact = [*target.impact, *rows]
    return dropped
