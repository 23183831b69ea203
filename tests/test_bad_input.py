"""Bad input gets a clear error in Unleash's JSON error body, naming the field that is wrong, and
nothing already acknowledged is lost because of it."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from proxy.api.state import STORE
from tests.support import CLIENT_TOKEN, client_headers, epoch_ms, iso, this_hour

# 19:38 into the current hour (when the module is loaded): never later than the clock fixture, which
# stands at half past the hour of each test. Nanoseconds, as the Python SDK writes them.
AT = this_hour() + 19 * 60 + 38
GOOD_BUCKET = {"start": iso(AT, ".151506186"), "stop": iso(AT + 1),
               "toggles": {"flag-a": {"yes": 1, "no": 2}}}


def metrics(**changes):
    body = {"appName": "app", "instanceId": "i-1", "bucket": json.loads(json.dumps(GOOD_BUCKET))}
    body.update(changes)
    return body


def with_toggle(toggle):
    return metrics(bucket={**GOOD_BUCKET, "toggles": {"my.flag": toggle}})


# (case id, path, body (dict -> JSON, bytes -> raw), content type, status, field named in details[0].path)
CASES = [
    ("missing appName", "/api/client/metrics", {"bucket": GOOD_BUCKET}, "application/json", 400, "appName"),
    ("empty appName", "/api/client/metrics", metrics(appName=""), "application/json", 400, "appName"),
    ("appName not a string", "/api/client/metrics", metrics(appName=5), "application/json", 400, "appName"),
    ("negative yes", "/api/client/metrics", with_toggle({"yes": -1, "no": 0}), "application/json", 400,
     "bucket.toggles['my.flag'].yes"),
    ("negative no", "/api/client/metrics", with_toggle({"yes": 0, "no": -3}), "application/json", 400,
     "bucket.toggles['my.flag'].no"),
    ("count as string", "/api/client/metrics", with_toggle({"yes": "7"}), "application/json", 400,
     "bucket.toggles['my.flag'].yes"),
    ("count above u32", "/api/client/metrics", with_toggle({"yes": 2**40}), "application/json", 400,
     "bucket.toggles['my.flag'].yes"),
    ("negative variant", "/api/client/metrics", with_toggle({"yes": 1, "variants": {"red": -1}}), "application/json",
     400, "bucket.toggles['my.flag'].variants['red']"),
    ("bad start", "/api/client/metrics", metrics(bucket={**GOOD_BUCKET, "start": "yesterday"}), "application/json",
     400, "bucket.start"),
    ("missing stop", "/api/client/metrics", metrics(bucket={"start": GOOD_BUCKET["start"], "toggles": {}}),
     "application/json", 400, "bucket.stop"),
    ("start after stop", "/api/client/metrics",
     metrics(bucket={**GOOD_BUCKET, "start": iso(this_hour() + 3600), "stop": iso(this_hour())}),
     "application/json", 400, "bucket.start"),
    ("toggles not an object", "/api/client/metrics", metrics(bucket={**GOOD_BUCKET, "toggles": []}),
     "application/json", 400, "bucket.toggles"),
    ("body not an object", "/api/client/metrics", [1, 2], "application/json", 400, None),
    ("not JSON", "/api/client/metrics", b"{appName: nope", "application/json", 400, None),
    ("wrong content type", "/api/client/metrics", b"appName=x", "application/x-www-form-urlencoded", 415, None),
    ("register without strategies", "/api/client/register",
     {"appName": "a", "interval": 10, "started": iso(AT - 32, ".000")}, "application/json", 400, "strategies"),
    ("register bad started", "/api/client/register",
     {"appName": "a", "interval": 10, "started": "soon", "strategies": []}, "application/json", 400, "started"),
    ("register negative interval", "/api/client/register",
     {"appName": "a", "interval": -1, "started": AT, "strategies": []}, "application/json", 400, "interval"),
    ("bulk without metrics", "/api/client/metrics/bulk", {"applications": []}, "application/json", 400, "metrics"),
    ("bulk row without featureName", "/api/client/metrics/bulk",
     {"applications": [], "metrics": [{"appName": "a", "environment": "development", "yes": 1}]},
     "application/json", 400, "metrics[0].featureName"),
    ("bulk negative count", "/api/client/metrics/bulk",
     {"applications": [], "metrics": [{"featureName": "f", "appName": "a", "environment": "development", "no": -2}]},
     "application/json", 400, "metrics[0].no"),
]


@pytest.mark.parametrize("case, path, body, ctype, status, field", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_refused_with_the_field_named(client, case, path, body, ctype, status, field):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await client.post(path, data=data, headers={"Authorization": CLIENT_TOKEN, "Content-Type": ctype})
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    error = await resp.json()
    assert set(error) == {"id", "name", "message", "details"}
    assert error["details"] and "message" in error["details"][0]
    if status == 400:
        assert error["name"] == "BadDataError"
        assert error["message"].startswith("Request validation failed")
    assert error["details"][0].get("path") == field


async def test_bad_input_does_not_disturb_acknowledged_counts(client):
    good = metrics()
    assert (await client.post("/api/client/metrics", json=good, headers=client_headers())).status == 202
    for _case, path, body, ctype, *_ in CASES:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        await client.post(path, data=data, headers={"Authorization": CLIENT_TOKEN, "Content-Type": ctype})
    assert (await client.post("/api/client/metrics", json=good, headers=client_headers())).status == 202
    assert await client.app[STORE].totals() == [("development", "app", "flag-a", 2, 4)]


async def test_epoch_millisecond_timestamps_and_null_fields_are_accepted(client, clock):
    stop = clock.now()
    body = metrics(bucket={"start": epoch_ms(stop - 1), "stop": epoch_ms(stop), "toggles": {"f": {"yes": 1, "no": 0,
                   "variants": None}}}, yggdrasilVersion=None, environment="ignored", extraField={"x": 1})
    assert (await client.post("/api/client/metrics", json=body, headers=client_headers())).status == 202


async def test_missing_content_type_is_read_as_json(client):
    resp = await client.post("/api/client/metrics", data=json.dumps(metrics()).encode(),
                             headers={"Authorization": CLIENT_TOKEN}, skip_auto_headers=["Content-Type"])
    assert resp.status == 202


# --- size limits and compression -----------------------------------------------------------------

async def test_body_over_the_limit_gets_413(make_client):
    client = await make_client(max_body_size=4096)
    body = metrics(bucket={**GOOD_BUCKET, "toggles": {f"flag-{i}": {"yes": 1} for i in range(400)}})
    resp = await client.post("/api/client/metrics", json=body, headers=client_headers())
    assert resp.status == 413
    error = await resp.json()
    assert error["name"] == "ContentTooLargeError" and "4096" in error["message"]


async def test_chunked_body_without_length_over_the_limit_gets_413(make_client):
    client = await make_client(max_body_size=4096)

    async def chunks():
        yield b'{"appName":"a","pad":"'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    resp = await client.post("/api/client/metrics", data=chunks(), headers=client_headers())
    assert resp.status == 413


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_compressed_bodies_are_accepted(client, encoding, compress):
    resp = await client.post(
        "/api/client/metrics",
        data=compress(json.dumps(metrics()).encode()),
        headers={**client_headers(), "Content-Encoding": encoding},
    )
    assert resp.status == 202
    assert await client.app[STORE].totals() == [("development", "app", "flag-a", 1, 2)]


async def test_gzip_bomb_gets_413_at_the_decompressed_limit(make_client):
    client = await make_client(max_body_size=1024 * 1024)
    bomb = gzip.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}", compresslevel=9)
    assert len(bomb) < 100 * 1024
    resp = await client.post(
        "/api/client/metrics", data=bomb, headers={**client_headers(), "Content-Encoding": "gzip"}
    )
    assert resp.status == 413


# --- tokens and environments ----------------------------------------------------------------------

async def test_missing_token_is_401_and_unknown_token_is_403(client):
    resp = await client.post("/api/client/metrics", json=metrics(), headers={"Content-Type": "application/json"})
    assert resp.status == 401 and (await resp.json())["name"] == "AuthenticationRequired"
    resp = await client.post("/api/client/metrics", json=metrics(),
                             headers=client_headers("default:development.not-a-known-secret"))
    assert resp.status == 403
    assert "not-a-known-secret" not in await resp.text()


async def test_token_kinds_are_kept_apart(client):
    from tests.support import ADMIN_TOKEN, FRONTEND_TOKEN

    # A frontend token cannot post client metrics, a client token cannot read, and vice versa.
    assert (await client.post("/api/client/metrics", json=metrics(), headers=client_headers(FRONTEND_TOKEN))).status == 403
    assert (await client.post("/api/frontend/client/metrics", json=metrics(),
                              headers=client_headers(FRONTEND_TOKEN))).status == 202
    assert (await client.post("/api/frontend/client/metrics", json=metrics(),
                              headers=client_headers(CLIENT_TOKEN))).status == 403
    assert (await client.get("/api/client/metrics/feature-toggles", headers={"Authorization": CLIENT_TOKEN})).status == 403
    assert (await client.get("/api/client/metrics/feature-toggles", headers={"Authorization": ADMIN_TOKEN})).status == 200


async def test_environment_comes_from_the_token(client):
    from tests.support import PROD_TOKEN

    body = metrics(environment="development")
    assert (await client.post("/api/client/metrics", json=body, headers=client_headers(PROD_TOKEN))).status == 202
    assert await client.app[STORE].totals() == [("production", "app", "flag-a", 1, 2)]


async def test_open_mode_accepts_anything_under_default(make_client):
    client = await make_client(auth="open", client_tokens=[], admin_tokens=[])
    assert (await client.post("/api/client/metrics", json=metrics(), headers={"Content-Type": "application/json"})).status == 202
    assert (await client.get("/api/client/metrics/feature-toggles")).status == 200
    assert await client.app[STORE].totals() == [("default", "app", "flag-a", 1, 2)]


async def test_unknown_paths_and_methods_get_the_json_error_body(client):
    missing = await client.get("/api/client/no-such-thing", headers=client_headers())
    assert missing.status == 404
    body = await missing.json()
    assert body["name"] == "NotFoundError" and "/api/client/no-such-thing" in body["message"]
    assert set(body) == {"id", "name", "message", "details"}
    wrong_method = await client.get("/api/client/metrics", headers=client_headers())
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "POST"
    body = await wrong_method.json()
    assert body["name"] == "MethodNotAllowedError" and "use POST" in body["message"]
