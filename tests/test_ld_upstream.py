"""With a LaunchDarkly upstream: writes go through it and its answer is relayed and kept; while it
is unreachable writes are applied locally, queued durably and answered 202 with the pending header,
then replayed in order; a replay it refuses lands in the dead letters and the local copy is
LaunchDarkly's again."""

from __future__ import annotations

import asyncio
import json

import pytest

from proxy.launchdarkly.upstream.writes import PENDING_HEADER
from tests.ld_support import BETA, HEADERS, LD_TOKEN, custom_metric, error_of, group_body
from tests.ld_upstream import RATE_HEADERS, UPSTREAM_TOKEN, start_stand_in, stop_stand_in
from tests.test_forwarder_cli import run_cli


@pytest.fixture
async def upstream(tmp_path, clock):
    stand_in = await start_stand_in(tmp_path, clock)
    yield stand_in
    await stop_stand_in(stand_in)


@pytest.fixture
async def ld(make_client, upstream):
    return await make_client(launchdarkly={
        "access_tokens": [LD_TOKEN], "api_url": upstream.url, "api_token": UPSTREAM_TOKEN,
        "retry_initial": 0.01, "retry_max": 0.05, "request_timeout": 5.0,
    })


async def upstream_get(upstream, path, beta=False):
    headers = {"Authorization": UPSTREAM_TOKEN, **({"LD-API-Version": "beta"} if beta else {})}
    return await upstream.backend.get(path, headers=headers)


