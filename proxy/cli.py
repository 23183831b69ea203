"""Command line: `metrics-proxy serve` and friends."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys

from aiohttp import web

from proxy import __version__
from proxy.config import ConfigError, Settings, load_settings, settings_from_args

DESCRIPTION = """\
A durable metrics edge proxy for Unleash SDKs. Point SDKs at it instead of Unleash: it accepts
usage metrics and registrations, commits them to SQLite before answering 202, answers read
queries from its own store, and (with an [upstream] configured) forwards aggregated batches.

Options come from command-line flags, METRICS_PROXY_<NAME> environment variables, and a TOML
file (--config), in that order of precedence. See config/metrics-proxy.toml for every option.
"""


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy in the foreground until SIGTERM/SIGINT; acknowledged counts stay on disk.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config file (env METRICS_PROXY_CONFIG)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, help="port to listen on (default 3063, Unleash Edge's)")
    p.add_argument("--data-dir", dest="data_dir", metavar="DIR", help="where the SQLite database lives (default ./data)")
    p.add_argument("--auth", choices=["tokens", "open"], help='"tokens" (default) or "open" for local development')
    p.add_argument("--log-level", dest="log_level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    p.add_argument("--workers", type=int, help="processes taking ingest on the port (default 1; 2 uses two cores)")
    # Internal: the primary starts its ingest workers with it (proxy/workers/supervisor.py).
    p.add_argument("--worker-index", dest="worker_index", type=int, help=argparse.SUPPRESS)


def _outbox_parsers(sub: argparse._SubParsersAction) -> None:
    from proxy.commands import outbox as commands

    commands.add_parsers(sub)


def _probe_parsers(sub: argparse._SubParsersAction) -> None:
    for check, what in (("health", "the process serves"), ("ready", "the database is open and writable")):
        p = sub.add_parser(
            check,
            help=f"exit 0 if {what}, else 1 (for container probes)",
            description=f"Call /internal-backstage/{check} of a running proxy; exit 0 if {what}, else 1.",
        )
        p.add_argument("--url", help="proxy base URL (default: from --config/env host and port)")
        p.add_argument("--config", metavar="FILE", help="TOML config file (env METRICS_PROXY_CONFIG)")
        p.add_argument("--host", help="host of the proxy (default: the configured host)")
        p.add_argument("--port", type=int, help="port of the proxy (default: the configured port)")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")


def probe_command(args: argparse.Namespace) -> int:
    from proxy.commands.probe import base_url, probe

    url = args.url
    if url is None:
        settings = load_settings(config_file=args.config, flags={"host": args.host, "port": args.port})
        url = base_url(settings.host, settings.port)
    return probe(args.command, url, args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metrics-proxy", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"metrics-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _serve_parser(sub)
    _outbox_parsers(sub)
    _probe_parsers(sub)
    return parser


def configure_logging(level: str, process: str = "") -> None:
    # With ingest workers all processes share one stream: their lines name the process.
    tag = f"[{process}] " if process else ""
    logging.basicConfig(
        level=level, format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s", stream=sys.stderr
    )


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


# Every ingest request allocates a few hundred short-lived objects, so with CPython's default
# thresholds (700, 10, 10) the cyclic collector runs every few requests and, every hundred young
# collections, walks every live object. Measured on the ingest path: ~20 % of the CPU per request.
# Young collections after 50,000 allocations, older ones rarely; objects alive once the app has
# started (modules, routes, the replayed store) are frozen out of collections altogether.
GC_THRESHOLDS = (50_000, 100, 100)


def _freeze_startup_objects() -> None:
    gc.collect()
    gc.freeze()


async def _freeze_once_started(app: web.Application) -> None:
    _freeze_startup_objects()


def serve_worker(settings: Settings, index: int) -> int:
    """An ingest worker (`workers` > 1): started by the primary, never by hand."""
    from proxy.workers.app import create_worker_app, run_worker

    log = logging.getLogger("proxy")
    if not 1 <= index < settings.workers:
        log.error("--worker-index %d is outside 1..%d", index, settings.workers - 1)
        return 2
    gc.set_threshold(*GC_THRESHOLDS)
    app = create_worker_app(settings, index)
    _freeze_startup_objects()
    with asyncio.Runner(loop_factory=lambda: new_event_loop(settings.event_loop)) as runner:
        runner.run(run_worker(app, settings, index))
    log.info("worker %d stopped", index)
    return 0


def serve(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    from proxy.api.state import STORE
    from proxy.app import create_app

    settings = settings_from_args(args)
    configure_logging(settings.log_level, f"worker {args.worker_index}" if args.worker_index is not None else "")
    if args.worker_index is not None:
        return serve_worker(settings, args.worker_index)
    log = logging.getLogger("proxy")
    loop = new_event_loop(settings.event_loop)
    log.info(
        "metrics-proxy %s listening on %s:%d, data in %s, auth %s, event loop %s.%s, %s",
        __version__, settings.host, settings.port, settings.database_path, settings.auth,
        type(loop).__module__, type(loop).__qualname__,
        f"upstream {settings.upstream.url}" if settings.upstream else "standalone (no upstream)",
    )
    app = create_app(settings)
    gc.set_threshold(*GC_THRESHOLDS)
    app.on_startup.append(_freeze_once_started)  # after the cleanup contexts opened the store
    extra: dict = {}
    if settings.workers > 1:
        from proxy.workers.passthrough import primary_socket_path
        from proxy.workers.supervisor import SERVE_ARGV, hold_data_dir

        hold_data_dir(settings.database_path.parent)
        app[SERVE_ARGV] = list(argv or sys.argv[1:])
        extra = {"reuse_port": True, "path": str(primary_socket_path(settings.database_path.parent))}
        log.info("primary with %d ingest workers on the same port", settings.workers - 1)
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            access_log=None,
            print=None,
            shutdown_timeout=20,
            loop=loop,
            **extra,
        )
    except OSError as exc:
        # Typically the port is taken; everything acknowledged so far is on disk already.
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    finally:
        if app[STORE].is_open:
            # The shutdown was cut short (e.g. a second SIGTERM during the final flush). Every
            # acknowledged count is already committed to the journal and is replayed at the next
            # start, so leaving now is safe; waiting would hang on the store's reader thread.
            log.warning("shutdown interrupted before the store closed; exiting now "
                        "(acknowledged counts are in the journal and are replayed at the next start)")
            logging.shutdown()
            os._exit(1)
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "serve":
            return serve(args, argv)
        if args.command in ("health", "ready"):
            return probe_command(args)
        return args.run(args)
    except ConfigError as exc:
        print(f"metrics-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
