"""GET /api/client/features from a features_file (no upstream): recorded SDK requests, ETag/304,
token scoping, the SDKs' query filters, one flag by name, reloading the file."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from proxy.config import ConfigError, load_settings
from proxy.unleash.features.file_source import FeaturesFileError
from proxy.unleash.state import FEATURE_SOURCE
from tests.support import (
    CLIENT_TOKEN,
    FIXTURES,
    FRONTEND_TOKEN,
    PROD_TOKEN,
    recorded_requests,
)

FEATURES_FILE = FIXTURES / "features" / "client-features.json"
PAYMENTS_TOKEN = "payments:development.payments-secret"
ALL_PROJECTS_TOKEN = "*:development.all-projects-secret"
# Headers a replay must not copy: they describe the recorded connection, not the request.
HOP_HEADERS = {"host", "connection", "content-length", "accept-encoding"}


def fixture_document() -> dict:
    return json.loads(FEATURES_FILE.read_text())


def names(document: dict) -> list[str]:
    return [feature["name"] for feature in document["features"]]


@pytest.fixture
async def file_client(make_client, tmp_path):
    features_file = tmp_path / "features.json"
    features_file.write_bytes(FEATURES_FILE.read_bytes())
    recorded_tokens = sorted({r["headers"]["Authorization"] for r in recorded_requests("features")})
    client = await make_client(
        features_file=str(features_file),
        client_tokens=[CLIENT_TOKEN, PROD_TOKEN, PAYMENTS_TOKEN, ALL_PROJECTS_TOKEN, *recorded_tokens],
    )
    client.features_file = features_file
    return client


def auth(token: str = CLIENT_TOKEN, **extra: str) -> dict[str, str]:
    return {"Authorization": token, **extra}


async def test_recorded_sdk_feature_requests_replay(file_client):
    """Each SDK's first fetch gets the document and an ETag; its conditional refetches get 304 once
    they present that ETag (the recorded one was Unleash's, so it must not match ours)."""
    records = recorded_requests("features")
    assert {r["file"].split("/")[0] for r in records} >= {
        "python-sdk-UnleashClient-6.9.1", "node-sdk-unleash-client-6.12.1",
    }
    served_etag: dict[str, str] = {}
    for record in records:
        sdk = record["file"].split("/")[0]
        headers = {k: v for k, v in record["headers"].items() if k.lower() not in HOP_HEADERS}
        resp = await file_client.request(record["method"], record["path"], headers=headers)
        assert resp.status == 200, record["file"]
        assert resp.headers["ETag"]
        body = await resp.json()
        assert "harness.flag-a" in names(body)
        assert body["version"] == 2
        served_etag.setdefault(sdk, resp.headers["ETag"])
        assert resp.headers["ETag"] == served_etag[sdk]
        if record["upstream_status"] == 304:
            headers["If-None-Match"] = served_etag[sdk]
            again = await file_client.request(record["method"], record["path"], headers=headers)
            assert again.status == 304, record["file"]
            assert await again.read() == b""
            assert again.headers["ETag"] == served_etag[sdk]


async def test_etag_changes_with_the_filter_and_304_needs_a_match(file_client):
    first = await file_client.get("/api/client/features", headers=auth())
    etag = first.headers["ETag"]
    assert (await file_client.get("/api/client/features", headers=auth(**{"If-None-Match": etag}))).status == 304
    weak_list = f'"other", W/{etag}'
    assert (await file_client.get("/api/client/features", headers=auth(**{"If-None-Match": weak_list}))).status == 304
    stale = await file_client.get("/api/client/features", headers=auth(**{"If-None-Match": '"1fc12c72:21:v1"'}))
    assert stale.status == 200
    filtered = await file_client.get("/api/client/features?namePrefix=harness.", headers=auth(**{"If-None-Match": etag}))
    assert filtered.status == 200
    assert filtered.headers["ETag"] != etag


async def test_token_scoping_by_project(file_client):
    everything = fixture_document()
    default_only = await (await file_client.get("/api/client/features", headers=auth(CLIENT_TOKEN))).json()
    assert names(default_only) == [f["name"] for f in everything["features"] if f["project"] == "default"]
    payments = await (await file_client.get("/api/client/features", headers=auth(PAYMENTS_TOKEN))).json()
    assert names(payments) == ["payments.checkout"]
    star = await (await file_client.get("/api/client/features", headers=auth(ALL_PROJECTS_TOKEN))).json()
    assert names(star) == names(everything)
    # A project filter cannot widen what the token covers.
    widened = await (await file_client.get("/api/client/features?project=payments", headers=auth(CLIENT_TOKEN))).json()
    assert names(widened) == []


async def test_query_filters_project_name_prefix_and_tag(file_client):
    async def served(query: str) -> list[str]:
        resp = await file_client.get(f"/api/client/features?{query}", headers=auth(ALL_PROJECTS_TOKEN))
        assert resp.status == 200
        return names(await resp.json())

    assert await served("project=payments") == ["payments.checkout"]
    assert await served("project=payments&project=default") == names(fixture_document())
    assert await served("namePrefix=harness.") == [
        "harness.flag-a", "harness.flag-b", "harness.disabled", "harness.variant-flag",
    ]
    assert await served("tag=simple:beta") == ["beta.segmented"]
    assert await served("tag=simple:beta&tag=team:payments") == ["beta.segmented", "payments.checkout"]
    assert await served("namePrefix=harness.&tag=simple:harness") == ["harness.flag-a"]
    assert await served("namePrefix=nothing") == []


async def test_query_echoes_the_callers_filters(file_client):
    resp = await file_client.get("/api/client/features?namePrefix=harness.&tag=simple:harness", headers=auth())
    body = await resp.json()
    assert body["query"] == {
        "inlineSegmentConstraints": True, "namePrefix": "harness.", "tag": ["simple:harness"], "environment": "development",
    }
    # The upstream's own ETag in meta describes its answer, not this one.
    assert body["meta"] == {"revisionId": 21}
    assert body["segments"] == fixture_document()["segments"]


async def test_bad_tag_is_a_400_naming_the_parameter(file_client):
    resp = await file_client.get("/api/client/features?tag=no-colon", headers=auth())
    assert resp.status == 400
    body = await resp.json()
    assert body["name"] == "BadDataError"
    assert body["details"][0]["path"] == "tag"
    assert "no-colon" in body["details"][0]["message"]


async def test_one_flag_by_name(file_client):
    wanted = next(f for f in fixture_document()["features"] if f["name"] == "harness.variant-flag")
    resp = await file_client.get("/api/client/features/harness.variant-flag", headers=auth())
    assert resp.status == 200
    assert await resp.json() == wanted
    etag = resp.headers["ETag"]
    again = await file_client.get("/api/client/features/harness.variant-flag", headers=auth(**{"If-None-Match": etag}))
    assert again.status == 304

    missing = await file_client.get("/api/client/features/no-such-flag", headers=auth())
    assert missing.status == 404
    assert (await missing.json())["name"] == "NotFoundError"
    # A flag of a project the token does not cover does not exist for that token.
    hidden = await file_client.get("/api/client/features/payments.checkout", headers=auth(CLIENT_TOKEN))
    assert hidden.status == 404
    assert (await file_client.get("/api/client/features/payments.checkout", headers=auth(PAYMENTS_TOKEN))).status == 200


async def test_needs_a_client_token(file_client):
    assert (await file_client.get("/api/client/features")).status == 401
    wrong_kind = await file_client.get("/api/client/features", headers=auth(FRONTEND_TOKEN))
    assert wrong_kind.status == 403
    assert (await wrong_kind.json())["name"] == "ForbiddenError"


async def test_features_file_is_reloaded_when_it_changes(file_client):
    first = await file_client.get("/api/client/features", headers=auth())
    etag = first.headers["ETag"]
    changed = fixture_document()
    changed["features"] = [f for f in changed["features"] if f["name"] != "harness.flag-b"]
    file_client.features_file.write_text(json.dumps(changed))
    await file_client.app[FEATURE_SOURCE].refresh()

    resp = await file_client.get("/api/client/features", headers=auth(**{"If-None-Match": etag}))
    assert resp.status == 200
    assert "harness.flag-b" not in names(await resp.json())


async def test_a_broken_features_file_keeps_the_last_good_document(file_client, caplog):
    good = await file_client.get("/api/client/features", headers=auth())
    file_client.features_file.write_text('{"features": "oops"')
    with caplog.at_level(logging.ERROR):
        await file_client.app[FEATURE_SOURCE].refresh()
        await file_client.app[FEATURE_SOURCE].refresh()
    assert sum("still serving the last good features" in r.message for r in caplog.records) == 1
    again = await file_client.get("/api/client/features", headers=auth())
    assert again.status == 200
    assert again.headers["ETag"] == good.headers["ETag"]

    os.unlink(file_client.features_file)
    await file_client.app[FEATURE_SOURCE].refresh()
    assert (await file_client.get("/api/client/features", headers=auth())).status == 200


async def test_without_upstream_or_file_an_empty_document_and_a_warning(make_client, caplog):
    with caplog.at_level(logging.WARNING):
        client = await make_client()
    assert any("no upstream and no features_file" in r.message for r in caplog.records)
    resp = await client.get("/api/client/features", headers=auth())
    assert resp.status == 200
    body = await resp.json()
    assert body["features"] == [] and body["version"] == 2
    assert resp.headers["ETag"]


async def test_an_unreadable_features_file_stops_the_start(make_client, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(FeaturesFileError, match="features_file .* is not a client features document"):
        await make_client(features_file=str(bad))
    with pytest.raises(FeaturesFileError, match="cannot be read"):
        await make_client(features_file=str(tmp_path / "missing.json"))


def test_feature_options_from_file_and_environment(tmp_path):
    shipped = load_settings(config_file=str(FIXTURES.parent.parent / "config" / "metrics-proxy.toml"), environ={})
    assert shipped.features_file is None and shipped.features_refresh_interval == 10.0
    from_env = load_settings(environ={
        "METRICS_PROXY_FEATURES_FILE": "/srv/features.json", "METRICS_PROXY_FEATURES_REFRESH_INTERVAL": "2.5",
    })
    assert from_env.features_file == "/srv/features.json"
    assert from_env.features_refresh_interval == 2.5
    with pytest.raises(ConfigError, match="features_refresh_interval"):
        load_settings(environ={"METRICS_PROXY_FEATURES_REFRESH_INTERVAL": "0"})


async def test_large_answers_are_gzipped_for_sdks_that_accept_it(file_client):
    plain = await file_client.get("/api/client/features", headers=auth(**{"Accept-Encoding": "identity"}))
    assert "Content-Encoding" not in plain.headers
    zipped = await file_client.get("/api/client/features", headers=auth(**{"Accept-Encoding": "gzip, deflate"}))
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert int(zipped.headers["Content-Length"]) < int(plain.headers["Content-Length"])
    assert await zipped.json() == await plain.json()
    assert zipped.headers["ETag"] == plain.headers["ETag"]


async def test_open_auth_serves_every_project_and_honours_a_token_if_sent(make_client):
    client = await make_client(auth="open", features_file=str(FEATURES_FILE))
    anonymous = await (await client.get("/api/client/features")).json()
    assert names(anonymous) == names(fixture_document())
    scoped = await (await client.get("/api/client/features", headers=auth(PAYMENTS_TOKEN))).json()
    assert names(scoped) == ["payments.checkout"]


def test_serve_exits_with_a_configuration_error_for_a_bad_features_file(tmp_path):
    bad = tmp_path / "features.json"
    bad.write_text('{"features": {}}')
    env = dict(os.environ, METRICS_PROXY_FEATURES_FILE=str(bad))
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--auth", "open"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "configuration error: features_file" in result.stderr
