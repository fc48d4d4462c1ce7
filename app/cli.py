"""The `crmwatch` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

from app import logging as app_logging
from app.settings import get_settings
from app.widget.bundle import build_widget

log = logging.getLogger("crmwatch.cli")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app
    from app.migrate import upgrade

    settings = get_settings()
    app_logging.configure(settings.log_level, settings.log_json)
    if not args.no_migrate:
        upgrade(settings.database_url)
    app = create_app(settings, run_workers=False if args.no_workers else None)
    # Everything imported so far lives as long as the process: keep it out of the cyclic
    # collector, whose full passes otherwise stall the webhook path for ~100 ms at a time.
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                proxy_headers=True, forwarded_allow_ips=args.forwarded_allow_ips)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from app.migrate import upgrade

    settings = get_settings()
    app_logging.configure(settings.log_level, settings.log_json)
    upgrade(settings.database_url, args.revision)
    log.info("migrate.done", extra={"revision": args.revision})
    return 0


def _run_background(*, workers: bool) -> int:
    """The scheduler, and with `workers` the inbox, sync and outbox loops, until SIGINT/SIGTERM."""
    from app import workers as app_workers
    from app.runtime import Runtime

    settings = get_settings()
    app_logging.configure(settings.log_level, settings.log_json)

    async def main() -> None:
        rt = Runtime.build(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        scheduler = app_workers.SweepScheduler(rt, settings.scheduler_tick_seconds)
        scheduler.start()
        try:
            if workers:
                await asyncio.gather(*(loop(rt, stop) for _, loop in app_workers.WORKERS))
            else:
                await stop.wait()
        finally:
            await scheduler.stop()
            await rt.dispose()

    asyncio.run(main())
    return 0


def _worker(args: argparse.Namespace) -> int:
    """Background roles only, for scale-out beside API-only processes (`serve --no-workers`)."""
    return _run_background(workers=True)


def _scheduler(args: argparse.Namespace) -> int:
    """Only the sweep scheduler (one leader among many instances on PostgreSQL)."""
    return _run_background(workers=False)


def _demo(args: argparse.Namespace) -> int:
    from app.demo import reset_database, run_demo

    reset_database(args.database)
    return asyncio.run(run_demo(host=args.host, port=args.port, emulator_port=args.emulator_port,
                                database=args.database, once=args.once))


def _widget_build(args: argparse.Namespace) -> int:
    url = args.url or get_settings().public_url
    try:
        names = build_widget(args.crm, Path(args.out), url)
    except KeyError as exc:
        print(f"crmwatch widget build: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(names)} files, talks to {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crmwatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API, the workers and the scheduler in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema on start")
    serve.add_argument("--no-workers", action="store_true", help="API only; run `crmwatch worker` elsewhere")
    serve.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                       help="proxies trusted for X-Forwarded-* headers")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=_migrate)

    worker = sub.add_parser("worker", help="the inbox, sync and outbox workers and the scheduler, without the API")
    worker.set_defaults(func=_worker)

    scheduler = sub.add_parser("scheduler", help="run only the periodic sweeps")
    scheduler.set_defaults(func=_scheduler)

    demo = sub.add_parser("demo", help="run crmwatch against built-in amoCRM and Bitrix24 emulators, no account needed")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--emulator-port", type=int, default=8100)
    demo.add_argument("--database", default="sqlite+aiosqlite:///./crmwatch-demo.db",
                      help="where the demo keeps its data (recreated on each run when SQLite)")
    demo.add_argument("--once", action="store_true", help="run the scripted day, print the summary and exit")
    demo.set_defaults(func=_demo)

    widget = sub.add_parser("widget", help="the in-card widget")
    widget_sub = widget.add_subparsers(dest="widget_command", required=True)
    wbuild = widget_sub.add_parser("build", help="write the widget archive to upload into the CRM")
    wbuild.add_argument("--crm", choices=["amocrm"], default="amocrm")
    wbuild.add_argument("--out", default="widget.zip")
    wbuild.add_argument("--url", default=None,
                        help="the crmwatch address the widget calls (default: CRMWATCH_PUBLIC_URL)")
    wbuild.set_defaults(func=_widget_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
