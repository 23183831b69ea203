"""The forwarder's outcome table, each row against a scripted upstream over loopback HTTP."""

from __future__ import annotations

import asyncio
import email.utils
from datetime import datetime

import pytest
from aiohttp import web

from proxy import __version__
from proxy.unleash.store.status import status_report
from tests.forwarding import UPSTREAM_DEV, post_metrics
from tests.support import PROD_TOKEN
from tests.upstream_stub import drop_connection, token_environment


def sent_flags(stub) -> dict[str, tuple[int, int]]:
    out = {}
    for rec in stub.delivered():
        for m in rec.body["metrics"]:
            yes, no = out.get(m["featureName"], (0, 0))
            out[m["featureName"]] = (yes + m["yes"], no + m["no"])
    return out


async def test_2xx_delivers_once_with_headers_applications_and_no_zero_rows(forwarding_client, stub, clock):
    client = await forwarding_client(headers={"X-Extra": "yes"})
    await post_metrics(client, {"flag-a": (5, 3), "flag-b": (1, 0), "flag-zero": (0, 0)}, clock.now())

    assert await client.forwarder.flush() == 0

    assert len(stub.received) == 1
    rec = stub.received[0]
    assert rec.headers["Authorization"] == UPSTREAM_DEV
    assert rec.headers["UNLEASH-APPNAME"] == "metrics-proxy"
    assert rec.headers["UNLEASH-INSTANCEID"] == client.forwarder.instance_id != ""
    assert rec.headers["User-Agent"] == f"metrics-proxy/{__version__}"
    assert rec.headers["Content-Type"] == "application/json"
    assert rec.headers["Content-Encoding"] == "gzip" and 0 < rec.wire_size < rec.size
    assert rec.headers["X-Extra"] == "yes"
    assert len(rec.key) >= 16
    assert sent_flags(stub) == {"flag-a": (5, 3), "flag-b": (1, 0)}
    metric = next(m for m in rec.body["metrics"] if m["featureName"] == "flag-a")
    assert metric["appName"] == "app-a" and metric["environment"] == "development"
    hour = datetime.fromisoformat(metric["timestamp"]).timestamp()
    assert hour == clock.now() // 3600 * 3600 and metric["variants"] == {}
    [app] = rec.body["applications"]
    assert app["appName"] == "app-a" and app["instanceId"] == "i-1" and app["environment"] == "development"
    assert isinstance(app["interval"], (int, float)) and app["started"] and app["strategies"] == []
    assert client.stats.requests["202"] == 1 and client.stats.last_success_time == clock.now()

    # Delivered means gone: a second flush sends nothing; new counts go in a new batch.
    await client.forwarder.flush()
    assert len(stub.received) == 1
    await post_metrics(client, {"flag-a": (2, 0)}, clock.now())  # same instance, same instant
    await client.forwarder.flush()
    assert len(stub.received) == 2 and stub.received[1].key != rec.key
    assert sent_flags(stub)["flag-a"] == (7, 3)
    assert stub.received[1].body["applications"] == []  # not seen since it was sent
    clock.advance(60)  # instance_refresh_interval: a known instance is re-announced this often
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now())
    await client.forwarder.flush()
    assert [a["instanceId"] for a in stub.received[2].body["applications"]] == ["i-1"]


async def test_counts_arriving_while_a_batch_is_in_flight_go_to_a_new_batch(forwarding_client, stub, clock):
    client = await forwarding_client()
    stub.hold = asyncio.Event()
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now())
    flushing = asyncio.create_task(client.forwarder.flush())
    await stub.arrived.wait()
    await post_metrics(client, {"flag-a": (10, 0)}, clock.now())  # lands while the first is held
    await client.forwarder.tick()
    stub.hold.set()
    await flushing
    await client.forwarder.flush()
    assert sent_flags(stub) == {"flag-a": (11, 0)}
    assert len({r.key for r in stub.delivered()}) == 2


async def test_413_splits_in_halves_and_a_single_rejected_row_is_dead_lettered(forwarding_client, stub, clock):
    client = await forwarding_client()

    async def refuse_huge(request, rec):
        too_big = any(m["featureName"] == "huge" for m in rec.body["metrics"])
        return web.Response(status=413 if too_big else 202)

    stub.default = refuse_huge
    flags = {f"flag-{n}": (n + 1, 1) for n in range(7)} | {"huge": (4, 4)}
    await post_metrics(client, flags, clock.now())

    assert await client.forwarder.flush() == 0

    expected = {k: v for k, v in flags.items() if k != "huge"}
    assert sent_flags(stub) == expected
    assert client.stats.dead_lettered_rows == 1 and client.stats.batches_split >= 3
    report = status_report(client.forwarder.outbox.db)
    assert report["environments"]["development"]["dead_letters"] == 1
    dead = client.forwarder.outbox.db.execute("SELECT item, yes, no, status FROM dead_letters").fetchall()
    assert len(dead) == 1 and '"huge"' in dead[0][0] and dead[0][1:] == (4, 4, 413)


