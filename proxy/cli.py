"""Command line: `metrics-proxy serve` and friends."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from proxy import __version__
from proxy.config import ConfigError, Settings, load_settings, settings_from_args

if TYPE_CHECKING:
    from proxy.api.connections import ConnectionGuard, DescriptorLimit

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
    p.add_argument("--log-format", dest="log_format", choices=["text", "json"],
                   help='"text" (default) or "json": one JSON object per line')
    p.add_argument("--workers", type=int, help="processes taking ingest on the port (default 1; 2 uses two cores)")
    # Internal: the primary starts its ingest workers with it (proxy/workers/supervisor.py).
    p.add_argument("--worker-index", dest="worker_index", type=int, help=argparse.SUPPRESS)


def _outbox_parsers(sub: argparse._SubParsersAction) -> None:
    from proxy.commands import backlog
    from proxy.commands import outbox as commands

    commands.add_parsers(sub)
    backlog.add_parsers(sub)


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


def _config_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-config", help="validate a configuration file and the environment without starting",
        description="Validate FILE merged with the METRICS_PROXY_* environment, as `serve` would read them, "
                    "without starting. Exit 0 when valid, else 1 with one line per problem naming the option.",
    )
    p.add_argument("file", metavar="FILE", help="the TOML file to check")
    p.set_defaults(run=check_config_command)
    p = sub.add_parser(
        "reference", help="print the configuration reference (Markdown) or a sample config (TOML)",
        description="Print every option with its environment variable, flag, type, default and meaning, "
                    "generated from the code: Markdown (the options part of docs/configuration.md), or with "
                    "--toml a configuration file that sets every option to its default.",
    )
    p.add_argument("--toml", action="store_true", help="print config/metrics-proxy.toml instead")
    p.add_argument("--update", metavar="FILE",
                   help="rewrite the generated part of FILE (docs/configuration.md) in place")
    p.set_defaults(run=reference_command)


def check_config_command(args: argparse.Namespace) -> int:
    from proxy.commands.check import check_config

    status, problems = check_config(args.file)
    for line in problems:
        print(f"metrics-proxy: {line}", file=sys.stderr)
    if status == 0:
        print(f"{args.file}: valid")
    return status


def reference_command(args: argparse.Namespace) -> int:
    from proxy.commands import reference

    if args.toml:
        sys.stdout.write(reference.toml_sample())
        return 0
    generated = reference.markdown(build_parser())
    if args.update:
        path = Path(args.update)
        path.write_text(reference.update_markdown(path.read_text(), generated))
        return 0
    sys.stdout.write(generated)
    return 0


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
    _config_parsers(sub)
    return parser


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


def serve_worker(settings: Settings, index: int, descriptors: DescriptorLimit) -> int:
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
        runner.run(run_worker(app, settings, index, descriptors))
    log.info("worker %d stopped", index)
    return 0


SHUTDOWN_SECONDS = 20.0  # for requests still being answered when SIGTERM comes


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) how the service is: `READY=1` once it serves, `STOPPING=1` when it
    begins to stop. The protocol: one datagram to the unix socket named by $NOTIFY_SOCKET (a name
    starting with "@" is in the abstract namespace). Without the variable, nothing happens."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        logging.getLogger("proxy").warning("could not notify systemd (%s): %s", state, exc)


class _CannotListen(Exception):
    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))


async def _serve_primary(app: web.Application, settings: Settings, guard: ConnectionGuard,
                         unix_path: Path | None) -> None:
    """Serve until SIGTERM/SIGINT, then shut the app down (in-flight requests, the final flush,
    the store). A second signal raises GracefulExit out of the loop: `serve` then leaves at once.

    aiohttp's run_app would start its own TCPSite, whose accepts the event loop makes; the port is
    served through GuardedSite instead (proxy/api/connections.py, docs/connections.md)."""
    from proxy.api.connections import GuardedSite

    stopping = asyncio.Event()

    def on_signal() -> None:
        if stopping.is_set():
            raise web.GracefulExit()
        stopping.set()
        sd_notify("STOPPING=1")

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS,
                           keepalive_timeout=settings.keepalive_timeout)
    await runner.setup()
    try:
        try:
            await GuardedSite(runner, settings.host, settings.port, guard, reuse_port=unix_path is not None).start()
            if unix_path is not None:  # the ingest workers pass every other request through it
                await web.UnixSite(runner, str(unix_path)).start()
        except OSError as exc:
            raise _CannotListen(exc) from exc
        sd_notify("READY=1")
        await stopping.wait()
    finally:
        await runner.cleanup()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs (e.g. a shutdown a second signal cut short), then close the loop."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def serve(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    from proxy.api.connections import CONNECTION_STATS, connection_guard, raise_descriptor_limit
    from proxy.api.state import STORE
    from proxy.app import create_app
    from proxy.observability.logs import configure_logging

    settings = settings_from_args(args)
    configure_logging(settings, f"worker {args.worker_index}" if args.worker_index is not None else "")
    # Before anything opens a descriptor; an ingest worker inherits the raised limit and logs it too.
    descriptors = raise_descriptor_limit()
    if args.worker_index is not None:
        return serve_worker(settings, args.worker_index, descriptors)
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
    unix_path = None
    reserved = 0
    from proxy.workers.supervisor import hold_data_dir

    # One proxy per data folder, and `export` / `import` never beside it.
    hold_data_dir(settings.database_path.parent)
    if settings.workers > 1:
        from proxy.workers.passthrough import PASS_THROUGH_CONNECTIONS, primary_socket_path
        from proxy.workers.supervisor import SERVE_ARGV

        app[SERVE_ARGV] = list(argv or sys.argv[1:])
        unix_path = primary_socket_path(settings.database_path.parent)
        reserved = PASS_THROUGH_CONNECTIONS * (settings.workers - 1)  # the workers' connections to this process
        log.info("primary with %d ingest workers on the same port", settings.workers - 1)
    guard = connection_guard(settings, app[CONNECTION_STATS], descriptors, reserved)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve_primary(app, settings, guard, unix_path))
    except (web.GracefulExit, KeyboardInterrupt):
        pass  # a second signal: the shutdown was cut short (below)
    except _CannotListen as exc:
        # Typically the port is taken; everything acknowledged so far is on disk already.
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
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
        _close_loop(loop)
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
