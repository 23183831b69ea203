"""Log lines of a real proxy: no configured secret ever appears in them, in text or JSON; JSON
lines are one object each with a stable set of keys; the upstream's troubles are told once per
change (backing off, paused, resumed, drained), not once per retry."""

from __future__ import annotations

import asyncio
import json
import re
import time

import aiohttp
import pytest
from aiohttp import web

from proxy.observability.logs import JSON_KEYS, REDACTED, Redactor
from tests.forwarding import UPSTREAM_DEV, metrics_body, upstream_env
from tests.support import ADMIN_TOKEN, CLIENT_TOKEN, FRONTEND_TOKEN, PROD_TOKEN, ProxyProcess, client_headers
from tests.upstream_stub import token_environment

UPSTREAM_PROD = "default:production.upstream-prod-secret-value"
HEADER_SECRET = "x-extra-header-secret-value"
SECRETS = [CLIENT_TOKEN, PROD_TOKEN, FRONTEND_TOKEN, ADMIN_TOKEN, UPSTREAM_DEV, UPSTREAM_PROD, HEADER_SECRET]


def secret_parts() -> list[str]:
    """Each secret, and the secret part of each token on its own."""
    parts = set(SECRETS)
    parts |= {s.partition(".")[2] for s in SECRETS if "." in s and len(s.partition(".")[2]) >= 6}
    return sorted(parts)


async def post(session: aiohttp.ClientSession, url: str, token: str | None, path: str = "/api/client/metrics",
               **body) -> int:
    headers = client_headers(token) if token else {"Content-Type": "application/json"}
    async with session.post(url + path, json=body or metrics_body({"flag": (1, 0)}, time.time()),
                            headers=headers) as response:
        return response.status


async def until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_full_run_logs_no_secret_and_one_line_per_upstream_change(log_format, proxies, tmp_path, stub):
    # For development the upstream fails (503s), refuses (401), then takes everything.
    answers = [503, 503, 503, 401]

    async def by_environment(request, rec):
        if token_environment(rec) == "development" and answers:
            return web.Response(status=answers.pop(0))
        return web.Response(status=202)

    stub.default = by_environment
    env = upstream_env(stub.url)
    env.update({
        "METRICS_PROXY_UPSTREAM_TOKENS": f"development={UPSTREAM_DEV},production={UPSTREAM_PROD}",
        "METRICS_PROXY_UPSTREAM_HEADERS": f"X-Extra={HEADER_SECRET}",
        "METRICS_PROXY_UPSTREAM_AUTH_RETRY_INTERVAL": "0.5",
        "METRICS_PROXY_LOG_LEVEL": "DEBUG",
        "METRICS_PROXY_LOG_FORMAT": log_format,
    })
    proxy = ProxyProcess(tmp_path / "data", extra_env=env)
    proxies.append(proxy)
    await asyncio.to_thread(proxy.start)
    async with aiohttp.ClientSession() as session:
        for token in (CLIENT_TOKEN, PROD_TOKEN):
            assert await post(session, proxy.url, token) == 202
        # checked with the upstream, which has no /edge/validate: refused or 503
        assert await post(session, proxy.url, "default:development.not-a-configured-secret") in (403, 503)
        assert await post(session, proxy.url, None) == 401
        assert await post(session, proxy.url, FRONTEND_TOKEN) == 403  # a frontend token on the client API
        assert await post(session, proxy.url, CLIENT_TOKEN, yes="not a body") == 400
        async with session.get(proxy.url + "/api/client/metrics/feature-toggles",
                               headers={"Authorization": ADMIN_TOKEN}) as response:
            assert response.status == 200
        await until(lambda: len(stub.delivered()) >= 2)
        await until(lambda: "drained" in proxy.log())
    assert await asyncio.to_thread(proxy.terminate) == 0
    log = proxy.log()

    leaked = [s for s in secret_parts() if s in log]
    assert not leaked, f"secrets in the log: {leaked}"
    lines = log.splitlines()
    assert len(lines) > 10
    if log_format == "json":
        for line in lines:
            record = json.loads(line)
            assert tuple(record) == JSON_KEYS, line
        messages = [json.loads(line)["message"] for line in lines]
        assert {json.loads(line)["process"] for line in lines} == {"primary"}
    else:
        messages = lines
        assert all(line[:4].isdigit() for line in lines)  # each line starts with its time: no stray output
    # the failing upstream: one line per change, not one per retry
    development = [m for m in messages if "upstream of 'development'" in m]
    changes = [re.search(r"upstream of 'development': (backing off|paused|resumed|drained|failing)", m).group(1)
               for m in development]
    assert changes == ["backing off", "paused", "resumed", "drained"], development
    assert sum("metrics-proxy" in m and "listening on" in m for m in messages) == 1


def test_the_redactor_catches_secrets_in_messages_arguments_and_tracebacks():
    import logging

    redactor = Redactor(["configured-secret-1"])
    try:
        raise ValueError("bad token default:development.abcdef0123456789 and configured-secret-1")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "token %s from %s", ("configured-secret-1",
                                   "https://u:p4ssw0rd@host/api"), exc_info=__import__("sys").exc_info())
    redactor.filter(record)
    text = logging.Formatter().format(record)
    for secret in ("configured-secret-1", "abcdef0123456789", "p4ssw0rd"):
        assert secret not in text
    assert "default:development." + REDACTED in text
    sdk_key = "sdk-12345678-1234-1234-1234-123456789abc"
    assert sdk_key not in redactor.redact(f"the key {sdk_key} was refused")