async def test_400_bisects_to_the_rejected_rows_and_delivers_the_rest(forwarding_client, stub, clock):
    client = await forwarding_client()

    async def refuse_bad(request, rec):
        bad = any(m["featureName"].startswith("bad") for m in rec.body["metrics"])
        return web.Response(status=400 if bad else 202)

    stub.default = refuse_bad
    flags = {f"flag-{n}": (n + 1, 0) for n in range(10)} | {"bad-1": (2, 2), "bad-2": (3, 3)}
    await post_metrics(client, flags, clock.now())

    assert await client.forwarder.flush() == 0

    assert sent_flags(stub) == {k: v for k, v in flags.items() if not k.startswith("bad")}
    assert client.stats.dead_lettered_rows == 2
    dead = client.forwarder.outbox.db.execute("SELECT yes, no, status FROM dead_letters ORDER BY yes").fetchall()
    assert dead == [(2, 2, 400), (3, 3, 400)]


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_refusal_pauses_only_that_environment_and_keeps_its_batches(forwarding_client, stub, clock, status,
                                                                                caplog):
    client = await forwarding_client(auth_retry_interval=300.0)
    refuse_dev = {"on": True}

    async def answer(request, rec):
        if refuse_dev["on"] and rec.headers["Authorization"] == UPSTREAM_DEV:
            return web.Response(status=status, text="token revoked")
        return web.Response(status=202)

    stub.default = answer
    await post_metrics(client, {"flag-a": (3, 0)}, clock.now())
    await post_metrics(client, {"flag-p": (4, 0)}, clock.now(), token=PROD_TOKEN)

    assert await client.forwarder.flush() == 1  # the development batch stays on disk

    assert sent_flags(stub) == {"flag-p": (4, 0)}
    assert client.stats.paused_environments == {"development"}
    report = status_report(client.forwarder.outbox.db)["environments"]
    assert "token revoked" in report["development"]["paused"] and report["production"]["paused"] is None
    assert report["development"]["batch_yes"] == 3

    # Still paused: nothing is sent for development before the slow retry interval passes.
    tries = len(stub.received)
    await client.forwarder.flush()
    assert len(stub.received) == tries
    # After the slow retry interval it is tried again; still refused, it is not logged again.
    clock.advance(300)
    assert await client.forwarder.flush() == 1
    assert len(stub.received) == tries + 1
    assert sum("paused, it refused the environment" in r.getMessage() for r in caplog.records) == 1
    refuse_dev["on"] = False
    clock.advance(300)
    assert await client.forwarder.flush() == 0
    assert sent_flags(stub) == {"flag-a": (3, 0), "flag-p": (4, 0)}
    assert client.stats.paused_environments == set()
    assert status_report(client.forwarder.outbox.db)["environments"]["development"]["paused"] is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_retryable_status_is_retried_with_the_same_idempotency_key(forwarding_client, stub, clock, status):
    client = await forwarding_client()
    stub.script = [status, status]
    await post_metrics(client, {"flag-a": (2, 1)}, clock.now())

    assert await client.forwarder.flush() == 0

    assert [r.status for r in stub.received] == [status, status, 202]
    assert len({r.key for r in stub.received}) == 1
    assert client.stats.retries == 2 and client.stats.requests[str(status)] == 2
    assert client.stats.ambiguous_batches == 0
    assert sent_flags(stub) == {"flag-a": (2, 1)}


async def test_a_long_outage_is_never_given_up(forwarding_client, stub, clock):
    client = await forwarding_client(retry_initial=0.001, retry_max=0.002)
    stub.script = [503] * 40
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now())

    assert await client.forwarder.flush() == 0

    assert len(stub.received) == 41 and stub.received[-1].status == 202
    assert client.stats.retries == 40 and sent_flags(stub) == {"flag-a": (1, 0)}


