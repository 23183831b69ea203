"""Schema fuzz: schemathesis drives a real proxy process from its own /openapi.json.

Every operation gets generated valid and invalid requests; none may answer 5xx other than a
documented 503, and every 4xx must carry the documented error body: `{id, name, message,
details: [{message, path?}]}`, or LaunchDarkly's `{code, message, id}` on its routes. Runs FUZZ_EXAMPLES examples per operation (default 25, derandomized,
30-60 s for both proxies; each request times out after REQUEST_TIMEOUT s rather than hang the
run); `FUZZ_EXAMPLES=500 .venv/bin/python -m pytest -q tests/test_openapi_fuzz.py` is the long,
random variant.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter, defaultdict

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from proxy.app import openapi_document
from proxy.launchdarkly.api.events import ERROR_PREFIXES as EVENT_PREFIXES
from tests.ld_events_support import MOBILE_KEY, SDK_KEY
from tests.ld_support import LD_TOKEN
from tests.support import ADMIN_TOKEN, CLIENT_TOKEN, FRONTEND_TOKEN, ProxyProcess

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
REQUEST_TIMEOUT = 10
TOKENS = {"client": CLIENT_TOKEN, "frontend": FRONTEND_TOKEN, "admin": ADMIN_TOKEN, "launchdarkly": LD_TOKEN,
          "launchdarkly-sdk": SDK_KEY, "launchdarkly-mobile": MOBILE_KEY}
LD_ENVIRONMENTS = json.dumps({"production": {"sdk_key": SDK_KEY, "mobile_key": MOBILE_KEY}})
CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    negative_data_rejection,
]
STATUSES: dict[str, Counter[int]] = defaultdict(Counter)  # per operation, for the report below
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 25,
    suppress_health_check=list(HealthCheck),
)


def _proxy(tmp_path_factory, name: str, **env: str):
    base = tmp_path_factory.mktemp(name)
    proxy = ProxyProcess(base / "data", extra_env={"METRICS_PROXY_FOLD_INTERVAL": "3600",
                                                   "METRICS_PROXY_LAUNCHDARKLY_ACCESS_TOKENS": LD_TOKEN,
                                                   "METRICS_PROXY_LAUNCHDARKLY_ENVIRONMENTS": LD_ENVIRONMENTS, **env})
    proxy.start()
    return proxy


@pytest.fixture(scope="module")
def open_proxy(tmp_path_factory):
    proxy = _proxy(tmp_path_factory, "fuzz-open", METRICS_PROXY_AUTH="open")
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def token_proxy(tmp_path_factory):
    proxy = _proxy(tmp_path_factory, "fuzz-tokens")
    yield proxy
    proxy.stop()


def assert_error_body(response, launchdarkly: bool = False, relay: bool = False) -> None:
    """The documented error body, stricter than the schema: details is never empty."""
    if not 400 <= response.status_code < 500:
        return
    body = response.json()
    if relay:  # LaunchDarkly's SDK event routes: Relay's {"message": ...}
        assert set(body) == {"message"} and isinstance(body["message"], str) and body["message"], body
        return
    if launchdarkly:
        assert set(body) == {"code", "message", "id"}, body
        assert all(isinstance(body[k], str) and body[k] for k in ("code", "message", "id")), body
        return
    assert set(body) == {"id", "name", "message", "details"}, body
    assert all(isinstance(body[k], str) and body[k] for k in ("id", "name", "message")), body
    assert body["details"] and all(isinstance(d.get("message"), str) for d in body["details"]), body
    assert all(set(d) <= {"message", "path"} for d in body["details"]), body


def _token_header(case, with_tokens: bool) -> dict[str, str] | None:
    """The right kind of token for the operation, so the fuzz reaches the handler and not only auth;
    except where the case's headers are deliberately broken, so 401 and 403 get fuzzed too."""
    kind = case.operation.definition.raw.get("x-token-kind")
    if not with_tokens or kind is None:
        return None
    headers = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    if headers is not None and headers.mode is GenerationMode.NEGATIVE:
        return None
    return {"Authorization": TOKENS[kind]}


def _fuzz(case, proxy: ProxyProcess, with_tokens: bool) -> None:
    headers = _token_header(case, with_tokens)
    response = case.call_and_validate(base_url=proxy.url, headers=headers, checks=CHECKS, timeout=REQUEST_TIMEOUT)
    STATUSES[case.operation.label][response.status_code] += 1
    assert_error_body(response, case.operation.definition.raw.get("x-token-kind") == "launchdarkly",
                      relay=case.operation.path.startswith(EVENT_PREFIXES))


# The documents the proxies serve (test_served_documents_are_the_fuzzed_ones checks they are
# equal), loaded at import because schemathesis' lazy fixture loader does not run on this pytest.
TOKEN_DOCUMENT = json.loads(openapi_document(tokens=True))
OPEN_DOCUMENT = json.loads(openapi_document(tokens=False))
token_api = schemathesis.openapi.from_dict(TOKEN_DOCUMENT)
open_api = schemathesis.openapi.from_dict(OPEN_DOCUMENT)
for _api in (token_api, open_api):
    # Unknown query parameters and headers are ignored, as Unleash ignores them: no negative case.
    _api.config.generation.update(allow_extra_parameters=False)


def test_served_documents_are_the_fuzzed_ones(open_proxy, token_proxy):
    for proxy, document in ((open_proxy, OPEN_DOCUMENT), (token_proxy, TOKEN_DOCUMENT)):
        with urllib.request.urlopen(proxy.url + "/openapi.json", timeout=10) as response:
            assert json.loads(response.read()) == document


@open_api.parametrize()
@FUZZ_SETTINGS
def test_fuzz_with_open_auth(case, open_proxy):
    _fuzz(case, open_proxy, with_tokens=False)


@token_api.parametrize()
@FUZZ_SETTINGS
def test_fuzz_with_each_operations_token(case, token_proxy):
    _fuzz(case, token_proxy, with_tokens=True)


def test_the_fuzz_reached_the_handlers():
    """Runs after the fuzz tests above (file order): generated bodies must get past validation and
    auth, or the fuzz only ever tested the 400 path."""
    if not STATUSES:
        pytest.skip("only meaningful in the same run as the fuzz tests above")
    print({label: dict(counts) for label, counts in sorted(STATUSES.items())})
    for op in ("POST /api/client/metrics", "POST /api/client/register", "POST /api/client/metrics/bulk",
               "POST /api/frontend/client/register", "POST /api/client/metrics/custom"):
        if op in STATUSES:  # not when -k picked other operations
            assert STATUSES[op][202] > 0, (op, STATUSES[op])
    for op in ("GET /api/client/features", "GET /api/admin/metrics/applications"):
        if op in STATUSES:
            assert STATUSES[op][200] > 0, (op, STATUSES[op])
    assert sum(counts[401] + counts[403] for counts in STATUSES.values()) > 0
