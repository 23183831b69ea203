"""Tokens not in the local lists, checked with a loopback upstream's POST /edge/validate."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from proxy.api.state import STORE
from proxy.unleash.state import AUTH
from proxy.unleash.upstream.token_validation import validate_url
from tests.support import CLIENT_TOKEN, client_headers, iso, this_hour

UPSTREAM_CLIENT = "default:development.upstream-only-client"
UPSTREAM_PROD = "default:production.upstream-only-prod"
UPSTREAM_FRONTEND = "default:development.upstream-only-frontend"
UPSTREAM_ADMIN = "*:*.upstream-only-admin"
INVALID = "default:development.revoked"

VALID = {
    UPSTREAM_CLIENT: {"type": "client", "projects": ["default"], "environment": "development"},
    UPSTREAM_PROD: {"type": "client", "projects": ["default"], "environment": "production"},
    UPSTREAM_FRONTEND: {"type": "frontend", "projects": ["default"], "environment": "development"},
    UPSTREAM_ADMIN: {"type": "admin", "projects": ["*"], "environment": "*"},
}


class FakeUnleash:
    """Answers /edge/validate as Unleash 7.5.1 does: only the valid tokens, 403 with a client token."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.down = False
        self.valid = dict(VALID)  # a test may revoke a token

    async def validate(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        if "Authorization" in request.headers:
            return web.json_response({"message": "forbidden"}, status=403)
        tokens = (await request.json())["tokens"]
        self.asked.extend(tokens)
        return web.json_response({"tokens": [{"token": t, **self.valid[t]} for t in tokens if t in self.valid]})


@pytest.fixture
async def upstream(aiohttp_server):
    fake = FakeUnleash()
    app = web.Application()
    app.router.add_post("/edge/validate", fake.validate)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("/api"))
    return fake


@pytest.fixture
async def proxy(make_client, upstream):
    return await make_client(upstream={"url": upstream.url, "request_timeout": 5.0})


def metrics_body() -> dict:
    hour = this_hour()
    return {"appName": "web", "bucket": {"start": iso(hour), "stop": iso(hour + 60),
                                         "toggles": {"flag-a": {"yes": 1, "no": 0}}}}


async def post_metrics(client, token: str) -> int:
    resp = await client.post("/api/client/metrics", json=metrics_body(), headers=client_headers(token))
    return resp.status


def test_validate_url_sits_beside_api():
    assert validate_url("http://unleash:4242/api") == "http://unleash:4242/edge/validate"
    assert validate_url("https://example.com/unleash/api/") == "https://example.com/unleash/edge/validate"
    assert validate_url("http://unleash:4242") == "http://unleash:4242/edge/validate"


async def test_valid_client_token_is_checked_once(proxy, upstream):
    assert await post_metrics(proxy, UPSTREAM_CLIENT) == 202
    assert await post_metrics(proxy, UPSTREAM_CLIENT) == 202
    assert upstream.asked == [UPSTREAM_CLIENT]


async def test_counts_go_to_the_environment_the_upstream_names(proxy, upstream):
    assert await post_metrics(proxy, UPSTREAM_PROD) == 202
    assert await proxy.server.app[STORE].totals() == [("production", "web", "flag-a", 1, 0)]


async def test_invalid_token_is_refused_and_remembered(proxy, upstream):
    assert await post_metrics(proxy, INVALID) == 403
    assert await post_metrics(proxy, INVALID) == 403
    assert upstream.asked == [INVALID]


async def test_each_kind_only_on_its_own_endpoints(proxy, upstream):
    assert await post_metrics(proxy, UPSTREAM_FRONTEND) == 403
    frontend = await proxy.post("/api/frontend/client/metrics", json=metrics_body(),
                                headers=client_headers(UPSTREAM_FRONTEND))
    assert frontend.status == 202
    client_on_frontend = await proxy.post("/api/frontend/client/metrics", json=metrics_body(),
                                          headers=client_headers(UPSTREAM_CLIENT))
    assert client_on_frontend.status == 403
    admin = await proxy.get("/api/client/metrics/feature-toggles", headers={"Authorization": UPSTREAM_ADMIN})
    assert admin.status == 200
    assert await post_metrics(proxy, UPSTREAM_ADMIN) == 403
    not_admin = await proxy.get("/api/client/metrics/feature-toggles", headers={"Authorization": UPSTREAM_CLIENT})
    assert not_admin.status == 403


