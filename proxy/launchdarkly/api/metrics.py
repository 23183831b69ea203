"""/api/v2/metrics/{projectKey}[/{metricKey}]: list, create, get, patch, delete."""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from aiohttp import web

from proxy.api.render import json_answer
from proxy.api.state import CLOCK
from proxy.launchdarkly.api import listing, patching
from proxy.launchdarkly.api.common import (
    api_version,
    authorize,
    key,
    known_project,
    perform,
    read,
    read_body,
    refreshed_on_miss,
)
from proxy.launchdarkly.errors import not_found
from proxy.launchdarkly.model import groups as group_shapes
from proxy.launchdarkly.model import metrics as metric_shapes
from proxy.launchdarkly.schemas.common import JsonPatch, Link
from proxy.launchdarkly.schemas.metrics import (
    EDITABLE_METRIC_FIELDS,
    DependentMetricGroup,
    MetricCollectionRep,
    MetricPost,
)
from proxy.launchdarkly.store import resources
from proxy.launchdarkly.upstream.writes import Write

LIST_EXPAND = ("experimentCount", "metricGroupCount")
GET_EXPAND = ("experiments", "experimentCount", "metricGroups", "metricGroupCount", "eventSources",
              "guardedRollouts", "guardedRolloutCount", "lastUsedInExperiment", "lastUsedInGuardedRollout")
SORT_FIELDS = ("createdAt", "name")
_SORT_VALUES = {"createdAt": lambda d: d["_creationDate"], "name": lambda d: d["name"].casefold()}
_NO_CONNECTIONS = ("experiments", "guarded_rollouts", "any")  # metricUsedIn values: the proxy knows none


def _team(doc: dict[str, Any], value: listing.Value) -> bool:
    return False  # a metric's maintainer is a member: no team key matches


FILTERS = {
    "eventKind": listing.FilterField("equals", lambda d, v: d["kind"] == v, ("custom", "pageview", "click")),
    "hasConnections": listing.FilterField("equals", lambda d, v: not listing.truth(v), listing.BOOLEANS),
    "isNumeric": listing.FilterField("equals", lambda d, v: d.get("isNumeric", False) == listing.truth(v),
                                     listing.BOOLEANS),
    "maintainerIds": listing.FilterField("anyOf", lambda d, v: d.get("maintainerId") in listing.as_list(v)),
    "maintainerTeamKey": listing.FilterField("equals", _team),
    "metricUsedIn": listing.FilterField("equals", lambda d, v: v == "none", (*_NO_CONNECTIONS, "none")),
    "query": listing.FilterField("equals", listing.fuzzy),
    "tags": listing.FilterField("contains", lambda d, v: set(listing.as_list(v)) <= set(d.get("tags", []))),
    "unitAggregationType": listing.FilterField("equals", lambda d, v: d.get("unitAggregationType") == v,
                                               ("sum", "average")),
    "dataSourceKeys": listing.FilterField("anyOf", lambda d, v: d["dataSource"]["key"] in listing.as_list(v)),
}


def _collection_path(project: str) -> str:
    return f"/api/v2/metrics/{project}"


def _group_refs(project: str, docs: list[bytes]) -> dict[str, DependentMetricGroup]:
    refs = {}
    for doc in docs:
        group = group_shapes.decode(doc)
        refs[group.key] = DependentMetricGroup(
            key=group.key, name=group.name, kind=group.kind,
            links={"self": Link(href=group_shapes.group_path(project, group.key))})
    return refs


async def list_metrics(request: web.Request) -> web.Response:
    authorize(request)
    project = key(request, "projectKey")
    page = listing.page(request)
    order = listing.sort_keys(request, SORT_FIELDS)
    keep = listing.read_filter(request, FILTERS)
    expand = listing.expand(request, LIST_EXPAND)
    await known_project(request, project)
    reps = [metric_shapes.decode(doc) for doc in await read(request, resources.metric_docs, project)]
    used = await read(request, resources.groups_using, project) if "metricGroupCount" in expand else {}
    docs = {rep.key: msgspec.to_builtins(rep) for rep in reps}
    chosen = listing.sorted_docs([d for d in docs.values() if keep(d)], order, _SORT_VALUES, [("createdAt", False)])
    by_key = {rep.key: rep for rep in reps}
    items = []
    for doc in chosen[page.offset:page.offset + page.limit]:
        item = metric_shapes.listing(by_key[doc["key"]])
        if "experimentCount" in expand:
            item.experimentCount = 0
        if "metricGroupCount" in expand:
            item.metricGroupCount = len(used.get(item.key, []))
        items.append(item)
    links = listing.page_links(_collection_path(project), request, page, len(chosen))
    return json_answer(MetricCollectionRep(items=items, links=links, totalCount=len(chosen)))


