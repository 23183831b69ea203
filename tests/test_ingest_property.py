"""Property (issue 17, part D): whatever JSON or bytes reach a POST endpoint, the proxy answers with
a status it documents, never a 5xx, in the documented error body, and logs no unhandled exception.

A real app on loopback (the suite's client fixture). Bodies are drawn three ways: arbitrary JSON
whose object keys are often the wire field names (so it gets past the first check), endpoint bodies
whose fields are each either plausible or arbitrary JSON, and raw bytes (arbitrary, or an accepted
body with a stretch replaced); each sent plain, gzip'd or deflated, or declared compressed and not.
EXAMPLES examples per test (default 400, derandomized: about 3 s for both);
`PROPERTY_EXAMPLES=5000 .venv/bin/python -m pytest -q tests/test_ingest_property.py` is a long
random run.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
import zlib
from collections import Counter, defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import CLIENT_TOKEN, FRONTEND_TOKEN

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "400"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 400, database=None,
    # one app serves every example of a test: its state carries over, as a real proxy's would
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

ENDPOINTS = {
    "/api/client/metrics": CLIENT_TOKEN,
    "/api/client/register": CLIENT_TOKEN,
    "/api/client/metrics/bulk": CLIENT_TOKEN,
    "/api/frontend/client/metrics": FRONTEND_TOKEN,
    "/api/frontend/client/register": FRONTEND_TOKEN,
    "/api/client/metrics/custom": CLIENT_TOKEN,
}
DOCUMENTED = {202, 400, 413, 415}
STATUSES: dict[str, Counter[int]] = defaultdict(Counter)  # per endpoint, for the last test

WIRE_FIELDS = sorted({
    "appName", "instanceId", "sdkVersion", "environment", "bucket", "start", "stop", "toggles", "yes", "no",
    "variants", "impactMetrics", "interval", "started", "strategies", "projects", "applications", "metrics",
    "featureName", "timestamp", "name", "help", "type", "samples", "value", "labels", "count", "sum", "buckets",
    "le", "connectVia", "sdkType", "seenTokens", "sdkFlavor",
})

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
keys = st.sampled_from(WIRE_FIELDS) | st.text(max_size=12)
any_json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
                        max_leaves=25)


def either(plausible: st.SearchStrategy) -> st.SearchStrategy:
    return plausible | any_json


def optional_fields(required: dict, optional: dict) -> st.SearchStrategy:
    return st.fixed_dictionaries({k: either(v) for k, v in required.items()},
                                 optional={k: either(v) for k, v in optional.items()})


def endpoint_bodies(now_ms: int) -> dict[str, st.SearchStrategy]:
    names = st.text(min_size=0, max_size=110)
    times = (st.integers(min_value=now_ms - 50 * 3_600_000, max_value=now_ms + 50 * 3_600_000)
             | st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)
             | st.sampled_from(["2001-02-03T04:05:06Z", "soon", "2001-02-30T00:00:00Z", ""]))
    counts = st.integers(min_value=-5, max_value=2**33)
    toggle = optional_fields({}, {"yes": counts, "no": counts, "variants": st.dictionaries(names, counts, max_size=3)})
    sample = optional_fields({}, {"value": st.floats(), "labels": st.dictionaries(names, names | st.integers()),
                                  "count": counts, "sum": st.floats(),
                                  "buckets": st.lists(optional_fields({}, {"le": st.floats() | st.just("+Inf"),
                                                                           "count": counts}), max_size=3)})
    impact = st.lists(optional_fields({"name": names, "type": st.sampled_from(["counter", "gauge", "histogram", "x"])},
                                      {"help": names, "samples": st.lists(sample, max_size=3), "appName": names,
                                       "environment": names}), max_size=3)
    bucket = optional_fields({"start": times, "stop": times}, {"toggles": st.dictionaries(names, toggle, max_size=4)})
    instance = {"instanceId": names, "sdkVersion": names, "environment": names}
    registration = {"interval": st.floats() | counts, "started": times, "strategies": st.lists(names | st.none()),
                    "projects": st.lists(names)}
    bulk_row = optional_fields({"featureName": names, "appName": names, "environment": st.just("development")},
                               {"timestamp": times, "yes": counts, "no": counts,
                                "variants": st.dictionaries(names, counts, max_size=2)})
    application = optional_fields({"appName": names, "instanceId": names, "environment": st.just("development")},
                                  {**registration, "sdkVersion": names, "connectVia": st.lists(
                                      optional_fields({"appName": names, "instanceId": names}, {}), max_size=2)})
    metrics = optional_fields({"appName": names}, {**instance, "bucket": bucket, "impactMetrics": impact})
    custom_metric = optional_fields({"name": names, "value": st.floats() | counts},
                                    {"labels": st.dictionaries(names, names, max_size=3)})
    return {
        "/api/client/metrics": metrics,
        "/api/frontend/client/metrics": metrics,
        "/api/client/register": optional_fields({"appName": names}, {**instance, **registration}),
        "/api/frontend/client/register": optional_fields({"appName": names}, {**instance, **registration}),
        "/api/client/metrics/bulk": optional_fields(
            {"applications": st.lists(application, max_size=3), "metrics": st.lists(bulk_row, max_size=4)},
            {"impactMetrics": impact, "seenTokens": st.lists(names)}),
        "/api/client/metrics/custom": optional_fields({"metrics": st.lists(custom_metric, max_size=3)}, {}),
    }


def _encoded(data: bytes, encoding: str | None, compress: bool) -> tuple[bytes, dict[str, str]]:
    if encoding is None:
        return data, {}
    if compress:
        data = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    return data, {"Content-Encoding": encoding}


@pytest.fixture
def errors_logged(caplog):
    caplog.set_level(logging.WARNING)

    def logged() -> list[str]:
        bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        caplog.clear()
        return [r.getMessage() for r in bad]

    return logged


async def _check(client, errors_logged, path: str, data: bytes, headers: dict[str, str]) -> None:
    resp = await client.post(path, data=data, headers={"Authorization": ENDPOINTS[path],
                                                        "Content-Type": "application/json", **headers})
    text = await resp.text()
    STATUSES[path][resp.status] += 1
    assert resp.status in DOCUMENTED, (path, data[:300], headers, resp.status, text[:500])
    if resp.status != 202:
        assert resp.content_type == "application/json", (resp.status, text[:300])
        error = json.loads(text)
        assert set(error) == {"id", "name", "message", "details"}, error
        assert error["details"] and isinstance(error["details"][0]["message"], str), error
    assert errors_logged() == [], (path, data[:300], headers)


# Near the clock fixture's instant (both read the system clock when the tests start): the times are
# drawn around it, inside and outside the 48 hours a bucket may lie from the proxy's clock.
BODIES = endpoint_bodies(int(time.time() * 1000))
PATH_AND_JSON = st.sampled_from(sorted(ENDPOINTS)).flatmap(
    lambda path: st.tuples(st.just(path), any_json | BODIES[path]))
ENCODINGS = st.sampled_from([None, None, "gzip", "deflate"])


@PROPERTY_SETTINGS
@given(path_and_body=PATH_AND_JSON, encoding=ENCODINGS, compress=st.booleans())
async def test_no_json_body_gets_a_5xx_or_an_unhandled_exception(client, errors_logged, path_and_body, encoding,
                                                                 compress):
    path, body = path_and_body
    data, headers = _encoded(json.dumps(body).encode(), encoding, compress)
    await _check(client, errors_logged, path, data, headers)


ACCEPTED = {
    "/api/client/metrics": b'{"appName":"app","impactMetrics":[]}',
    "/api/client/register": b'{"appName":"app","interval":1,"started":0,"strategies":[]}',
    "/api/client/metrics/bulk": b'{"applications":[],"metrics":[]}',
    "/api/frontend/client/metrics": b'{"appName":"app"}',
    "/api/frontend/client/register": b'{"appName":"app"}',
    "/api/client/metrics/custom": b'{"metrics":[]}',
}


def spliced(path: str) -> st.SearchStrategy:
    """The endpoint's accepted body with a stretch replaced by arbitrary bytes."""
    body = ACCEPTED[path]
    return st.tuples(st.integers(0, len(body)), st.integers(0, 8), st.binary(max_size=8)).map(
        lambda cut: body[:cut[0]] + cut[2] + body[cut[0] + cut[1]:])


PATH_AND_BYTES = st.sampled_from(sorted(ENDPOINTS)).flatmap(
    lambda path: st.tuples(st.just(path), st.binary(max_size=512) | spliced(path)))


@PROPERTY_SETTINGS
@given(path_and_data=PATH_AND_BYTES, encoding=ENCODINGS, compress=st.booleans())
async def test_no_byte_string_gets_a_5xx_or_an_unhandled_exception(client, errors_logged, path_and_data, encoding,
                                                                   compress):
    path, raw = path_and_data
    data, headers = _encoded(raw, encoding, compress)
    await _check(client, errors_logged, path, data, headers)


def test_the_bodies_reached_the_handlers():
    """Runs after the property tests above (file order): every endpoint accepted some of the drawn
    bodies, or the property only ever exercised the refusals."""
    if not STATUSES:
        pytest.skip("only meaningful in the same run as the property tests above")
    print({path: dict(counts) for path, counts in sorted(STATUSES.items())})
    for path in ENDPOINTS:
        assert STATUSES[path][202] > 0, (path, STATUSES[path])
        assert STATUSES[path][400] > 0, (path, STATUSES[path])
