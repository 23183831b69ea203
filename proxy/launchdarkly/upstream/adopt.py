"""A replayed write's 2xx answer becomes the local copy, as a written-through one does."""

from __future__ import annotations

import functools
import re

import msgspec

from proxy.launchdarkly.model import groups as group_shapes
from proxy.launchdarkly.model import metrics as metric_shapes
from proxy.launchdarkly.store import resources

_METRIC = re.compile(r"^/api/v2/metrics/(?P<project>[^/]+)(?:/(?P<key>[^/]+))?$")
_GROUP = re.compile(r"^/api/v2/projects/(?P<project>[^/]+)/metric-groups(?:/(?P<key>[^/]+))?$")


def replayed(item: dict, body: bytes):
    """What to write locally for LaunchDarkly's answer `body` to the queued write `item` (the
    stored {method, path, ...}); None when there is nothing to keep or it cannot be read."""
    method, path = item["method"], item["path"]
    if found := _METRIC.match(path):
        project, key = found["project"], found["key"]
        if method == "DELETE":
            return functools.partial(resources.forget_metric, project=project, key=key)
        try:
            rep = metric_shapes.decode(body)
        except msgspec.DecodeError:
            return None
        return functools.partial(resources.put_metric, project=project, key=rep.key, version_id=rep.versionId,
                                 doc=metric_shapes.encode(rep))
    if found := _GROUP.match(path):
        project, key = found["project"], found["key"]
        if method == "DELETE":
            return functools.partial(resources.forget_group, project=project, key=key)
        try:
            group = group_shapes.decode(body)
        except msgspec.DecodeError:
            return None
        return functools.partial(resources.put_group, project=project, key=group.key, doc=group_shapes.encode(group),
                                 metric_keys=group_shapes.metric_keys(group))
    return None
