"""Webhook intake benchmark: crmwatch against a bare FastAPI endpoint, in one run.

    python bench/ingest.py [--requests N] [--concurrency C] [--warmup W]
                           [--database sqlite|URL] [--client raw|httpx] [--no-workers | --split-worker]

Both servers run in their own subprocess with the same uvicorn settings (one process, the
same host, loop="auto", http="auto", no access log). The load generator is a third process,
the same for both targets, so the server under test gets a core of its own on a two-core
machine and both targets are driven identically. Every request carries a distinct body:
crmwatch deduplicates identical bodies, so repeats would be cheaper than real traffic.

After the crmwatch run the server is stopped and the rows of the benchmark account in
inbox_events are counted: every accepted (2xx) webhook must have been stored durably.

It is a measurement, not a test: the exit code is 0 whatever the figures (2 only when a
server cannot be started or the load generator fails). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from benchkit import (
    HOST,
    REQUEST_TIMEOUT,
    BenchError,
    background,
    crmwatch_command,
    free_port,
    log_summary,
    post_bytes,
    proc_cpu_seconds,
    raw_sender,
    run_phase,
    server,
)

# Module level: with postponed annotations FastAPI resolves `Request` in the module namespace.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

GOAL_RATIO = 0.5
GOAL_P99_MS = 50.0
# A port nothing listens on: the account's backfill fails at once, harmlessly.
DEAD_CRM_URL = "http://127.0.0.1:9"

# An amoCRM "lead changed stage" webhook, one key=value a line in wire order. The {lead},
# {modified} placeholders make each body distinct (crmwatch drops repeated bodies).
WEBHOOK_TEMPLATE = """\
leads[status][0][id]={lead}
leads[status][0][name]=Заказ #{lead}
leads[status][0][status_id]=41000003
leads[status][0][price]=15000
leads[status][0][responsible_user_id]=8100001
leads[status][0][last_modified]={modified}
leads[status][0][modified_user_id]=8100001
leads[status][0][created_user_id]=8100001
leads[status][0][date_create]=1763913600
leads[status][0][pipeline_id]=4100000
leads[status][0][account_id]=29876543
leads[status][0][created_at]=1763913600
leads[status][0][updated_at]={modified}
leads[status][0][old_status_id]=41000002
leads[status][0][old_pipeline_id]=4100000
account[subdomain]=demoshop
account[id]=29876543
account[_links][self]=https://demoshop.amocrm.ru"""


def webhook_body(index: int, base: int) -> bytes:
    """The form-encoded body of webhook number `index`; `base` separates runs."""
    text = WEBHOOK_TEMPLATE.format(lead=31_000_001 + index, modified=base + index)
    pairs = (line.split("=", 1) for line in text.splitlines())
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()


# --------------------------------------------------------------------------- bare server


def bare_app() -> FastAPI:
    """The baseline: FastAPI doing nothing but reading the body and answering."""
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.post("/hooks/amocrm/{key}")
    async def receive(request: Request, key: str) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "accepted"})

    return app


def serve_bare(host: str, port: int) -> None:
    import uvicorn

    # The settings `crmwatch serve` uses, spelled out.
    uvicorn.run(
        bare_app(),
        host=host,
        port=port,
        loop="auto",
        http="auto",
        access_log=False,
        log_level="warning",
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
    )


# --------------------------------------------------------------------------- load generator


async def load(args: argparse.Namespace) -> dict[str, Any]:
    total = args.warmup + args.requests
    split = urlsplit(args.url)
    host, port, path = split.hostname or HOST, split.port or 80, split.path
    bodies = [webhook_body(i, args.base) for i in range(total)]
    headers = {"content-type": "application/x-www-form-urlencoded", "user-agent": "crmwatch-bench"}

    if args.client == "raw":
        send, close = raw_sender(
            host, port, [post_bytes(host, port, path, headers, b) for b in bodies], args.concurrency
        )
        cleanup: Callable[[], Awaitable[None]] | None = None
    else:
        import httpx

        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency),
            timeout=REQUEST_TIMEOUT,
        )

        async def send(k: int, i: int) -> int:
            return (await client.post(args.url, content=bodies[i], headers=headers)).status_code

        cleanup = client.aclose

    try:
        warm = await run_phase(send, 0, args.warmup, args.concurrency)
        server_cpu0, client_cpu0 = proc_cpu_seconds(args.server_pid), time.process_time()
        result = await run_phase(send, args.warmup, args.requests, args.concurrency)
        server_cpu1, client_cpu1 = proc_cpu_seconds(args.server_pid), time.process_time()
    finally:
        if cleanup is not None:
            await cleanup()
        else:
            close()
    if server_cpu0 is not None and server_cpu1 is not None:
        result["server_cpu"] = (server_cpu1 - server_cpu0) / result["elapsed"]
    result["client_cpu"] = (client_cpu1 - client_cpu0) / result["elapsed"]
    result["warmup"] = {k: warm[k] for k in ("responses", "ok", "non_2xx", "errors")}
    result["ok_total"] = warm["ok"] + result["ok"]
    return result


