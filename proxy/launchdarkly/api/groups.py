"""/api/v2/projects/{projectKey}/metric-groups[/{metricGroupKey}]: list, create, get, patch,
delete. A beta resource: every call needs `LD-API-Version: beta` (unless configured otherwise)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

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
from proxy.launchdarkly.schemas.common import JsonPatch
from proxy.launchdarkly.schemas.groups import EDITABLE_GROUP_FIELDS, MetricGroupCollectionRep, MetricGroupPost
from proxy.launchdarkly.store import resources
from proxy.launchdarkly.upstream.writes import Write

GET_EXPAND = ("experiments", "experimentCount")
SORT_FIELDS = ("name", "createdAt", "connectionCount")
_SORT_VALUES = {"name": lambda d: d["name"].casefold(), "createdAt": lambda d: d["_creationDate"],
                "connectionCount": lambda d: 0}
FILTERS = {
    # The proxy knows no experiments: no group has one in any status, none has connections.
    "experimentStatus": listing.FilterField("equals", lambda d, v: False, ("not_started", "running", "stopped",
                                                                           "started")),
    "hasConnections": listing.FilterField("equals", lambda d, v: not listing.truth(v), listing.BOOLEANS),
    "kind": listing.FilterField("equals", lambda d, v: d["kind"] == v, ("funnel", "standard")),
    "maintainerIds": listing.FilterField(
        "anyOf", lambda d, v: d["maintainer"]["kind"] == "member" and d["maintainer"]["key"] in listing.as_list(v)),
    "maintainerTeamKey": listing.FilterField(
        "equals", lambda d, v: d["maintainer"]["kind"] == "team" and d["maintainer"]["key"] == v),
    "query": listing.FilterField("equals", listing.fuzzy),
}


def _collection_path(project: str) -> str:
    return f"/api/v2/projects/{project}/metric-groups"


def _metrics(docs: Iterable[bytes]) -> dict:
    reps = (metric_shapes.decode(doc) for doc in docs)
    return {rep.key: rep for rep in reps}


async def list_groups(request: web.Request) -> web.Response:
    authorize(request, beta=True)
    project = key(request, "projectKey")
    page = listing.page(request)
    order = listing.sort_keys(request, SORT_FIELDS)
    keep = listing.read_filter(request, FILTERS)
    listing.expand(request, None)  # "reserved for future use": accepted, changes nothing
    await known_project(request, project)
    docs, metric_docs = await read(request, resources.groups_with_metrics, project)
    metrics = _metrics(metric_docs)
    reps = {rep.key: rep for rep in (group_shapes.decode(doc) for doc in docs)}
    plain = [msgspec.to_builtins(rep) for rep in reps.values()]
    chosen = listing.sorted_docs([d for d in plain if keep(d)], order, _SORT_VALUES, [("createdAt", False)])
    items = [group_shapes.with_metrics(project, reps[d["key"]], metrics)
             for d in chosen[page.offset:page.offset + page.limit]]
    links = listing.page_links(_collection_path(project), request, page, len(chosen))
    return json_answer(MetricGroupCollectionRep(items=items, links=links, totalCount=len(chosen)))


async def get_group(request: web.Request) -> web.Response:
    authorize(request, beta=True)
    project, group = key(request, "projectKey"), key(request, "metricGroupKey")
    expand = listing.expand(request, GET_EXPAND)
    await known_project(request, project)
    found = await read(request, resources.group_with_metrics, project, group)
    if found is None and await refreshed_on_miss(request, project):
        found = await read(request, resources.group_with_metrics, project, group)
    if found is None:
        raise not_found(f"metric group {group!r} of project {project!r}")
    rep = group_shapes.with_metrics(project, group_shapes.decode(found[0]), _metrics(found[1]))
    if "experiments" in expand:
        rep.experiments = []
    if "experimentCount" in expand:
        rep.experimentCount = 0
    return json_answer(rep)




async def post_group(request: web.Request) -> web.Response:
    authorize(request, beta=True)
    project = key(request, "projectKey")
    post, raw = await read_body(request, MetricGroupPost)
    now = request.app[CLOCK].now()

    def make(found: dict[str, bytes]) -> tuple[bytes, list[str]]:
        metrics = _metrics(found.values())
        group_shapes.check(post, metrics)
        rep = group_shapes.new_group(project, post, metrics, now)
        return group_shapes.encode(rep), group_shapes.metric_keys(rep)

    apply = functools.partial(resources.create_group, project=project, key=post.key, make=make,
                              metric_keys=[m.key for m in post.metrics])
    write = Write(project, "POST", _collection_path(project), raw, api_version(request, True), apply, 201)
    return await perform(request, write)


async def patch_group(request: web.Request) -> web.Response:
    authorize(request, beta=True)
    project, group = key(request, "projectKey"), key(request, "metricGroupKey")
    ops, raw = await read_body(request, JsonPatch)
    now = request.app[CLOCK].now()

    def change(current: bytes, lookup: Callable[[Iterable[str]], dict[str, bytes]]) -> tuple[bytes, list[str]]:
        rep = group_shapes.decode(current)
        patched = patching.apply(group_shapes.editable_document(rep), ops, EDITABLE_GROUP_FIELDS)
        patched["key"] = rep.key
        post = patching.as_body(patched, EDITABLE_GROUP_FIELDS | {"key"}, MetricGroupPost)
        metrics = _metrics(lookup([m.key for m in post.metrics]).values())
        group_shapes.check(post, metrics)
        new = group_shapes.patched(project, rep, post, metrics, now)
        return group_shapes.encode(new), group_shapes.metric_keys(new)

    apply = functools.partial(resources.change_group, project=project, key=group, change=change)
    write = Write(project, "PATCH", group_shapes.group_path(project, group), raw, api_version(request, True), apply, 200)
    return await perform(request, write)


async def delete_group(request: web.Request) -> web.Response:
    authorize(request, beta=True)
    project, group = key(request, "projectKey"), key(request, "metricGroupKey")
    apply = functools.partial(resources.delete_group, project=project, key=group)
    write = Write(project, "DELETE", group_shapes.group_path(project, group), None, api_version(request, True),
                  apply, 204)
    return await perform(request, write)


def routes() -> list[web.RouteDef]:
    base = "/api/v2/projects/{projectKey}/metric-groups"
    return [
        web.get(base, list_groups),
        web.post(base, post_group),
        web.get(base + "/{metricGroupKey}", get_group),
        web.patch(base + "/{metricGroupKey}", patch_group),
        web.delete(base + "/{metricGroupKey}", delete_group),
    ]
