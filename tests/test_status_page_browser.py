"""The status page in a real browser: Debian's chromium driven by Playwright (tests/browser/), with a
real proxy process holding counts posted through Unleash's and LaunchDarkly's paths, and a loopback
upstream the browser script switches from healthy to failing. The script enters the token, checks
that the figures shown are the document's, that the page turns degraded within its refresh interval,
that no request leaves loopback, and runs axe-core; the screenshots go to $STATUS_PAGE_SCREENSHOTS
(.ci/run keeps them) or the test's folder."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from tests.forwarding import UPSTREAM_DEV, UPSTREAM_PROD, metrics_body, upstream_env
from tests.ld_support import HEADERS, LD_TOKEN, custom_metric
from tests.support import ADMIN_TOKEN, CLIENT_TOKEN, PROD_TOKEN, ProxyProcess, client_headers

BROWSER_DIR = Path(__file__).parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")
REFRESH_SECONDS = 5  # the page's interval (proxy/api/status/page/status.js REFRESH_SECONDS)

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian package chromium; .ci/run installs it)"),
    pytest.mark.skipif(not (BROWSER_DIR / "node_modules" / "playwright-core").exists() or shutil.which("node") is None,
                       reason="no tests/browser/node_modules (run `npm ci` in tests/browser; .ci/run does)"),
]


class SwitchableUpstream:
    """Unleash's bulk endpoint on loopback: 202 while healthy, 503 once POST /control/fail was called."""

    def __init__(self) -> None:
        self.failing = False
        self.posts = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/client/metrics/bulk", self.bulk)
        app.router.add_post("/control/{mode}", self.control)
        return app

    async def bulk(self, request: web.Request) -> web.Response:
        await request.read()
        self.posts += 1
        return web.Response(status=503 if self.failing else 202)

    async def control(self, request: web.Request) -> web.Response:
        self.failing = request.match_info["mode"] == "fail"
        return web.Response(status=204)


def post(url: str, body: dict, headers: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


async def test_the_status_page_in_chromium(aiohttp_server, tmp_path):
    upstream = SwitchableUpstream()
    server = await aiohttp_server(upstream.app())
    base = str(server.make_url("")).rstrip("/")
    env = {**upstream_env(base + "/api"), "METRICS_PROXY_STATUS_FAILING_AFTER": "1",
           "METRICS_PROXY_UPSTREAM_TOKENS": f"development={UPSTREAM_DEV},production={UPSTREAM_PROD}",
           "METRICS_PROXY_LAUNCHDARKLY_ACCESS_TOKENS": LD_TOKEN, "METRICS_PROXY_FOLD_INTERVAL": "0.5"}
    proxy = ProxyProcess(tmp_path / "data", extra_env=env)
    await asyncio.to_thread(proxy.start)
    try:
        now = time.time()
        for token, flags, app in ((CLIENT_TOKEN, {"checkout-v2": (40, 2), "dark-mode": (7, 7)}, "web"),
                                  (CLIENT_TOKEN, {"checkout-v2": (5, 0)}, "mobile"),
                                  (PROD_TOKEN, {"price-ranking": (12, 3)}, "api")):
            assert await asyncio.to_thread(post, proxy.url + "/api/client/metrics", metrics_body(flags, now, app=app),
                                           client_headers(token)) == 202
        assert await asyncio.to_thread(post, proxy.url + "/api/v2/metrics/shop", custom_metric("checkout-done"),
                                       HEADERS) == 201
        while upstream.posts < 2:  # both environments' counts went upstream
            await asyncio.sleep(0.05)
        screenshots = Path(os.environ.get("STATUS_PAGE_SCREENSHOTS") or tmp_path / "screenshots")
        script = await asyncio.create_subprocess_exec(
            "node", str(BROWSER_DIR / "status_page.mjs"), cwd=BROWSER_DIR,
            env={**os.environ, "PROXY_URL": proxy.url, "ADMIN_TOKEN": ADMIN_TOKEN, "CLIENT_TOKEN": CLIENT_TOKEN,
                 "CONTROL_URL": base + "/control", "SCREENSHOTS": str(screenshots),
                 "REFRESH_SECONDS": str(REFRESH_SECONDS)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(script.communicate(), timeout=120)
    finally:
        await asyncio.to_thread(proxy.stop)
    assert out, err.decode()[-3000:]
    report = json.loads(out)
    (screenshots / "report.json").write_text(json.dumps(report, indent=1))  # every check, and axe's minor notes
    assert "fatal" not in report, report["fatal"] + "\n" + err.decode()[-2000:]
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed == [], json.dumps(failed, indent=1)
    assert len(report["checks"]) > 30 and report["requests"], report
    assert report["offLoopback"] == [], report["offLoopback"]
    assert all(url.startswith(proxy.url) for url in report["requests"]), report["requests"]
    assert upstream.failing and {p.name for p in screenshots.iterdir()} >= {"healthy.png", "degraded.png", "narrow.png"}
