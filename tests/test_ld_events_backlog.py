"""`metrics-proxy export` / `import` carry LaunchDarkly's SDK-event backlog: payloads not cut yet
and batches not delivered (under their Payload-ID) reach the upstream once from the other proxy."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp

from tests.ld_events_support import config_file, index, sdk_headers
from tests.ld_events_upstream import start_events_upstream, stop_events_upstream
from tests.support import ProxyProcess, free_port
from tests.test_export_import import run, until


async def test_the_event_backlog_moves_to_another_proxy_and_is_delivered_once(proxies, tmp_path):
    upstream = await start_events_upstream()
    try:
        down = f"http://127.0.0.1:{free_port()}"
        source_config = config_file(tmp_path / "source.toml", down, flush_interval=0.2)
        source = ProxyProcess(tmp_path / "source", config=source_config)
        proxies.append(source)
        await asyncio.to_thread(source.start)
        acknowledged = []
        async with aiohttp.ClientSession() as session:
            for n in range(6):
                events = [index(n, user=f"u{n}")]
                async with session.post(source.url + "/bulk", json=events, headers=sdk_headers()) as response:
                    assert response.status == 202
                acknowledged += events
                if n == 2:
                    await asyncio.sleep(0.6)  # the first posts are cut into batches, waiting for the upstream
        await asyncio.to_thread(source.kill)  # the last posts are only in the journal

        exported = run("export", "--move", "--config", source_config, data_dir=tmp_path / "source")
        assert exported.returncode == 0, exported.stderr
        records = [json.loads(line) for line in exported.stdout.splitlines()]
        kinds = Counter(r["kind"] for r in records)
        assert kinds["launchdarkly.event_batch"] >= 1 and kinds["launchdarkly.event_payload"] >= 1, kinds
        batch_ids = {r["id"] for r in records if r["kind"] == "launchdarkly.event_batch"}
        export_file = tmp_path / "backlog.ndjson"
        export_file.write_bytes(exported.stdout)

        target_config = config_file(tmp_path / "target.toml", upstream.url, flush_interval=0.2)
        imported = run("import", str(export_file), "--config", target_config, data_dir=tmp_path / "target")
        assert imported.returncode == 0, imported.stderr
        target = ProxyProcess(tmp_path / "target", config=target_config)
        proxies.append(target)
        await asyncio.to_thread(target.start)
        await until(lambda: len(upstream.accepted_events()) >= len(acknowledged))
        await asyncio.sleep(0.5)
        assert sorted(map(str, upstream.accepted_events())) == sorted(map(str, acknowledged))
        sent_ids = {p.payload_id.replace("-", "") for p in upstream.accepted()}
        assert batch_ids <= sent_ids  # the exported batches went under the ids they were cut with
        assert await asyncio.to_thread(target.terminate) == 0
    finally:
        await stop_events_upstream(upstream)
