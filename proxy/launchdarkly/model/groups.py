"""Metric groups: the rules of a MetricGroupPost against the project's metrics, and the
representation built from it. A group shows each metric's current name, kind and event fields:
they are filled in from the metrics on every answer (`with_metrics`)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from msgspec import UNSET

from proxy.launchdarkly.errors import invalid
from proxy.launchdarkly.model import metrics as metric_shapes
from proxy.launchdarkly.schemas.common import links
from proxy.launchdarkly.schemas.groups import MaintainerRep, MetricGroupPost, MetricGroupRep, MetricInGroupRep
from proxy.launchdarkly.schemas.metrics import MetricRep

_decode = msgspec.json.Decoder(MetricGroupRep).decode
_encode = msgspec.json.Encoder().encode


def group_path(project: str, key: str) -> str:
    return f"/api/v2/projects/{project}/metric-groups/{key}"


def check(post: MetricGroupPost, metrics: dict[str, MetricRep]) -> None:
    """Every metric once, each a metric of the project; a funnel names each step (nameInGroup)."""
    seen = set()
    for position, member in enumerate(post.metrics):
        if member.key in seen:
            raise invalid(f"metric {member.key!r} is in the group twice (at /metrics/{position})")
        seen.add(member.key)
        if member.key not in metrics:
            raise invalid(f"metric {member.key!r} (at /metrics/{position}) is not a metric of this project")
        if post.kind == "funnel" and not member.nameInGroup:
            raise invalid(f"`nameInGroup` is required for every metric of a funnel (at /metrics/{position})")


def _member(project: str, metric: MetricRep, name_in_group: str | msgspec.UnsetType) -> MetricInGroupRep:
    return MetricInGroupRep(
        key=metric.key, name=metric.name, kind=metric.kind,
        links=links(metric_shapes.metric_path(project, metric.key), f"/api/v2/metrics/{project}"),
        versionId=metric.versionId, isNumeric=metric.isNumeric, unitAggregationType=metric.unitAggregationType,
        analysisType=metric.analysisType, eventKey=metric.eventKey, nameInGroup=name_in_group,
        randomizationUnits=metric.randomizationUnits,
    )


def build(project: str, post: MetricGroupPost, metrics: dict[str, MetricRep], now: float, *,
          id: str, created: int, version: int) -> MetricGroupRep:
    return MetricGroupRep(
        id=id, key=post.key, name=post.name, kind=post.kind, description=post.description,
        links=links(group_path(project, post.key), f"/api/v2/projects/{project}"),
        tags=post.tags, creationDate=created, lastModified=int(now * 1000),
        maintainer=MaintainerRep(key=post.maintainerId, kind="member"),
        metrics=[_member(project, metrics[m.key], m.nameInGroup) for m in post.metrics],
        version=version,
    )


def new_group(project: str, post: MetricGroupPost, metrics: dict[str, MetricRep], now: float) -> MetricGroupRep:
    return build(project, post, metrics, now, id=str(uuid.uuid4()), created=int(now * 1000), version=1)


def patched(project: str, current: MetricGroupRep, post: MetricGroupPost, metrics: dict[str, MetricRep],
            now: float) -> MetricGroupRep:
    return build(project, post, metrics, now, id=current.id, created=current.creationDate, version=current.version + 1)


def editable_document(rep: MetricGroupRep) -> dict[str, Any]:
    """The group as a patch sees it: its representation, with `maintainerId` and `metrics` in the
    shape a MetricGroupPost gives them."""
    doc = msgspec.to_builtins(rep)
    doc["maintainerId"] = rep.maintainer.key
    doc["metrics"] = [{"key": m.key, **({"nameInGroup": m.nameInGroup} if m.nameInGroup is not UNSET else {})}
                      for m in rep.metrics]
    return doc


def with_metrics(project: str, rep: MetricGroupRep, metrics: dict[str, MetricRep]) -> MetricGroupRep:
    """`rep` showing the current fields of its metrics (those deleted upstream keep what was stored)."""
    members = [_member(project, metrics[m.key], m.nameInGroup) if m.key in metrics else m for m in rep.metrics]
    return msgspec.structs.replace(rep, metrics=members)


def decode(doc: bytes) -> MetricGroupRep:
    return _decode(doc)


def encode(rep: MetricGroupRep) -> bytes:
    return _encode(rep)


def metric_keys(rep: MetricGroupRep) -> list[str]:
    return [m.key for m in rep.metrics]
