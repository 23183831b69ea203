"""Health, readiness and the Prometheus endpoint on a real store."""

from __future__ import annotations

import sqlite3

from proxy.api.state import STORE
from proxy.storage.migrations import LATEST
from tests.scrape_support import metrics_body
from tests.support import client_headers


async def test_health_says_ok(client):
    resp = await client.get("/internal-backstage/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "OK"}


async def test_ready_when_database_writable(client):
    resp = await client.get("/internal-backstage/ready")
    assert resp.status == 200
    assert await resp.json() == {"status": "READY"}


async def test_not_ready_when_schema_is_newer_than_release(make_client, make_settings):
    settings = make_settings()
    settings.database_path.parent.mkdir(parents=True)
    with sqlite3.connect(settings.database_path) as db:
        db.execute(f"PRAGMA user_version = {LATEST + 1}")
    client = await make_client()
    resp = await client.get("/internal-backstage/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "NOT_READY"
    assert "newer than this release" in body["error"]
    # It still answers health, and refuses to acknowledge counts it cannot store.
    assert (await client.get("/internal-backstage/health")).status == 200
    assert (await client.get("/metrics")).status == 200
    post = await client.post("/api/client/metrics", json=metrics_body("a", {"f": (1, 0)}), headers=client_headers())
    assert post.status == 503
    assert post.headers["Retry-After"]


async def test_not_ready_when_database_is_full_then_ready_again(client):
    store = client.server.app[STORE]
    # SQLite's own limit on the file size: commits that need a new page fail with SQLITE_FULL.
    store.pragma(f"max_page_count = {store.pragma('page_count')}")
    many = {f"flag-{i:04d}": (i, 1) for i in range(300)}
    post = await client.post("/api/client/metrics", json=metrics_body("app", many), headers=client_headers())
    assert post.status == 503
    resp = await client.get("/internal-backstage/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "NOT_READY"
    assert "full" in body["error"]
    assert (await client.get("/internal-backstage/health")).status == 200

    store.pragma("max_page_count = 1000000")
    assert (await client.get("/internal-backstage/ready")).status == 200  # without waiting for traffic
    small = {"flag-a": (1, 0)}
    assert (await client.post("/api/client/metrics", json=metrics_body("app", small), headers=client_headers())).status == 202
    assert (await client.get("/internal-backstage/ready")).status == 200
