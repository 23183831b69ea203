"""`metrics-proxy export` and `import`: the backlog of one proxy, moved by hand into another's
store, reaches the upstream exactly once, counts exact; a file cut off, of an unknown kind, or
imported twice changes nothing; neither command runs beside a serving proxy."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

from tests.forwarding import UPSTREAM_DEV, metrics_body, upstream_env
from tests.support import PROD_TOKEN, ProxyProcess, client_headers, free_port

UPSTREAM_PROD = "default:production.upstream-prod"


def run(*args: str, data_dir: Path, env: dict[str, str] | None = None, stdin: bytes | None = None,
        stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    environ = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "proxy", *args, "--data-dir", str(data_dir)], env=environ,
                          input=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=60)


def batches(data_dir: Path) -> int:
    db = sqlite3.connect(f"file:{data_dir / 'metrics-proxy.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM outbox_batches").fetchone()[0]
    finally:
        db.close()


async def post(session, url: str, toggles: dict[str, tuple[int, int]], token: str | None = None,
               app: str = "app-a", impact: list | None = None) -> None:
    body = metrics_body(toggles, time.time(), app=app)
    if impact:
        body["impactMetrics"] = impact
    async with session.post(url + "/api/client/metrics", json=body,
                            headers=client_headers(token) if token else client_headers()) as response:
        assert response.status == 202


def flag_totals(stub) -> Counter:
    totals: Counter = Counter()
    for rec in stub.delivered():
        for m in rec.body["metrics"]:
            totals[(m["environment"], m["featureName"], "yes")] += m["yes"]
            totals[(m["environment"], m["featureName"], "no")] += m["no"]
    return +totals


async def until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_backlog_exported_from_one_proxy_and_imported_into_another_is_delivered_once(
        proxies, tmp_path, stub):
    # The source forwards to an upstream that is down: what it acknowledges stays in its store,
    # partly cut into batches, partly still in the journal when it is killed.
    down = f"http://127.0.0.1:{free_port()}/api"
    tokens = f"development={UPSTREAM_DEV},production={UPSTREAM_PROD}"
    source_env = {**upstream_env(down), "METRICS_PROXY_UPSTREAM_TOKENS": tokens}
    source = ProxyProcess(tmp_path / "source", extra_env=source_env)
    proxies.append(source)
    await asyncio.to_thread(source.start)
    acknowledged: Counter = Counter()
    impact = [{"name": "checkouts", "help": "checkouts", "type": "counter",
               "samples": [{"labels": {"region": "eu"}, "value": 3}]}]
    async with aiohttp.ClientSession() as session:
        await post(session, source.url, {"flag-a": (5, 1), "flag-b": (2, 0)})
        await post(session, source.url, {"flag-a": (4, 0)}, token=PROD_TOKEN)
        await until(lambda: batches(tmp_path / "source") >= 2)  # cut, and waiting for the upstream
        await post(session, source.url, {"flag-a": (7, 3)}, impact=impact)
        await post(session, source.url, {"flag-c": (1, 1)}, app="app-b")
    for env, flag, yes, no in [("development", "flag-a", 12, 4), ("development", "flag-b", 2, 0),
                               ("production", "flag-a", 4, 0), ("development", "flag-c", 1, 1)]:
        acknowledged[(env, flag, "yes")] += yes
        acknowledged[(env, flag, "no")] += no
    acknowledged = +acknowledged
    await asyncio.to_thread(source.kill)  # SIGKILL: the last posts are only in the journal

    # Export, in two files: production first, then (moving it out) everything else.
    production = run("export", "--environment", "production", data_dir=tmp_path / "source", env=source_env)
    assert production.returncode == 0, production.stderr
    lines = [json.loads(line) for line in production.stdout.splitlines()]
    assert lines[0]["kind"] == "metrics-proxy.export" and lines[-1]["kind"] == "metrics-proxy.end"
    assert {r["environment"] for r in lines[1:-1]} == {"production"}
    assert (lines[-1]["yes"], lines[-1]["no"]) == (4, 0)
    everything = run("export", "--move", data_dir=tmp_path / "source", env=source_env)
    assert everything.returncode == 0, everything.stderr
    kinds = Counter(json.loads(line)["kind"] for line in everything.stdout.splitlines())
    assert kinds["unleash.outbox_batch"] >= 2 and kinds["unleash.pending_count"] >= 1
    assert kinds["unleash.pending_impact"] == 1
    end = json.loads(everything.stdout.splitlines()[-1])
    assert (end["yes"], end["no"]) == (sum(v for k, v in acknowledged.items() if k[2] == "yes"),
                                       sum(v for k, v in acknowledged.items() if k[2] == "no"))
    # --move left nothing to send in the source
    again = run("export", data_dir=tmp_path / "source", env=source_env)
    assert json.loads(again.stdout.splitlines()[-1])["records"] == 0
    export_file = tmp_path / "backlog.ndjson"
    export_file.write_bytes(everything.stdout)

    # Import into another proxy's (stopped) store, then let that proxy deliver it.
    target_env = {**upstream_env(stub.url), "METRICS_PROXY_UPSTREAM_TOKENS": tokens}
    imported = run("import", str(export_file), data_dir=tmp_path / "target", env=target_env)
    assert imported.returncode == 0, imported.stderr
    twice = run("import", str(export_file), data_dir=tmp_path / "target", env=target_env)
    assert twice.returncode == 1 and "imported into this store before" in twice.stderr.decode()
    target = ProxyProcess(tmp_path / "target", extra_env=target_env)
    proxies.append(target)
    await asyncio.to_thread(target.start)
    await until(lambda: flag_totals(stub) == acknowledged and batches(tmp_path / "target") == 0)
    await asyncio.sleep(0.5)  # a few more flush intervals: nothing is sent again
    assert flag_totals(stub) == acknowledged
    assert stub.resent == []
    sent_impact = [e for rec in stub.delivered() for e in rec.body.get("impactMetrics", [])]
    assert [e["name"] for e in sent_impact] == ["checkouts"]
    assert sum(s["value"] for e in sent_impact for s in e["samples"]) == 3
    # A running proxy holds its folder: neither command runs beside it.
    busy = run("export", data_dir=tmp_path / "target", env=target_env)
    assert busy.returncode != 0 and b"in use" in busy.stderr
    assert await asyncio.to_thread(target.terminate) == 0


def test_a_file_cut_off_or_of_an_unknown_kind_is_refused_whole(tmp_path):
    header = {"kind": "metrics-proxy.export", "version": 1, "id": "x1", "created": 0, "environment": None,
              "source_instance": None}
    count = {"kind": "unleash.pending_count", "environment": "development", "app_name": "a", "feature_name": "f",
             "hour": 0, "yes": 1, "no": 0, "variants": None}
    cases = {
        "cut off": [header, count],
        "unknown kind": [header, count, {"kind": "someone.else"}, {"kind": "metrics-proxy.end", "records": 2}],
        "miscounted": [header, count, {"kind": "metrics-proxy.end", "records": 3, "yes": 1, "no": 0}],
        "no header": [count, {"kind": "metrics-proxy.end", "records": 1}],
    }
    for name, records in cases.items():
        path = tmp_path / f"{name}.ndjson"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        result = run("import", str(path), data_dir=tmp_path / "data")
        assert result.returncode == 1 and b"nothing imported" in result.stderr, name
    good = tmp_path / "good.ndjson"
    good.write_text("".join(json.dumps(r) + "\n" for r in [header, count, {"kind": "metrics-proxy.end",
                                                                            "records": 1, "yes": 1, "no": 0}]))
    assert run("import", "-", data_dir=tmp_path / "data", stdin=good.read_bytes()).returncode == 0
    exported = run("export", data_dir=tmp_path / "data")
    assert [json.loads(line)["kind"] for line in exported.stdout.splitlines()][1:] == [
        "unleash.pending_count", "metrics-proxy.end"]
