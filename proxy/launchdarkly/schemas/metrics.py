"""Metrics (GA): MetricPost in, MetricRep (detail) and MetricListingRep (list items) out."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, field

from proxy.launchdarkly.schemas.common import Key, Link, Name, Tags, Text

MetricKind = Literal["pageview", "click", "custom"]
SuccessCriteria = Literal["HigherThanBaseline", "LowerThanBaseline"]
UnitAggregation = Literal["average", "sum"]
AnalysisType = Literal["mean", "percentile"]
Strings = Annotated[list[Annotated[str, Meta(max_length=1024)]], Meta(max_length=100)]


class UrlPost(Struct, kw_only=True):
    """A URL matcher of a click or pageview metric."""

    kind: Literal["exact", "canonical", "substring", "regex"] | UnsetType = UNSET
    url: Text | UnsetType = UNSET
    substring: Text | UnsetType = UNSET
    pattern: Text | UnsetType = UNSET


class MetricEventDefault(Struct, kw_only=True):
    """What a unit that sent no event counts as: `value` (only 0 is supported)."""

    disabled: bool | UnsetType = UNSET
    value: Annotated[float, Meta(ge=0, le=0)] | UnsetType = UNSET


class MetricDataSourceRef(Struct, kw_only=True):
    key: Name
    environmentKey: Name | UnsetType = UNSET
    name: Name | UnsetType = field(default=UNSET, name="_name")
    integrationKey: Name | UnsetType = field(default=UNSET, name="_integrationKey")


class EventFilter(Struct, kw_only=True):
    """Which events count: by context attribute, event property, or a group of filters."""

    type: Literal["contextAttribute", "eventProperty", "group"]
    op: Name
    values: Annotated[list[Any], Meta(max_length=1000)]
    negate: bool
    attribute: Name | UnsetType = UNSET
    contextKind: Name | UnsetType = UNSET


class MetricPost(Struct, kw_only=True):
    """A metric to create. Beyond the types: click needs selector and urls, pageview urls, custom
    isNumeric and eventKey, numeric custom successCriteria; percentileValue only with
    analysisType percentile (proxy/launchdarkly/api/rules.py). Unknown fields are ignored."""

    key: Key
    kind: MetricKind
    name: Name | UnsetType = UNSET
    description: Text | UnsetType = UNSET
    selector: Text | UnsetType = UNSET
    urls: Annotated[list[UrlPost], Meta(max_length=100)] | UnsetType = UNSET
    isNumeric: bool | UnsetType = UNSET
    unit: Name | UnsetType = UNSET
    eventKey: Name | UnsetType = UNSET
    successCriteria: SuccessCriteria | UnsetType = UNSET
    tags: Tags | UnsetType = UNSET
    randomizationUnits: Strings | UnsetType = UNSET
    maintainerId: Name | UnsetType = UNSET
    unitAggregationType: UnitAggregation | UnsetType = UNSET
    analysisType: AnalysisType | UnsetType = UNSET
    percentileValue: Annotated[int, Meta(ge=0, le=100)] | UnsetType = UNSET
    eventDefault: MetricEventDefault | UnsetType = UNSET
    dataSource: MetricDataSourceRef | UnsetType = UNSET
    filters: EventFilter | UnsetType = UNSET


# The fields of MetricPost a JSON Patch may change (key names the resource: it is not editable).
EDITABLE_METRIC_FIELDS = frozenset(f for f in MetricPost.__struct_fields__ if f != "key")


class Modification(Struct, kw_only=True):
    date: str  # RFC 3339 date-time


class DependentMetricGroup(Struct, kw_only=True):
    """A metric group that uses the metric (expand=metricGroups)."""

    key: str
    name: str
    kind: Literal["funnel", "standard"]
    links: dict[str, Link] = field(name="_links")


class DependentExperiment(Struct, kw_only=True):
    """An experiment that uses the metric; the proxy knows none, so lists of them are empty."""

    key: str
    name: str
    environmentId: str
    environmentKey: str
    creationDate: int
    links: dict[str, Link] = field(name="_links")
    archivedDate: int | UnsetType = UNSET


class MetricListingRep(Struct, kw_only=True):
    """A metric in a list: the summary representation."""

    id: str = field(name="_id")
    versionId: str = field(name="_versionId")
    key: str
    name: str
    kind: MetricKind
    links: dict[str, Link] = field(name="_links")
    tags: list[str]
    creationDate: int = field(name="_creationDate")  # Unix milliseconds
    dataSource: MetricDataSourceRef
    version: int | UnsetType = field(default=UNSET, name="_version")
    site: Link | UnsetType = field(default=UNSET, name="_site")
    lastModified: Modification | UnsetType = UNSET
    maintainerId: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    category: str | UnsetType = UNSET
    isNumeric: bool | UnsetType = UNSET
    successCriteria: SuccessCriteria | UnsetType = UNSET
    unit: str | UnsetType = UNSET
    eventKey: str | UnsetType = UNSET
    randomizationUnits: list[str] | UnsetType = UNSET
    filters: EventFilter | UnsetType = UNSET
    unitAggregationType: UnitAggregation | UnsetType = UNSET
    analysisType: AnalysisType | UnsetType = UNSET
    percentileValue: int | UnsetType = UNSET
    eventDefault: MetricEventDefault | UnsetType = UNSET
    selector: str | UnsetType = UNSET
    urls: list[UrlPost] | UnsetType = UNSET
    lastSeen: int | UnsetType = UNSET
    archived: bool | UnsetType = UNSET
    archivedAt: int | UnsetType = UNSET
    experimentCount: int | UnsetType = UNSET
    metricGroupCount: int | UnsetType = UNSET
    activeExperimentCount: int | UnsetType = UNSET
    activeGuardedRolloutCount: int | UnsetType = UNSET
    attachedFlagCount: int | UnsetType = field(default=UNSET, name="_attachedFlagCount")


class MetricRep(MetricListingRep, kw_only=True):
    """One metric: the detailed representation (what GET of the metric, POST and PATCH answer)."""

    experiments: list[DependentExperiment] | UnsetType = UNSET
    metricGroups: list[DependentMetricGroup] | UnsetType = UNSET
    isActive: bool | UnsetType = UNSET


class MetricCollectionRep(Struct, kw_only=True):
    """A page of metrics, with links to the other pages."""

    items: list[MetricListingRep]
    links: dict[str, Link] = field(name="_links")
    totalCount: int
