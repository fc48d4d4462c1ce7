"""crmwatch watches amoCRM and Bitrix24 deals and PBX calls, flags forgotten tasks, stuck deals
and unlogged calls, and writes its findings back into the CRM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from app import logging as app_logging
from app.database_url import DatabaseUrlError
from app.settings import Settings, get_settings
from app.startup import StartupError, wait_for_database
from app.widget.bundle import build_widget

log = logging.getLogger("crmwatch.cli")

# What the commands that use the database read from the environment (an .env file works too).
DATABASE_ENV = """environment:
  CRMWATCH_DATABASE_URL          the database (default sqlite+aiosqlite:///./crmwatch.db);
                                 postgres://, postgresql:// and sqlite:/// are accepted as well
  CRMWATCH_DATABASE_WAIT_SECONDS how long a database that does not answer is retried at start (60)
  CRMWATCH_LOG_LEVEL             log level (INFO); logs are JSON lines on stderr"""
SERVICE_ENV = (
    DATABASE_ENV
    + """
  CRMWATCH_ADMIN_TOKEN           bearer token of the admin API /api/... (unset: the admin API is off)
  CRMWATCH_SECRET_KEY            encrypts CRM credentials at rest (unset: a key kept in ./crmwatch.secret)
  CRMWATCH_PUBLIC_URL            the address the CRM and browsers reach crmwatch at (http://localhost:8000)
  CRMWATCH_DATABASE_PASSWORD     the database password, put into the URL escaped (optional)
  more settings: README.md, "Configuration\""""
)
BACKGROUND_ENV = (
    SERVICE_ENV
    + """
  CRMWATCH_HEARTBEAT_FILE        a file touched every 5 s while the process runs, for health checks"""
)


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, and keeps the descriptions' line breaks."""


def _settings() -> Settings:
    settings = get_settings()
    app_logging.configure(settings.log_level, settings.log_json)
    return settings


def _wait_for_database(settings: Settings) -> None:
    asyncio.run(wait_for_database(settings.database_url, settings.database_wait_seconds))


def _upgrade(url: str, revision: str = "head") -> None:
    from app.migrate import upgrade

    try:
        upgrade(url, revision)
    except Exception as exc:  # the database went away mid-way, or a revision that does not exist
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"the schema upgrade failed: {first}") from None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    settings = _settings()
    if settings.admin_token is None:
        log.warning("admin_api.disabled", extra={"hint": "set CRMWATCH_ADMIN_TOKEN to use /api/..."})
    _wait_for_database(settings)
    if not args.no_migrate:
        _upgrade(settings.database_url)
    app = create_app(settings, run_workers=False if args.no_workers else None)
    # Everything imported so far lives as long as the process: keep it out of the cyclic
    # collector, whose full passes otherwise stall the webhook path for ~100 ms at a time.
    gc.freeze()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips or settings.forwarded_allow_ips,
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    settings = _settings()
    _wait_for_database(settings)
    _upgrade(settings.database_url, args.revision)
    log.info("migrate.done", extra={"revision": args.revision})
    return 0


def _run_background(*, workers: bool) -> int:
    """The scheduler, and with `workers` the inbox, sync and outbox loops, until SIGINT/SIGTERM."""
    from app import workers as app_workers
    from app.runtime import Runtime

    settings = _settings()
    _wait_for_database(settings)

    async def main() -> None:
        rt = Runtime.build(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        scheduler = app_workers.scheduler(rt)
        scheduler.start()
        try:
            if workers:
                tasks = app_workers.start(rt, stop)
                stopped = asyncio.create_task(stop.wait())
                # Until SIGTERM, or a loop that ended on its own (a crash: the process exits with it).
                await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
                log.info("worker.stopping")
                await app_workers.finish(rt, stop, tasks)
                stopped.cancel()
                crashed = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception()]
                if crashed:
                    raise crashed[0]
            else:
                await app_workers.heartbeat(rt, stop)  # until stop: the scheduler runs beside it
        finally:
            await scheduler.stop()
            await rt.dispose()

    # As in _serve: what is imported lives as long as the process; out of the cyclic collector,
    # whose full passes would otherwise walk it again and again while a batch allocates. And a
    # batch of thousands of rows makes hundreds of thousands of objects that live until it
    # commits: with the default thresholds the collector walked them every 700 allocations, a
    # fifth of the worker's time (bench/apply.py); every 10,000 it is a few percent. Cyclic
    # garbage still goes, a little later.
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    asyncio.run(main())
    return 0


def _worker(args: argparse.Namespace) -> int:
    """Background roles only, for scale-out beside API-only processes (`serve --no-workers`)."""
    return _run_background(workers=True)


def _scheduler(args: argparse.Namespace) -> int:
    """Only the sweep scheduler (one leader among many instances on PostgreSQL)."""
    return _run_background(workers=False)


def _demo(args: argparse.Namespace) -> int:
    from app.database_url import normalize
    from app.demo import DemoError, ports_taken, reset_database, run_demo

    database = normalize(args.database)
    b24_port = args.bitrix24_port or args.emulator_port + 1
    # Before anything is written or started: a port owned by another program is left alone.
    taken = ports_taken(
        args.host, {"--port": args.port, "--emulator-port": args.emulator_port, "--bitrix24-port": b24_port}
    )
    if taken:
        flag, port = taken[0]
        raise StartupError(
            f"port {port} on {args.host} is already in use by another program; choose another "
            f"with {flag} (nothing was started or changed)"
        )
    asyncio.run(wait_for_database(database, 0))
    reset_database(database)
    try:
        return asyncio.run(
            run_demo(
                host=args.host,
                port=args.port,
                emulator_port=args.emulator_port,
                bitrix24_port=b24_port,
                database=database,
                once=args.once,
                lang=args.lang,
            )
        )
    except DemoError as exc:
        raise StartupError(str(exc)) from None


