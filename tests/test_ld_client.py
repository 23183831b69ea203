"""LaunchDarkly's own generated REST client (PyPI launchdarkly-api 25.x) against a running proxy,
with only its host changed: every call of MetricsApi and MetricsBetaApi, and its strict models
parse every answer."""

from __future__ import annotations

import launchdarkly_api
import pytest
from launchdarkly_api.api.metrics_api import MetricsApi
from launchdarkly_api.api.metrics_beta_api import MetricsBetaApi
from launchdarkly_api.models import (
    MetricGroupPost,
    MetricInMetricGroupInput,
    MetricPost,
    PatchOperation,
    UrlPost,
)

from tests.ld_support import LD_TOKEN
from tests.support import ProxyProcess


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    base = tmp_path_factory.mktemp("ld-client")
    proxy = ProxyProcess(base / "data", extra_env={"METRICS_PROXY_LAUNCHDARKLY_ACCESS_TOKENS": LD_TOKEN})
    proxy.start()
    yield proxy
    proxy.stop()


def api_client(proxy: ProxyProcess, beta: bool = False) -> launchdarkly_api.ApiClient:
    configuration = launchdarkly_api.Configuration(host=proxy.url)
    configuration.api_key["ApiKey"] = LD_TOKEN
    client = launchdarkly_api.ApiClient(configuration)
    if beta:  # MetricsBetaApi does not send it by itself (docs/launchdarkly.md)
        client.set_default_header("LD-API-Version", "beta")
    return client


def test_metrics_through_the_official_client(proxy):
    metrics = MetricsApi(api_client(proxy))
    created = [
        metrics.post_metric("client-proj", MetricPost(key=f"conv-{n:02d}", kind="custom", is_numeric=False,
                                                       event_key=f"event-{n}", tags=["client"]))
        for n in range(23)
    ]
    created.append(metrics.post_metric("client-proj", MetricPost(
        key="page", kind="pageview", urls=[UrlPost(kind="exact", url="https://shop.example/cart")])))
    created.append(metrics.post_metric("client-proj", MetricPost(
        key="spend", kind="custom", is_numeric=True, event_key="spend", success_criteria="HigherThanBaseline",
        unit="USD", unit_aggregation_type="sum", analysis_type="percentile", percentile_value=90)))
    assert created[0].name == "conv-00" and created[0].version == 1 and created[0].data_source.key
    # every page, 10 at a time
    seen, offset = [], 0
    while True:
        page = metrics.get_metrics("client-proj", limit=10, offset=offset, sort="createdAt")
        assert page.total_count == 25
        seen += [item.key for item in page.items]
        if "next" not in page.links:
            break
        offset += 10
    assert seen == [m.key for m in created]
    tagged = metrics.get_metrics("client-proj", filter='tags contains ["client"]', limit=50)
    assert tagged.total_count == 23
    one = metrics.get_metric("client-proj", "spend", expand="experimentCount,metricGroups")
    assert one.percentile_value == 90 and one.unit == "USD" and one.experiment_count == 0
    patched = metrics.patch_metric("client-proj", "spend", [
        PatchOperation(op="test", path="/_version", value=1),
        PatchOperation(op="replace", path="/name", value="Spend"),
    ])
    assert patched.name == "Spend" and patched.version == 2
    old = metrics.get_metric("client-proj", "spend", version_id=created[-1].version_id)
    assert old.name == "spend" and old.version == 1
    metrics.delete_metric("client-proj", "page")
    with pytest.raises(launchdarkly_api.exceptions.NotFoundException):
        metrics.get_metric("client-proj", "page")
    with pytest.raises(launchdarkly_api.exceptions.ApiException) as refused:
        metrics.post_metric("client-proj", MetricPost(key="spend", kind="custom", is_numeric=False, event_key="e"))
    assert refused.value.status == 409


def test_metric_groups_through_the_official_client(proxy):
    metrics = MetricsApi(api_client(proxy))
    for key in ("land", "cart", "pay"):
        metrics.post_metric("group-proj", MetricPost(key=key, kind="custom", is_numeric=False, event_key=key))
    groups = MetricsBetaApi(api_client(proxy, beta=True))
    created = groups.create_metric_group("group-proj", MetricGroupPost(
        key="checkout", name="Checkout", kind="funnel", maintainer_id="member-1", tags=[],
        metrics=[MetricInMetricGroupInput(key=k, name_in_group=f"{k} step") for k in ("land", "cart", "pay")]))
    assert [m.key for m in created.metrics] == ["land", "cart", "pay"] and created.version == 1
    for n in range(3):
        groups.create_metric_group("group-proj", MetricGroupPost(
            key=f"std-{n}", name=f"Standard {n}", kind="standard", maintainer_id="member-2", tags=["t"],
            metrics=[MetricInMetricGroupInput(key="cart", name_in_group="cart")]))
    seen, offset = [], 0
    while True:
        page = groups.get_metric_groups("group-proj", limit=3, offset=offset)
        assert page.total_count == 4
        seen += [g.key for g in page.items]
        if "next" not in page.links:
            break
        offset += 3
    assert sorted(seen) == ["checkout", "std-0", "std-1", "std-2"]
    one = groups.get_metric_group("group-proj", "checkout", expand="experiments")
    assert one.experiments == [] and one.maintainer.key == "member-1"
    patched = groups.patch_metric_group("group-proj", "checkout", [
        PatchOperation(op="replace", path="/name", value="Checkout funnel"),
        PatchOperation(op="remove", path="/metrics/1"),
    ])
    assert patched.name == "Checkout funnel" and [m.key for m in patched.metrics] == ["land", "pay"]
    groups.delete_metric_group("group-proj", "checkout")
    with pytest.raises(launchdarkly_api.exceptions.NotFoundException):
        groups.get_metric_group("group-proj", "checkout")


def test_the_unmodified_beta_client_is_refused_as_launchdarkly_documents(proxy):
    groups = MetricsBetaApi(api_client(proxy))
    with pytest.raises(launchdarkly_api.exceptions.ForbiddenException):
        groups.get_metric_groups("group-proj")