async def test_connection_refused_is_retried_until_the_upstream_comes_up(make_client, clock):
    from proxy.unleash.state import FORWARDER, FORWARDER_STATS
    from tests.support import free_port
    from tests.upstream_stub import StubUpstream

    port = free_port()
    client = await make_client(upstream=dict(
        url=f"http://127.0.0.1:{port}/api", tokens={"development": UPSTREAM_DEV}, flush_interval=3600.0,
        retry_initial=0.01, retry_max=0.05,
    ))
    stats = client.server.app[FORWARDER_STATS]
    await post_metrics(client, {"flag-a": (1, 1)}, clock.now())
    flushing = asyncio.create_task(client.server.app[FORWARDER].flush())
    while stats.requests["network"] < 3:
        await asyncio.sleep(0.01)
    upstream = StubUpstream()
    runner = web.AppRunner(upstream.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        assert await asyncio.wait_for(flushing, 10) == 0
    finally:
        await runner.cleanup()
    assert [r.status for r in upstream.received] == [202]
    assert stats.ambiguous_batches == 0  # never connected: certainly not applied


async def test_reset_after_the_body_is_ambiguous_and_resent_with_the_same_key(forwarding_client, stub, clock):
    client = await forwarding_client()
    stub.script = [drop_connection]
    await post_metrics(client, {"flag-a": (6, 0)}, clock.now())

    assert await client.forwarder.flush() == 0

    assert len(stub.received) == 2 and stub.received[0].key == stub.received[1].key
    assert client.stats.ambiguous_batches == 1 and client.stats.retries == 1


async def test_timeout_after_the_body_is_ambiguous(forwarding_client, stub, clock):
    client = await forwarding_client(request_timeout=0.3)

    async def too_slow(request, rec):
        await asyncio.sleep(2)
        return web.Response(status=202)

    stub.script = [too_slow]
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now())

    assert await client.forwarder.flush() == 0

    assert stub.received[0].key == stub.received[-1].key
    assert client.stats.ambiguous_batches == 1 and client.stats.requests["ambiguous"] == 1


async def test_retry_after_seconds_is_a_lower_bound(forwarding_client, stub, clock):
    client = await forwarding_client(retry_max=0.05)
    stub.script = [(503, {"Retry-After": "1"})]
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now())

    await client.forwarder.flush()

    first, second = stub.received
    assert second.arrived - first.arrived >= 1.0


async def test_retry_after_http_date_is_a_lower_bound(forwarding_client, stub, clock):
    client = await forwarding_client(retry_max=0.05)
    clock.set(int(clock.now()))
    stub.script = [(429, {"Retry-After": email.utils.formatdate(clock.now() + 1, usegmt=True)})]
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now())

    await client.forwarder.flush()

    first, second = stub.received
    assert second.arrived - first.arrived >= 1.0


async def test_environment_rows_go_only_under_their_own_token(forwarding_client, stub, clock):
    client = await forwarding_client(tokens={"development": UPSTREAM_DEV})  # no production token
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now())
    await post_metrics(client, {"flag-p": (5, 5)}, clock.now(), token=PROD_TOKEN, app="prod-app")

    await client.forwarder.flush()
    await client.forwarder.flush()

    assert stub.received
    for rec in stub.received:
        env = token_environment(rec)
        assert {m["environment"] for m in rec.body["metrics"]} <= {env}
        assert {a["environment"] for a in rec.body["applications"]} <= {env}
    assert sent_flags(stub) == {"flag-a": (1, 0)}
    assert client.stats.environments_without_token == {"production"}
    metrics = await (await client.get("/internal-backstage/prometheus")).text()
    assert "metrics_proxy_upstream_environments_without_token 1.0" in metrics
    report = status_report(client.forwarder.outbox.db)["environments"]["production"]
    assert (report["pending_rows"], report["pending_yes"], report["pending_no"]) == (1, 5, 5)


async def test_backlog_drains_oldest_hour_first(forwarding_client, stub, clock):
    client = await forwarding_client(max_body_bytes=1024, max_in_flight=1)
    now = clock.now()
    for hours_ago in (5, 3, 1, 0):
        await post_metrics(client, {f"flag-{n}": (1, 0) for n in range(8)}, now - hours_ago * 3600)

    await client.forwarder.flush()

    stamps = [m["timestamp"] for r in stub.received for m in r.body["metrics"]]
    assert len(stub.received) > 4 and stamps == sorted(stamps)


async def test_backlog_is_sent_with_bounded_parallelism(forwarding_client, stub, clock):
    client = await forwarding_client(max_body_bytes=1024, max_in_flight=4)

    async def slow(request, rec):
        await asyncio.sleep(0.05)
        return web.Response(status=202)

    stub.default = slow
    flags = {f"flag-{n:03d}": (n + 1, 0) for n in range(120)}
    await post_metrics(client, flags, clock.now())

    assert await client.forwarder.flush() == 0

    assert len(stub.received) >= 10 and stub.max_concurrent == 4
    assert all(r.size <= 1024 for r in stub.received)
    assert sent_flags(stub) == flags


async def test_compress_false_sends_the_bulk_body_as_plain_json(forwarding_client, stub, clock):
    client = await forwarding_client(compress=False)
    await post_metrics(client, {"flag-a": (2, 1)}, clock.now())

    assert await client.forwarder.flush() == 0

    [rec] = stub.received
    assert "Content-Encoding" not in rec.headers and rec.wire_size == rec.size
    assert sent_flags(stub) == {"flag-a": (2, 1)}