def _widget_build(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.url is None and "public_url" not in settings.model_fields_set:
        # The default (http://localhost:8000) is only right on the machine crmwatch runs on: a widget
        # built with it fails in every manager's browser, silently.
        raise StartupError(
            "say which address the widget talks to: --url https://crmwatch.example.com, or set "
            "CRMWATCH_PUBLIC_URL (the managers' browsers must reach it)"
        )
    url = args.url or settings.public_url
    try:
        names = build_widget(args.crm, Path(args.out), url)
    except KeyError as exc:
        print(f"crmwatch widget build: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(names)} files, talks to {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crmwatch",
        formatter_class=_Help,
        description=__doc__,
        epilog="Run `crmwatch COMMAND --help` for a command's options, defaults and environment variables.\n"
        "Start here: `crmwatch demo` (no CRM account needed).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        formatter_class=_Help,
        help="the API, webhook intake, workers and scheduler in one process",
        description="Upgrades the schema, then serves the API and the webhook intake, with the inbox, sync "
        "and outbox workers and the sweep scheduler in the same process. A database that does "
        "not answer yet is waited for.",
        epilog=SERVICE_ENV,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema on start")
    serve.add_argument("--no-workers", action="store_true", help="API only; run `crmwatch worker` elsewhere")
    serve.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="comma-separated proxy addresses trusted for X-Forwarded-* headers ('*': any); "
        "default: CRMWATCH_FORWARDED_ALLOW_IPS, else 127.0.0.1",
    )
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser(
        "migrate",
        formatter_class=_Help,
        help="upgrade the database schema and exit",
        description="Upgrades the schema (Alembic) to a revision and exits.",
        epilog=DATABASE_ENV,
    )
    migrate.add_argument("--revision", default="head", help="the Alembic revision to upgrade to")
    migrate.set_defaults(func=_migrate)

    worker = sub.add_parser(
        "worker",
        formatter_class=_Help,
        help="the inbox, sync and outbox workers and the scheduler, without the API",
        description="Background roles only, for scale-out beside `crmwatch serve --no-workers` on PostgreSQL. "
        "Stops on SIGINT/SIGTERM.",
        epilog=BACKGROUND_ENV,
    )
    worker.set_defaults(func=_worker)

    scheduler = sub.add_parser(
        "scheduler",
        formatter_class=_Help,
        help="only the periodic sweeps",
        description="Only the periodic sweeps; on PostgreSQL one instance leads through an advisory lock.",
        epilog=BACKGROUND_ENV,
    )
    scheduler.set_defaults(func=_scheduler)

    demo = sub.add_parser(
        "demo",
        formatter_class=_Help,
        help="crmwatch against built-in amoCRM and Bitrix24 emulators, no account needed",
        description="Starts an amoCRM emulator, a Bitrix24 emulator and crmwatch on this machine, connects "
        "them, replays a sales team's day and prints what crmwatch found and wrote back. It "
        "checks its three ports first and starts nothing when one is taken.",
        epilog="environment:\n  CRMWATCH_SECRET_KEY  encrypts the demo's stored credentials (a fixed demo key)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address of all three servers")
    demo.add_argument("--port", type=int, default=8000, help="crmwatch's port")
    demo.add_argument(
        "--emulator-port",
        type=int,
        default=8100,
        help="the amoCRM emulator's port (it also serves the card with the widget)",
    )
    demo.add_argument(
        "--bitrix24-port", type=int, default=None, help="the Bitrix24 emulator's port (default: --emulator-port + 1)"
    )
    demo.add_argument(
        "--database",
        default="sqlite+aiosqlite:///./crmwatch-demo.db",
        help="where the demo keeps its data (recreated on each run when SQLite)",
    )
    demo.add_argument("--lang", choices=["ru", "en"], default="ru", help="language of the demo's output")
    demo.add_argument("--once", action="store_true", help="run the scripted day, print the summary and exit")
    demo.set_defaults(func=_demo)

    widget = sub.add_parser(
        "widget", formatter_class=_Help, help="the in-card widget", description="The amoCRM card widget."
    )
    widget_sub = widget.add_subparsers(dest="widget_command", required=True, metavar="COMMAND")
    wbuild = widget_sub.add_parser(
        "build",
        formatter_class=_Help,
        help="write the widget archive to upload into the CRM",
        description="Writes the amoCRM widget archive (upload it in the private integration's settings). "
        "It needs the address the managers' browsers reach crmwatch at: --url, or "
        "CRMWATCH_PUBLIC_URL.",
        epilog="environment:\n  CRMWATCH_PUBLIC_URL  the crmwatch address, when --url is not given",
    )
    wbuild.add_argument("--crm", choices=["amocrm"], default="amocrm", help="the CRM the widget is for")
    wbuild.add_argument("--out", default="widget.zip", help="the archive to write")
    wbuild.add_argument(
        "--url", default=None, help="the crmwatch address the widget calls (default: CRMWATCH_PUBLIC_URL)"
    )
    wbuild.set_defaults(func=_widget_build)
    return parser


def _setting_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    message = str(first.get("msg", "")).removeprefix("Value error, ")
    field = "_".join(str(p) for p in first.get("loc", ()))
    return message if message.startswith("CRMWATCH_") else f"CRMWATCH_{field.upper()}: {message}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (StartupError, DatabaseUrlError) as exc:
        message = str(exc)
    except ValidationError as exc:
        message = _setting_error(exc)
    # One line, what is wrong and what to do; never a traceback for a mistake in the set-up.
    print(f"crmwatch {args.command}: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
