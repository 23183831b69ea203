"""`metrics-proxy status` and `metrics-proxy flush`: look at and push the upstream outbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request

from proxy.config import Settings, settings_from_args

FLUSH_HELP = """\
Ask the running proxy to send its pending counts upstream now (POST /internal-backstage/flush on
its own listener, with the first admin token) and wait for the result. If no proxy listens there,
nothing happens unless --one-shot is given: then this process opens the database itself, sends
once within upstream.shutdown_flush_timeout and exits. Never use --one-shot while a proxy runs on
the same data directory (the database has one writer).
Exit status: 0 all sent, 1 batches left on disk, 2 error."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (env METRICS_PROXY_CONFIG)")
    p.add_argument("--data-dir", dest="data_dir", metavar="DIR", help="where the SQLite database lives")
    p.add_argument("--host", help="the proxy's address (default from config)")
    p.add_argument("--port", type=int, help="the proxy's port (default from config)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status", help="show what waits to be sent upstream",
        description="Read the database (read-only, safe while the proxy runs) and print, per "
                    "environment: pending rows and counts, batches cut but not delivered, the oldest "
                    "pending age, the last successful send, pause reasons and dead letters.",
    )
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=status)
    p = sub.add_parser("flush", help="send pending counts upstream now", description=FLUSH_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--one-shot", action="store_true", help="flush from this process if no proxy answers")
    p.set_defaults(run=flush)


def _settings(args: argparse.Namespace) -> Settings:
    return settings_from_args(args)


def _age(then: float | None, now: float) -> str:
    return "-" if then is None else f"{now - then:.0f}s ago"


def status(args: argparse.Namespace) -> int:
    from proxy.launchdarkly.store.queue import read_status as launchdarkly_status
    from proxy.unleash.store.status import StatusUnavailable, read_status

    settings = _settings(args)
    path = settings.database_path
    if not path.exists():
        print(f"metrics-proxy: no database at {path}", file=sys.stderr)
        return 2
    try:
        report = read_status(path)
    except StatusUnavailable as exc:  # e.g. a database from before the outbox existed
        print(f"metrics-proxy: cannot read the outbox in {path}: {exc}", file=sys.stderr)
        return 2
    report["launchdarkly"] = launchdarkly_status(path)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    now = time.time()
    print(f"database {path}; upstream instance id {report['instance_id'] or '-'}")
    if not report["environments"]:
        print("nothing pending")
    for name, e in report["environments"].items():
        print(
            f"{name}: pending {e['pending_rows']} rows (yes {e['pending_yes'] or 0}, no {e['pending_no'] or 0}); "
            f"in batches {e['batches']} ({e['batch_rows']} rows, yes {e['batch_yes'] or 0}, no {e['batch_no'] or 0}); "
            f"oldest {_age(e['oldest'], now)}; last sent {_age(e['last_success'], now)}; "
            f"dead letters {e['dead_letters']}; "
            + (f"PAUSED: {e['paused']}" if e["paused"] else "not paused")
        )
    _print_launchdarkly(report["launchdarkly"], now)
    return 0


def _print_launchdarkly(report: dict, now: float) -> None:
    """The LaunchDarkly write queue: writes waiting per project, and the newest dead letters."""
    for name, p in report["projects"].items():
        print(
            f"launchdarkly project {name}: queued writes {p['queued']} (oldest {_age(p['oldest'], now)}); "
            f"dead letters {p['dead_letters']}; " + (f"PAUSED: {p['paused']}" if p["paused"] else "not paused")
        )
    if report.get("event_payloads_waiting"):
        print(f"launchdarkly events: {report['event_payloads_waiting']} payloads stored, not cut into batches yet")
    for name, e in report.get("events", {}).items():
        print(f"launchdarkly events {name}: batches {e['batches']} (oldest {_age(e['oldest'], now)}); "
              f"dead letters {e['dead_letters']}; " + (f"PAUSED: {e['paused']}" if e["paused"] else "not paused"))
    for letter in report["dead_letters"]:
        write = json.loads(letter["write"])
        print(f"  dead letter {letter['id']} ({_age(letter['at'], now)}): {write['method']} {write['path']} "
              f"refused with {letter['status']}: {letter['reason'][:200]}")


def flush(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.upstream is None:
        print("metrics-proxy: no [upstream] configured; nothing to flush", file=sys.stderr)
        return 2
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    request = urllib.request.Request(f"http://{host}:{settings.port}/internal-backstage/flush", method="POST")
    if settings.admin_tokens:
        request.add_header("Authorization", settings.admin_tokens[0])
    try:
        with urllib.request.urlopen(request, timeout=settings.upstream.shutdown_flush_timeout + 10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        print(f"metrics-proxy: the proxy answered {exc.code}: {exc.read()[:300].decode(errors='replace')}",
              file=sys.stderr)
        return 2
    except urllib.error.URLError as exc:
        if not args.one_shot:
            print(f"metrics-proxy: no proxy answers on {host}:{settings.port} ({exc.reason}); "
                  "use --one-shot to flush from this process", file=sys.stderr)
            return 2
        left = asyncio.run(_one_shot(settings))
        answer = {"finished": True, "batchesLeft": left}
    print(f"flush {'finished' if answer['finished'] else 'still running'}; {answer['batchesLeft']} batches left")
    return 0 if answer["batchesLeft"] == 0 else 1


async def _one_shot(settings: Settings) -> int:
    from proxy.clock import Clock
    from proxy.forwarding.stats import ForwarderStats
    from proxy.storage import Store
    from proxy.unleash.upstream.forwarder import Forwarder

    assert settings.upstream is not None
    store = Store(settings.database_path, settings.synchronous)
    await store.open()
    forwarder = Forwarder(settings, store, Clock(), ForwarderStats())
    try:
        await forwarder.start(run_loop=False)
        await forwarder.stop()  # stop() is one flush within shutdown_flush_timeout
        return forwarder.outbox.pending_batch_count()
    finally:
        await store.close()