async def test_local_tokens_never_ask_the_upstream(proxy, upstream):
    assert await post_metrics(proxy, CLIENT_TOKEN) == 202
    assert upstream.asked == []


async def test_verdicts_survive_a_restart(make_client, upstream):
    first = await make_client(upstream={"url": upstream.url})
    assert await post_metrics(first, UPSTREAM_CLIENT) == 202
    assert await post_metrics(first, INVALID) == 403
    await first.close()
    second = await make_client(upstream={"url": upstream.url})
    assert await post_metrics(second, UPSTREAM_CLIENT) == 202
    assert await post_metrics(second, INVALID) == 403
    assert upstream.asked == [UPSTREAM_CLIENT, INVALID]
    # The file keeps digests only, never a usable token.
    raw = b"".join(p.read_bytes() for p in second.server.app[STORE].path.parent.iterdir())
    assert UPSTREAM_CLIENT.encode() not in raw and INVALID.encode() not in raw


async def test_concurrent_first_requests_share_one_check(proxy, upstream):
    statuses = await asyncio.gather(*(post_metrics(proxy, UPSTREAM_CLIENT) for _ in range(8)))
    assert statuses == [202] * 8
    assert upstream.asked == [UPSTREAM_CLIENT]


async def test_tokens_are_revalidated_in_the_background_after_the_interval(make_client, upstream, clock):
    proxy = await make_client(upstream={"url": upstream.url}, token_revalidation_interval=600)
    validator = proxy.server.app[AUTH].validator
    assert await post_metrics(proxy, UPSTREAM_CLIENT) == 202
    clock.advance(599)
    assert await post_metrics(proxy, UPSTREAM_CLIENT) == 202
    assert upstream.asked == [UPSTREAM_CLIENT]
    del upstream.valid[UPSTREAM_CLIENT]  # revoked upstream
    clock.advance(2)
    # The due re-check does not hold the request up: it goes on with the last verdict...
    assert await post_metrics(proxy, UPSTREAM_CLIENT) == 202
    await validator.settle()
    assert upstream.asked == [UPSTREAM_CLIENT, UPSTREAM_CLIENT]
    # ...and the answer applies from then on.
    assert await post_metrics(proxy, UPSTREAM_CLIENT) == 403


async def test_validation_calls_on_the_scrape(proxy, upstream):
    await post_metrics(proxy, UPSTREAM_CLIENT)
    await post_metrics(proxy, UPSTREAM_CLIENT)
    upstream.down = True
    await post_metrics(proxy, UPSTREAM_PROD)
    text = await (await proxy.get("/metrics")).text()
    assert "metrics_proxy_token_validation_requests_total 2" in text.splitlines()
    assert "metrics_proxy_token_validation_failures_total 1" in text.splitlines()


async def test_upstream_down_known_tokens_work_unknown_get_503(make_client, upstream, clock):
    proxy = await make_client(upstream={"url": upstream.url}, token_revalidation_interval=600)
    validator = proxy.server.app[AUTH].validator
    assert await post_metrics(proxy, UPSTREAM_CLIENT) == 202
    assert await post_metrics(proxy, INVALID) == 403
    upstream.down = True
    clock.advance(601)  # both verdicts are due for re-validation, which fails
    assert await post_metrics(proxy, UPSTREAM_CLIENT) == 202
    assert await post_metrics(proxy, INVALID) == 403
    await validator.settle()
    assert validator.failures == 2
    # A failed re-check is retried a minute later, not on every request.
    assert await post_metrics(proxy, UPSTREAM_CLIENT) == 202
    await validator.settle()
    assert validator.failures == 2
    resp = await proxy.post("/api/client/metrics", json=metrics_body(), headers=client_headers(UPSTREAM_PROD))
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) > 0
    assert (await resp.json())["name"] == "ServiceUnavailableError"
    upstream.down = False
    assert await post_metrics(proxy, UPSTREAM_PROD) == 202


async def test_unreachable_upstream_gives_503_for_unknown_tokens(make_client, unused_tcp_port):
    proxy = await make_client(upstream={"url": f"http://127.0.0.1:{unused_tcp_port}/api", "request_timeout": 2.0})
    resp = await proxy.post("/api/client/metrics", json=metrics_body(), headers=client_headers(UPSTREAM_CLIENT))
    assert resp.status == 503
    assert "Retry-After" in resp.headers
    assert await post_metrics(proxy, CLIENT_TOKEN) == 202