def load_main(args: argparse.Namespace) -> None:
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(load(args))
        result["client_loop"] = "asyncio"
    else:
        result = uvloop.run(load(args))
        result["client_loop"] = "uvloop"
    print(json.dumps(result))


# --------------------------------------------------------------------------- orchestration


def wait_for_drain(base: str, admin: str, account_id: int, limit_s: float = 120.0) -> float | None:
    """Seconds until the worker has applied the whole burst (None if it did not within limit_s)."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        counts = httpx.get(
            f"{base}/api/accounts/{account_id}/inbox", timeout=10, headers={"authorization": f"Bearer {admin}"}
        ).json()["counts"]
        if counts["pending"] == 0:
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def run_load(args: argparse.Namespace, url: str, server_pid: int, base: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_load",
        "--url",
        url,
        "--requests",
        str(args.requests),
        "--warmup",
        str(args.warmup),
        "--concurrency",
        str(args.concurrency),
        "--client",
        args.client,
        "--server-pid",
        str(server_pid),
        "--base",
        str(base),
    ]
    budget = 120 + (args.requests + args.warmup) * REQUEST_TIMEOUT / max(1, args.concurrency)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, check=False)
    if done.returncode != 0:
        raise BenchError(f"the load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_bare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "_bare", "--host", HOST, "--port", str(port)]
    with server(
        cmd, env=dict(os.environ), cwd=workdir, log=workdir / "bare.log", ready_url=f"http://{HOST}:{port}/healthz"
    ) as pid:
        return run_load(args, f"http://{HOST}:{port}/hooks/amocrm/bare-benchmark-key", pid, base=1_764_000_000)


def database_url(option: str, workdir: Path) -> str:
    if option == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / 'crmwatch-bench.db'}"
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if option.startswith(plain):
            return driver + option.removeprefix(plain)
    return option


@contextlib.contextmanager
def throwaway_database(url: str) -> Iterator[str]:
    """On PostgreSQL, a fresh database beside the given one for this round, dropped afterwards:
    a round must not start on the previous round's rows (or on someone else's schema)."""
    if not url.startswith("postgresql"):
        yield url
        return
    from app.db import scratch_database

    with scratch_database(url, "crmwatch_ingest") as scratch:
        yield scratch


def sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    path = unquote(url.split(":///", 1)[1].split("?", 1)[0]) if ":///" in url else ""
    return Path(path) if path and path != ":memory:" else None


STATUS_QUERY = "SELECT status, count(*) FROM inbox_events WHERE account_id = :a GROUP BY status"


async def _inbox_status_async(url: str, account_id: int) -> dict[str, int]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return {st: int(n) for st, n in await conn.execute(text(STATUS_QUERY), {"a": account_id})}
    finally:
        await engine.dispose()


def inbox_status(url: str, account_id: int) -> tuple[dict[str, int] | None, str]:
    """Rows of the benchmark account in inbox_events by status, read after the server stopped."""
    path = sqlite_file(url)
    if path is not None:
        with contextlib.closing(sqlite3.connect(path)) as db:
            rows = db.execute(STATUS_QUERY.replace(":a", "?"), (account_id,)).fetchall()
        return {st: n for st, n in rows}, "sqlite3 on the database file"
    if url.startswith("postgresql"):
        try:
            return asyncio.run(_inbox_status_async(url, account_id)), "SQLAlchemy"
        except Exception as exc:
            return None, f"skipped ({type(exc).__name__}: {exc})"
    return None, "skipped: unsupported database"


def bench_crmwatch(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:

    with throwaway_database(database_url(args.database, workdir)) as url:
        return _bench_crmwatch(args, workdir, url)


def _bench_crmwatch(args: argparse.Namespace, workdir: Path, url: str) -> dict[str, Any]:
    import httpx

    port = free_port()
    admin = secrets.token_urlsafe(24)
    env = dict(
        os.environ,
        CRMWATCH_DATABASE_URL=url,
        CRMWATCH_ADMIN_TOKEN=admin,
        CRMWATCH_SECRET_KEY=secrets.token_urlsafe(32),
        CRMWATCH_SECRET_KEY_FILE=str(workdir / "secret"),
        CRMWATCH_LOG_LEVEL="WARNING",
        CRMWATCH_LOG_JSON="true",
        CRMWATCH_PUBLIC_URL=f"http://{HOST}:{port}",
    )
    cmd = [*crmwatch_command(), "serve", "--host", HOST, "--port", str(port)]
    if args.no_workers or args.split_worker:
        cmd.append("--no-workers")
    base = f"http://{HOST}:{port}"
    log = workdir / "crmwatch.log"
    with server(cmd, env=env, cwd=workdir, log=log, ready_url=f"{base}/healthz") as pid:
        created = httpx.post(
            f"{base}/api/accounts",
            headers={"authorization": f"Bearer {admin}"},
            timeout=30,
            json={
                "name": "ingest benchmark",
                "crm": "amocrm",
                "base_url": DEAD_CRM_URL,
                "access_token": "benchmark",
                "timezone": "Europe/Moscow",
            },
        )
        if created.status_code != 201:
            raise BenchError(f"POST /api/accounts answered {created.status_code}: {created.text[:500]}")
        account = created.json()
        with contextlib.ExitStack() as stack:
            if args.split_worker:
                # The production layout for load: intake in one process, workers in another.
                stack.enter_context(
                    background([*crmwatch_command(), "worker"], env=env, cwd=workdir, log=workdir / "worker.log")
                )
            # A per-run base keeps bodies distinct from earlier runs on a reused database.
            result = run_load(args, f"{base}/hooks/amocrm/{account['key']}", pid, base=int(time.time()))
            if not args.no_workers:
                result["drain_s"] = wait_for_drain(base, admin, account["id"])
    result["inbox"], result["inbox_how"] = inbox_status(url, account["id"])
    result["log"] = log_summary(log)
    return result


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(bare: dict[str, Any], crm: dict[str, Any]) -> None:
    def line(label: str, key: str, spec: str, scale: float | None = None) -> None:
        values = [r.get(key) for r in (bare, crm)]
        cells = [fmt(v * scale if v is not None and scale else v, spec) for v in values]
        print(f"  {label:<30}{cells[0]:>14}{cells[1]:>14}")

    print()
    print(f"  {'':<30}{'bare FastAPI':>14}{'crmwatch':>14}")
    line("requests/s", "rps", ".0f")
    line("p50 latency, ms", "p50_ms", ".1f")
    line("p99 latency, ms", "p99_ms", ".1f")
    line("max latency, ms", "max_ms", ".1f")
    line("responses", "responses", "d")
    line("non-2xx responses", "non_2xx", "d")
    print(f"  {'connection errors/timeouts':<30}{sum(bare['errors'].values()):>14}{sum(crm['errors'].values()):>14}")
    line("server CPU, % of one core", "server_cpu", ".0f", 100)
    line("load generator CPU, % of core", "client_cpu", ".0f", 100)
    for name, r in (("bare", bare), ("crmwatch", crm)):
        odd = {s: n for s, n in r["statuses"].items() if not s.startswith("2")}
        if odd or r["errors"] or r["warmup"]["non_2xx"] or r["warmup"]["errors"]:
            print(f"  ! {name}: statuses {r['statuses']}, errors {r['errors']}, warm-up {r['warmup']}")

    ratio = crm["rps"] / bare["rps"] if bare["rps"] else float("nan")
    print()
    print(f"  throughput ratio crmwatch/bare: {ratio:.2f}")
    if bare.get("client_cpu", 0) > 0.9:
        print(
            "  note: the load generator used a whole core against the bare app, so the bare figure is a floor"
            " and the ratio flatters crmwatch"
        )
    inbox = crm["inbox"]
    if inbox is None:
        print(f"  durability: {crm['ok_total']} accepted (incl. warm-up); row count {crm['inbox_how']}")
    else:
        rows = sum(inbox.values())
        verdict = "OK" if rows == crm["ok_total"] else "MISMATCH"
        print(
            f"  durability: {crm['ok_total']} accepted (incl. warm-up), {rows} rows in inbox_events "
            f"({crm['inbox_how']}) -> {verdict}"
        )
        by_status = ", ".join(f"{n} {st}" for st, n in sorted(inbox.items()))
        print(f"  inbox worker at shutdown: {by_status}")
    if "drain_s" in crm:
        drain = crm["drain_s"]
        print(
            "  worker after the burst: "
            + (
                f"applied every row within {drain:.1f} s"
                if drain is not None
                else "had not applied every row after 120 s"
            )
        )
    if crm["log"]:
        events = ", ".join(f"{n}x {key}" for key, n in sorted(crm["log"].items(), key=lambda kv: -kv[1])[:6])
        print(f"  crmwatch log (WARNING and up): {events}")
    print()
    print("  goals")
    print(f"    throughput ratio >= {GOAL_RATIO}: {'MET' if ratio >= GOAL_RATIO else 'NOT MET'} ({ratio:.2f})")
    print(
        f"    crmwatch p99 <= {GOAL_P99_MS:.0f} ms: {'MET' if crm['p99_ms'] <= GOAL_P99_MS else 'NOT MET'} "
        f"({crm['p99_ms']:.1f} ms)"
    )


def orchestrate(args: argparse.Namespace) -> int:
    db_label = "SQLite, fresh temporary file" if args.database == "sqlite" else "given database URL"
    if args.no_workers:
        db_label += ", crmwatch WITHOUT workers (not the production setup)"
    print(
        f"crmwatch ingest benchmark: {args.requests} requests after {args.warmup} warm-up, "
        f"{args.concurrency} concurrent senders, {args.client} client in its own process, {db_label}, "
        f"{os.cpu_count()} CPUs"
    )
    with contextlib.suppress(OSError, AttributeError):
        # Other work on the machine skews both figures; a high load before we start says so.
        print(f"  load average before the run: {os.getloadavg()[0]:.2f}")
    # On a shared machine either figure can drift by half between two minutes; rounds that
    # alternate the targets pair each crmwatch figure with the bare one measured just before it,
    # and the round with the median ratio is the one reported.
    layout = (
        "workers OFF"
        if args.no_workers
        else "worker in its own process"
        if args.split_worker
        else "workers on, in-process"
    )
    rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for n in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="crmwatch-bench-") as tmp:
            workdir = Path(tmp)
            try:
                print(f"  round {n}/{args.rounds}: the bare FastAPI endpoint ...", flush=True)
                bare = bench_bare(args, workdir)
                print(f"  round {n}/{args.rounds}: crmwatch ({layout}) ...", flush=True)
                crm = bench_crmwatch(args, workdir)
            except (BenchError, subprocess.TimeoutExpired) as exc:
                print(f"benchmark failed: {exc}", file=sys.stderr)
                return 2
        rounds.append((bare, crm))
        print(f"    {crm['rps']:.0f} vs {bare['rps']:.0f} req/s = {crm['rps'] / bare['rps']:.2f}", flush=True)
    ranked = sorted(rounds, key=lambda r: r[1]["rps"] / r[0]["rps"])
    bare, crm = ranked[len(ranked) // 2]
    if len(rounds) > 1:
        ratios = ", ".join(f"{c['rps'] / b['rps']:.2f}" for b, c in rounds)
        print(f"  ratios by round: {ratios}; the round with the median ratio follows")
    report(bare, crm)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_bare"]:  # internal: the baseline server process
        p = argparse.ArgumentParser(prog="ingest.py _bare")
        p.add_argument("--host", default=HOST)
        p.add_argument("--port", type=int, required=True)
        a = p.parse_args(argv[1:])
        serve_bare(a.host, a.port)
        return 0
    if argv[:1] == ["_load"]:  # internal: the load generator process
        p = argparse.ArgumentParser(prog="ingest.py _load")
        p.add_argument("--url", required=True)
        p.add_argument("--requests", type=int, required=True)
        p.add_argument("--warmup", type=int, required=True)
        p.add_argument("--concurrency", type=int, required=True)
        p.add_argument("--client", choices=("raw", "httpx"), default="raw")
        p.add_argument("--server-pid", type=int, required=True)
        p.add_argument("--base", type=int, required=True)
        load_main(p.parse_args(argv[1:]))
        return 0

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=5000, help="measured requests per target (default 5000)")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured requests first (default 200)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of bare then crmwatch; the round with the median ratio is reported (default 3)",
    )
    p.add_argument("--concurrency", type=int, default=50, help="concurrent senders/connections (default 50)")
    p.add_argument(
        "--database",
        default="sqlite",
        help="'sqlite' for a fresh temporary file (default) or a database URL for crmwatch",
    )
    p.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator: a minimal keep-alive HTTP/1.1 client (default) or httpx",
    )
    p.add_argument(
        "--no-workers",
        action="store_true",
        help="diagnosis only: run crmwatch without its in-process workers (intake alone)",
    )
    p.add_argument(
        "--split-worker",
        action="store_true",
        help="the scale-out layout: `serve --no-workers` for intake plus `crmwatch worker` beside it",
    )
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("--requests, --concurrency and --rounds must be positive, --warmup not negative")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
