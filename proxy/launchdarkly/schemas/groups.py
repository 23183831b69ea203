"""Metric groups (beta): MetricGroupPost in, MetricGroupRep out."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, field

from proxy.launchdarkly.schemas.common import Key, Link, Name, Tags, Text
from proxy.launchdarkly.schemas.metrics import AnalysisType, DependentExperiment, MetricKind, UnitAggregation

GroupKind = Literal["funnel", "standard"]


class MetricInMetricGroupInput(Struct, kw_only=True):
    """A metric of the group, by key, with the name it has in the group."""

    key: Key
    nameInGroup: Name


class MetricGroupPost(Struct, kw_only=True):
    """A metric group to create. `metrics` is ordered (a funnel's steps); every key must be a metric
    of the project, once. Required as the official client (25.x) requires them."""

    key: Key
    name: Name
    kind: GroupKind
    maintainerId: Name
    tags: Tags
    metrics: Annotated[list[MetricInMetricGroupInput], Meta(min_length=1, max_length=50)]
    description: Text | UnsetType = UNSET


EDITABLE_GROUP_FIELDS = frozenset(f for f in MetricGroupPost.__struct_fields__ if f != "key")


class MemberSummary(Struct, kw_only=True):
    links: dict[str, Link] = field(name="_links")
    id: str = field(name="_id")
    role: str
    email: str
    firstName: str | UnsetType = UNSET
    lastName: str | UnsetType = UNSET


class MaintainerRep(Struct, kw_only=True):
    """Who maintains the group: a member (by id) or a team (by key)."""

    key: str
    kind: Literal["member", "team"]
    member: MemberSummary | UnsetType = field(default=UNSET, name="_member")


class MetricInGroupRep(Struct, kw_only=True):
    """A metric of the group as the group shows it: the metric's own fields and its name in the group."""

    key: str
    name: str
    kind: MetricKind
    links: dict[str, Link] = field(name="_links")
    versionId: str | UnsetType = field(default=UNSET, name="_versionId")
    isNumeric: bool | UnsetType = UNSET
    unitAggregationType: UnitAggregation | UnsetType = UNSET
    analysisType: AnalysisType | UnsetType = UNSET
    eventKey: str | UnsetType = UNSET
    nameInGroup: str | UnsetType = UNSET
    randomizationUnits: list[str] | UnsetType = UNSET


class MetricGroupRep(Struct, kw_only=True):
    """One metric group (also the list items)."""

    id: str = field(name="_id")
    key: str
    name: str
    kind: GroupKind
    links: dict[str, Link] = field(name="_links")
    tags: list[str]
    creationDate: int = field(name="_creationDate")  # Unix milliseconds
    lastModified: int = field(name="_lastModified")  # Unix milliseconds
    maintainer: MaintainerRep
    metrics: list[MetricInGroupRep]
    version: int = field(name="_version")
    description: str | UnsetType = UNSET
    experiments: list[DependentExperiment] | UnsetType = UNSET
    experimentCount: int | UnsetType = UNSET
    activeExperimentCount: int | UnsetType = UNSET
    activeGuardedRolloutCount: int | UnsetType = UNSET


class MetricGroupCollectionRep(Struct, kw_only=True):
    """A page of metric groups, with links to the other pages."""

    items: list[MetricGroupRep]
    links: dict[str, Link] = field(name="_links")
    totalCount: int