async def wait_for(condition, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_online_writes_go_through_and_relay_status_body_and_rate_limit_headers(ld, upstream):
    response = await ld.post("/api/v2/metrics/proj", json=custom_metric("m"), headers=HEADERS)
    assert response.status == 201 and PENDING_HEADER not in response.headers
    for name, value in RATE_HEADERS.items():
        assert response.headers[name] == value
    rep = await response.json()
    kept = await (await upstream_get(upstream, "/api/v2/metrics/proj/m")).json()
    assert rep == kept  # LaunchDarkly's representation, relayed as it came
    assert upstream.arrivals[-1].headers["Authorization"] == UPSTREAM_TOKEN  # the proxy's own token upstream
    local = await (await ld.get("/api/v2/metrics/proj/m", headers=HEADERS)).json()
    assert local["_id"] == kept["_id"] and local["_versionId"] == kept["_versionId"]
    # LaunchDarkly's refusal is relayed as it is: a duplicate key, then a group without its metric
    await error_of(await ld.post("/api/v2/metrics/proj", json=custom_metric("m"), headers=HEADERS), 409, "conflict")
    response = await ld.post("/api/v2/projects/proj/metric-groups", json=group_body("g", ["m"]), headers=BETA)
    assert response.status == 201
    assert upstream.arrivals[-1].headers["LD-API-Version"] == "beta"
    response = await ld.patch("/api/v2/metrics/proj/m", json=[{"op": "replace", "path": "/name", "value": "M"}],
                              headers=HEADERS)
    assert response.status == 200 and (await response.json())["name"] == "M"
    group = await (await ld.get("/api/v2/projects/proj/metric-groups/g", headers=BETA)).json()
    assert group["metrics"][0]["name"] == "M"
    assert (await ld.delete("/api/v2/projects/proj/metric-groups/g", headers=BETA)).status == 204
    assert (await ld.delete("/api/v2/metrics/proj/m", headers=HEADERS)).status == 204
    assert (await upstream_get(upstream, "/api/v2/metrics/proj/m")).status == 404
    assert (await ld.get("/api/v2/metrics/proj/m", headers=HEADERS)).status == 404


async def test_a_429_is_relayed_with_its_retry_after_and_nothing_is_queued(ld, upstream):
    upstream.answers.append((429, {"Retry-After": "7", "X-Ratelimit-Route-Remaining": "0"}))
    response = await ld.post("/api/v2/metrics/proj", json=custom_metric("m"), headers=HEADERS)
    await error_of(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "7" and response.headers["X-Ratelimit-Route-Remaining"] == "0"
    assert (await ld.get("/api/v2/metrics/proj/m", headers=HEADERS)).status == 404


async def test_reads_come_from_the_upstream_on_a_miss(ld, upstream, clock):
    created = await upstream.backend.post("/api/v2/metrics/remote", json=custom_metric("r"),
                                          headers={"Authorization": UPSTREAM_TOKEN})
    assert created.status == 201
    page = await (await ld.get("/api/v2/metrics/remote", headers=HEADERS)).json()
    assert [i["key"] for i in page["items"]] == ["r"]
    before = len(upstream.arrivals)
    await ld.get("/api/v2/metrics/remote", headers=HEADERS)
    assert len(upstream.arrivals) == before  # answered from the local copy
    # a key created in LaunchDarkly since: a GET of it reads the project again
    await upstream.backend.post("/api/v2/metrics/remote", json=custom_metric("s"),
                                headers={"Authorization": UPSTREAM_TOKEN})
    clock.advance(60)
    assert (await ld.get("/api/v2/metrics/remote/s", headers=HEADERS)).status == 200
    # an unknown key reads it again at most every few seconds
    await error_of(await ld.get("/api/v2/metrics/remote/t", headers=HEADERS), 404, "not_found")
    before = len(upstream.arrivals)
    await error_of(await ld.get("/api/v2/metrics/remote/t", headers=HEADERS), 404, "not_found")
    assert len(upstream.arrivals) == before


async def test_offline_writes_queue_and_replay_in_order(ld, upstream):
    upstream.down = True
    response = await ld.post("/api/v2/metrics/proj", json=custom_metric("a"), headers=HEADERS)
    assert response.status == 202 and response.headers[PENDING_HEADER]
    assert (await response.json())["key"] == "a"  # the local representation
    await ld.post("/api/v2/metrics/proj", json=custom_metric("b"), headers=HEADERS)
    await ld.patch("/api/v2/metrics/proj/a", json=[{"op": "replace", "path": "/name", "value": "A"}], headers=HEADERS)
    await ld.post("/api/v2/projects/proj/metric-groups", json=group_body("g", ["a", "b"]), headers=BETA)
    response = await ld.delete("/api/v2/metrics/proj/b", headers=HEADERS)
    assert response.status == 409  # the local copy already knows b is in g: refused, not queued
    local = await (await ld.get("/api/v2/metrics/proj/a", headers=HEADERS)).json()
    assert local["name"] == "A"
    assert (await ld.get("/api/v2/metrics/proj", headers=HEADERS)).status == 200
    upstream.down = False
    # a write while the queue drains waits behind it
    await wait_for(lambda: _has(upstream, "POST", "/api/v2/projects/proj/metric-groups"))
    assert upstream.writes() == [
        ("POST", "/api/v2/metrics/proj"), ("POST", "/api/v2/metrics/proj"), ("PATCH", "/api/v2/metrics/proj/a"),
        ("POST", "/api/v2/projects/proj/metric-groups"),
    ]
    remote = await (await upstream_get(upstream, "/api/v2/metrics/proj/a")).json()
    assert remote["name"] == "A"
    local = await (await ld.get("/api/v2/metrics/proj/a", headers=HEADERS)).json()
    assert local["_id"] == remote["_id"]  # the local copy is LaunchDarkly's once replayed
    letters = await (await ld.get("/internal-backstage/launchdarkly/dead-letters", headers=HEADERS)).json()
    assert letters["totalCount"] == 0


async def _has(upstream, method, path):
    return (method, path) in upstream.writes()


async def test_a_write_while_unreachable_connection_drop_is_queued_too(ld, upstream):
    upstream.drop = True
    response = await ld.post("/api/v2/metrics/proj", json=custom_metric("a"), headers=HEADERS)
    assert response.status == 202
    upstream.drop = False
    await wait_for(lambda: _has(upstream, "POST", "/api/v2/metrics/proj"))


async def test_a_replay_refused_with_409_is_a_dead_letter_and_the_local_copy_is_launchdarklys(ld, upstream, tmp_path):
    upstream.down = True
    response = await ld.post("/api/v2/metrics/proj", json=custom_metric("m", name="mine"), headers=HEADERS)
    assert response.status == 202
    # meanwhile someone created the same key in LaunchDarkly
    await upstream.backend.post("/api/v2/metrics/proj", json=custom_metric("m", name="theirs"),
                                headers={"Authorization": UPSTREAM_TOKEN})
    upstream.down = False

    async def dead_lettered():
        body = await (await ld.get("/internal-backstage/launchdarkly/dead-letters", headers=HEADERS)).json()
        return body["totalCount"] == 1

    await wait_for(dead_lettered)
    letters = await (await ld.get("/internal-backstage/launchdarkly/dead-letters", headers=HEADERS)).json()
    letter = letters["items"][0]
    assert letter["status"] == 409 and letter["method"] == "POST" and letter["path"] == "/api/v2/metrics/proj"
    assert letter["body"]["name"] == "mine" and "409" in letter["error"] and "conflict" in letter["error"]

    async def refreshed():
        local = await (await ld.get("/api/v2/metrics/proj/m", headers=HEADERS)).json()
        return local["name"] == "theirs"

    await wait_for(refreshed)
    scrape = await (await ld.get("/internal-backstage/prometheus")).text()
    assert 'metrics_proxy_launchdarkly_replays_total{outcome="dead_letter"} 1' in scrape
    assert 'metrics_proxy_launchdarkly_dead_letters{project="proj"} 1' in scrape
    assert 'metrics_proxy_launchdarkly_writes_total{outcome="queued"} 1' in scrape
    # `metrics-proxy status` shows them too, beside a running proxy
    result = await asyncio.to_thread(run_cli, "status", "--json", "--data-dir", str(tmp_path / "data"), env={})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    ld = next(v for v in report["vendors"] if v["vendor"] == "launchdarkly")
    proj = next(q for q in ld["queues"] if q["name"] == "proj")
    assert proj["deadLetters"] == 1 and proj["pendingPayloads"] == 0 and "409" in proj["newestDeadLetterReason"]
    text = await asyncio.to_thread(run_cli, "status", "--data-dir", str(tmp_path / "data"), env={})
    assert "launchdarkly: no upstream" in text.stdout  # the command's own settings name none
    assert "dead_letters launchdarkly/proj" in text.stdout


async def test_the_queue_keeps_writes_that_arrive_while_it_drains_behind_it(ld, upstream):
    upstream.down = True
    await ld.post("/api/v2/metrics/proj", json=custom_metric("a"), headers=HEADERS)
    upstream.down = False
    # the queue still holds a: this write queues behind it instead of overtaking it
    response = await ld.patch("/api/v2/metrics/proj/a", json=[{"op": "replace", "path": "/name", "value": "A"}],
                              headers=HEADERS)
    assert response.status in (200, 202)
    await wait_for(lambda: _has(upstream, "PATCH", "/api/v2/metrics/proj/a"))
    assert upstream.writes() == [("POST", "/api/v2/metrics/proj"), ("PATCH", "/api/v2/metrics/proj/a")]



async def test_the_local_copy_follows_launchdarkly_on_the_interval_but_keeps_queued_writes(make_client, upstream):
    ld = await make_client(launchdarkly={
        "access_tokens": [LD_TOKEN], "api_url": upstream.url, "api_token": UPSTREAM_TOKEN,
        "refresh_interval": 0.05, "retry_initial": 0.01, "retry_max": 0.05})
    assert (await ld.get("/api/v2/metrics/proj", headers=HEADERS)).status == 200  # the project is asked about
    await upstream.backend.post("/api/v2/metrics/proj", json=custom_metric("theirs"),
                                headers={"Authorization": UPSTREAM_TOKEN})

    async def keys():
        page = await (await ld.get("/api/v2/metrics/proj", headers=HEADERS)).json()
        return [i["key"] for i in page["items"]]

    async def listed():
        return await keys() == ["theirs"]

    await wait_for(listed)
    upstream.down = True
    assert (await ld.post("/api/v2/metrics/proj", json=custom_metric("mine"), headers=HEADERS)).status == 202
    await asyncio.sleep(0.3)  # refreshes come and go while the write waits: it stays
    assert sorted(await keys()) == ["mine", "theirs"]
    upstream.down = False

    async def replayed():
        return ("POST", "/api/v2/metrics/proj") in upstream.writes() and sorted(await keys()) == ["mine", "theirs"]

    await wait_for(replayed)


async def test_reads_do_not_wait_on_an_unreachable_upstream_again(ld, upstream, clock):
    upstream.down = True
    assert (await ld.get("/api/v2/metrics/one", headers=HEADERS)).status == 200  # tried, failed: local answers
    tried = len(upstream.arrivals)
    assert (await ld.get("/api/v2/metrics/two", headers=HEADERS)).status == 200
    await error_of(await ld.get("/api/v2/metrics/two/m", headers=HEADERS), 404, "not_found")
    assert len(upstream.arrivals) == tried  # within refresh_interval nothing waits on it again
    upstream.down = False
    clock.advance(61)
    assert (await ld.get("/api/v2/metrics/two", headers=HEADERS)).status == 200
    assert len(upstream.arrivals) > tried


async def test_a_replay_answered_429_waits_and_is_delivered(ld, upstream):
    upstream.down = True
    assert (await ld.post("/api/v2/metrics/proj", json=custom_metric("a"), headers=HEADERS)).status == 202
    upstream.down = False
    upstream.answers.append((429, {"Retry-After": "0"}))
    await wait_for(lambda: _has(upstream, "POST", "/api/v2/metrics/proj"))
    statuses = [a.status for a in upstream.arrivals if a.method == "POST"]
    assert 429 in statuses and statuses[-1] == 201
    letters = await (await ld.get("/internal-backstage/launchdarkly/dead-letters", headers=HEADERS)).json()
    assert letters["totalCount"] == 0