async def get_metric(request: web.Request) -> web.Response:
    authorize(request)
    project, metric = key(request, "projectKey"), key(request, "metricKey")
    expand = listing.expand(request, GET_EXPAND)
    version_id = listing.single(request, "versionId") or None
    await known_project(request, project)
    doc = await read(request, resources.metric_doc, project, metric, version_id)
    if doc is None and await refreshed_on_miss(request, project):
        doc = await read(request, resources.metric_doc, project, metric, version_id)
    if doc is None:
        raise not_found(f"metric {metric!r} of project {project!r}" + (f" version {version_id!r}" if version_id else ""))
    rep = metric_shapes.decode(doc)
    if "experiments" in expand:
        rep.experiments = []
    if "experimentCount" in expand:
        rep.experimentCount = 0
    if "guardedRolloutCount" in expand:
        rep.activeGuardedRolloutCount = 0
    if "metricGroups" in expand or "metricGroupCount" in expand:
        using = (await read(request, resources.groups_using, project)).get(metric, [])
        refs = _group_refs(project, [d for d in await read(request, resources.group_docs, project)])
        groups = [refs[g] for g in using if g in refs]
        if "metricGroups" in expand:
            rep.metricGroups = groups
        if "metricGroupCount" in expand:
            rep.metricGroupCount = len(groups)
    return json_answer(rep)




async def post_metric(request: web.Request) -> web.Response:
    authorize(request)
    project = key(request, "projectKey")
    post, raw = await read_body(request, MetricPost)
    metric_shapes.check(post)
    rep = metric_shapes.new_metric(project, post, request.app[CLOCK].now())
    apply = functools.partial(resources.create_metric, project=project, key=post.key, version_id=rep.versionId,
                              doc=metric_shapes.encode(rep))
    write = Write(project, "POST", _collection_path(project), raw, api_version(request, False),
                  apply, 201)
    return await perform(request, write)


def _patch_change(project: str, ops: list, now: float):
    def change(current: bytes) -> tuple[str, bytes]:
        rep = metric_shapes.decode(current)
        patched = patching.apply(msgspec.to_builtins(rep), ops, EDITABLE_METRIC_FIELDS)
        patched["key"] = rep.key
        post = patching.as_body(patched, EDITABLE_METRIC_FIELDS | {"key"}, MetricPost)
        metric_shapes.check(post)
        new = metric_shapes.patched(project, rep, post, now)
        return new.versionId, metric_shapes.encode(new)

    return change


async def patch_metric(request: web.Request) -> web.Response:
    authorize(request)
    project, metric = key(request, "projectKey"), key(request, "metricKey")
    ops, raw = await read_body(request, JsonPatch)
    apply = functools.partial(resources.change_metric, project=project, key=metric,
                              change=_patch_change(project, ops, request.app[CLOCK].now()))
    write = Write(project, "PATCH", metric_shapes.metric_path(project, metric), raw, api_version(request, False),
                  apply, 200)
    return await perform(request, write)


async def delete_metric(request: web.Request) -> web.Response:
    authorize(request)
    project, metric = key(request, "projectKey"), key(request, "metricKey")
    apply = functools.partial(resources.delete_metric, project=project, key=metric)
    write = Write(project, "DELETE", metric_shapes.metric_path(project, metric), None, api_version(request, False),
                  apply, 204)
    return await perform(request, write)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v2/metrics/{projectKey}", list_metrics),
        web.post("/api/v2/metrics/{projectKey}", post_metric),
        web.get("/api/v2/metrics/{projectKey}/{metricKey}", get_metric),
        web.patch("/api/v2/metrics/{projectKey}/{metricKey}", patch_metric),
        web.delete("/api/v2/metrics/{projectKey}/{metricKey}", delete_metric),
    ]

