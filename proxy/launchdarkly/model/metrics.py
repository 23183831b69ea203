"""Metrics: the rules a MetricPost obeys beyond its types, and the representation built from it
(a new metric, a patched one), as stored and answered."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
from msgspec import UNSET

from proxy.launchdarkly.errors import invalid
from proxy.launchdarkly.schemas.common import Link, links
from proxy.launchdarkly.schemas.metrics import (
    MetricDataSourceRef,
    MetricListingRep,
    MetricPost,
    MetricRep,
    Modification,
)

# The data source of a metric posted without one (LaunchDarkly's own events).
DEFAULT_DATA_SOURCE = MetricDataSourceRef(key="launchdarkly")
_decode_rep = msgspec.json.Decoder(MetricRep).decode
_encode = msgspec.json.Encoder().encode


def new_id() -> str:
    """A 24-hex-digit id, as LaunchDarkly's `_id` and `_versionId` look."""
    return uuid.uuid4().hex[:24]


def check(post: MetricPost) -> None:
    """The rules LaunchDarkly documents per kind; a 400 naming the field that breaks one."""
    if post.kind == "click":
        if not post.selector:
            raise invalid("`selector` is required for a click metric")
        if not post.urls:
            raise invalid("`urls` is required for a click metric")
    elif post.kind == "pageview":
        if not post.urls:
            raise invalid("`urls` is required for a pageview metric")
    elif post.kind == "custom":
        if post.isNumeric is UNSET:
            raise invalid("`isNumeric` is required for a custom metric")
        if not post.eventKey:
            raise invalid("`eventKey` is required for a custom metric")
        if post.isNumeric and post.successCriteria is UNSET:
            raise invalid("`successCriteria` is required for a numeric custom metric")
    if post.percentileValue is not UNSET and post.analysisType != "percentile":
        raise invalid("`percentileValue` is only for `analysisType` percentile")
    if post.analysisType == "percentile" and post.percentileValue is UNSET:
        raise invalid("`percentileValue` is required when `analysisType` is percentile")


def metric_path(project: str, key: str) -> str:
    return f"/api/v2/metrics/{project}/{key}"


def iso_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


def _fields(post: MetricPost) -> dict[str, Any]:
    return {name: value for name, value in msgspec.structs.asdict(post).items()
            if value is not UNSET and name != "key"}


def build(project: str, post: MetricPost, now: float, *, id: str, created: int, version: int) -> MetricRep:
    fields = _fields(post)
    fields["name"] = fields.get("name") or post.key
    fields["tags"] = fields.get("tags", [])
    fields["dataSource"] = fields.get("dataSource", DEFAULT_DATA_SOURCE)
    return MetricRep(
        id=id, versionId=new_id(), version=version, key=post.key, creationDate=created,
        links=links(metric_path(project, post.key), f"/api/v2/metrics/{project}"),
        site=Link(href=f"/projects/{project}/metrics/{post.key}/details", type="text/html"),
        lastModified=Modification(date=iso_time(now)), **fields,
    )


def new_metric(project: str, post: MetricPost, now: float) -> MetricRep:
    return build(project, post, now, id=new_id(), created=int(now * 1000), version=1)


def decode(doc: bytes) -> MetricRep:
    return _decode_rep(doc)


def encode(rep: MetricRep) -> bytes:
    return _encode(rep)


def patched(project: str, current: MetricRep, post: MetricPost, now: float) -> MetricRep:
    """`current` with the fields of `post`: the next version, under a new version id."""
    return build(project, post, now, id=current.id, created=current.creationDate, version=(current.version or 1) + 1)


def listing(rep: MetricRep) -> MetricListingRep:
    """The summary representation of a metric (the detail-only fields left out)."""
    fields = {f: getattr(rep, f) for f in MetricListingRep.__struct_fields__}
    return MetricListingRep(**fields)

