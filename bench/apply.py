"""Apply benchmark: how fast one `crmwatch worker` turns an accepted burst into mirror and findings.

    python bench/apply.py [URL] [--events 20000] [--accounts 10] [--deals 2000] [--small]
                          [--concurrency 50] [--rounds 1] [--no-check] [--profile] [--seed 42]

One round, on PostgreSQL, in throwaway databases beside the one URL names:

1. seeds the accounts (amoCRM behind a dead URL, Mango Office connected) with their mirror and
   the findings of one full evaluation, identically in two databases: the run's and the
   reference's (see bench/applymix.py);
2. starts `crmwatch serve --no-workers` and posts the mix (amoCRM webhooks and Mango call
   summaries, each distinct) from a load generator in its own process: the accept rate;
3. stops it, starts ONE `crmwatch worker` and watches the database until no row is pending
   and the findings stop changing: the apply rate (rows/s from the first to the last applied
   row) and the time from the last acceptance until the mirror and the findings are current;
4. prints the figures and the issue's goals, MET or NOT MET;
5. stops the worker, feeds the same inbox rows one at a time into the reference database, each
   applied alone (a batch of one, with its own re-evaluation) before the next arrives, and
   compares the mirror and the active findings; then drops both databases.

The exit code is 0 whatever the figures, 1 when the correctness check fails, and 2 when the
run cannot be set up. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import applymix
from benchkit import (
    HOST,
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
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from app.db import make_engine, make_sessionmaker, scratch_database, utcnow
from app.findings.models import Finding, FindingEvent
from app.ingest.models import InboxEvent
from app.migrate import upgrade
from app.outbox.models import OutboxAction
from app.runtime import Runtime
from app.settings import Settings

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
GOAL_RATE = 1500.0  # rows/s
GOAL_RATIO = 0.5  # apply rate / accept rate
GOAL_CURRENT_S = 20.0  # last acceptance → mirror and findings current
SMALL = {"events": 2000, "accounts": 4, "deals": 300}
POLL_S = 0.2
# The findings are current once nothing has changed in them for this long after the last row.
QUIET_S = 3.0
HEADERS = {"content-type": "application/x-www-form-urlencoded", "user-agent": "crmwatch-bench"}


# --------------------------------------------------------------------------- load generator process


async def _load(args: argparse.Namespace, hooks: list[list[str]]) -> dict[str, Any]:
    split = urlsplit(args.url)
    host, port = split.hostname or HOST, split.port or 80
    wire = [post_bytes(host, port, path, HEADERS, body.encode("ascii")) for path, body in hooks]
    send, close = raw_sender(host, port, wire, args.concurrency)
    try:
        cpu0 = proc_cpu_seconds(args.server_pid)
        result = await run_phase(send, 0, len(wire), args.concurrency)
        cpu1 = proc_cpu_seconds(args.server_pid)
    finally:
        close()
    if cpu0 is not None and cpu1 is not None:
        result["server_cpu"] = (cpu1 - cpu0) / result["elapsed"]
    return result


def run_load(mix_file: Path, url: str, server_pid: int, concurrency: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_load",
        "--url",
        url,
        "--mix",
        str(mix_file),
        "--concurrency",
        str(concurrency),
        "--server-pid",
        str(server_pid),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise BenchError(f"the load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- database side


def settings_for(url: str, workdir: Path, secret: str) -> Settings:
    return Settings(
        database_url=url,
        secret_key=secret,
        secret_key_file=str(workdir / "secret"),
        admin_token=secrets.token_urlsafe(16),
        log_level="WARNING",
        run_workers=False,
    )


async def seed_both(
    run: Settings, reference: Settings, args: argparse.Namespace, now: datetime
) -> list[applymix.SeededAccount]:
    plans = []
    for settings in (run, reference):
        rt = Runtime.build(settings)
        try:
            plans.append(await applymix.seed(rt, args.accounts, args.deals, args.seed, now))
        finally:
            await rt.dispose()
    assert plans[0] == plans[1], "the two databases must start equal"
    return plans[0]


async def inbox_span(url: str) -> dict[str, Any]:
    """Counts and times of the inbox rows (all belong to the benchmark)."""
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as s:
            row = (
                await s.execute(
                    select(
                        func.count(),
                        func.min(InboxEvent.received_at),
                        func.max(InboxEvent.received_at),
                        func.min(InboxEvent.processed_at),
                        func.max(InboxEvent.processed_at),
                        func.sum(InboxEvent.events),
                    )
                )
            ).one()
            statuses = await applymix.inbox_counts(s)
    finally:
        await engine.dispose()
    keys = ("rows", "first_received", "last_received", "first_applied", "last_applied", "events")
    return {**dict(zip(keys, row, strict=True)), "statuses": statuses}


async def analyze_inbox(url: str) -> None:
    """What autovacuum does after a burst of inserts (this server may run without it): without
    statistics the planner takes the inbox for empty and the worker's claim walks every row."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE inbox_events"))
            await conn.commit()
    finally:
        await engine.dispose()


async def watch(url: str, pid: int, limit_s: float) -> dict[str, Any]:
    """Polls until no row is pending and the findings (and the CRM writes they enqueue) have not
    changed for QUIET_S; returns when that state was first seen, as an observer sees it."""
    engine = make_engine(url)
    pending_q = select(func.count()).select_from(InboxEvent).where(InboxEvent.status == "pending")
    signature_q = select(
        select(func.max(FindingEvent.id)).scalar_subquery(),
        select(func.max(Finding.id)).scalar_subquery(),
        select(func.max(OutboxAction.id)).scalar_subquery(),
    )
    started = time.monotonic()
    drained_at: datetime | None = None
    current_at: datetime | None = None
    last_signature: tuple | None = None
    cpu0, stat0 = proc_cpu_seconds(pid), machine_cpu()
    try:
        async with engine.connect() as conn:
            while time.monotonic() - started < limit_s:
                now = utcnow()
                pending = (await conn.execute(pending_q)).scalar_one()
                signature = tuple((await conn.execute(signature_q)).one())
                await conn.rollback()  # a fresh snapshot for the next poll
                if pending == 0:
                    drained_at = drained_at or now
                    if signature != last_signature or current_at is None:
                        current_at = now
                    elif (now - current_at).total_seconds() >= QUIET_S:
                        break
                else:
                    current_at = None
                last_signature = signature
                await asyncio.sleep(POLL_S)
            else:
                drained_at = current_at = None
        async with engine.connect() as conn:
            backends = (
                await conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            ).scalars()
            database_cpu = sum(proc_cpu_seconds(p) or 0.0 for p in backends)
    finally:
        await engine.dispose()
    cpu1, stat1, elapsed = proc_cpu_seconds(pid), machine_cpu(), time.monotonic() - started
    return {
        "database_cpu_s": database_cpu,
        "worker_cpu_s": cpu1,
        "drained_at": drained_at,
        "current_at": current_at,
        "worker_cpu": (cpu1 - cpu0) / elapsed if cpu0 is not None and cpu1 is not None else None,
        "machine_cpu": machine_busy(stat0, stat1),
    }


def machine_cpu() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat; None elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def machine_busy(a: tuple[int, int] | None, b: tuple[int, int] | None) -> float | None:
    if a is None or b is None or b[1] == a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


async def check(run: Settings, reference: Settings) -> dict[str, Any]:
    """Applies the run's inbox rows one by one in the reference database; compares the two."""
    batch, one = Runtime.build(run), Runtime.build(reference)
    try:
        started = time.perf_counter()
        applied = await applymix.replay_one_by_one(batch, one)
        elapsed = time.perf_counter() - started
        async with batch.reads() as s:
            left = await applymix.snapshot(s)
        async with one.reads() as s:
            right = await applymix.snapshot(s)
            statuses = await applymix.inbox_counts(s)
    finally:
        await batch.dispose()
        await one.dispose()
    return {
        "applied": applied,
        "elapsed": elapsed,
        "statuses": statuses,
        "sizes": {label: len(v) for label, v in left.items()},
        "differences": applymix.differences(left, right),
    }


# --------------------------------------------------------------------------- one round


def bench_round(args: argparse.Namespace, base_url: str, workdir: Path) -> dict[str, Any]:
    with (
        scratch_database(base_url, "crmwatch_apply") as run_url,
        scratch_database(base_url, "crmwatch_apply_ref") as ref_url,
    ):
        return _round(args, run_url, ref_url, workdir)


def _round(args: argparse.Namespace, run_url: str, ref_url: str, workdir: Path) -> dict[str, Any]:
    secret = secrets.token_urlsafe(32)
    run, reference = settings_for(run_url, workdir, secret), settings_for(ref_url, workdir, secret)
    out: dict[str, Any] = {}
    started = time.perf_counter()
    upgrade(run_url)
    upgrade(ref_url)
    now = utcnow()
    plans = asyncio.run(seed_both(run, reference, args, now))
    mix = applymix.build_mix(plans, args.events, args.seed, now)
    mix_file = workdir / "mix.jsonl"
    mix_file.write_text("".join(json.dumps([h.path, h.body]) + "\n" for h in mix))
    out["seeded_s"] = time.perf_counter() - started
    out["kinds"] = {"amocrm": sum(h.path.startswith("/hooks/amocrm/") for h in mix)}
    out["kinds"]["mango"] = len(mix) - out["kinds"]["amocrm"]

    port = free_port()
    env = dict(
        os.environ,
        CRMWATCH_DATABASE_URL=run_url,
        CRMWATCH_SECRET_KEY=secret,
        CRMWATCH_SECRET_KEY_FILE=str(workdir / "secret"),
        CRMWATCH_ADMIN_TOKEN=secrets.token_urlsafe(16),
        CRMWATCH_LOG_LEVEL="WARNING",
        CRMWATCH_LOG_JSON="true",
        CRMWATCH_PUBLIC_URL=f"http://{HOST}:{port}",
    )
    base = f"http://{HOST}:{port}"
    serve = [*crmwatch_command(), "serve", "--host", HOST, "--port", str(port), "--no-workers", "--no-migrate"]
    with server(serve, env=env, cwd=workdir, log=workdir / "serve.log", ready_url=f"{base}/healthz") as pid:
        out["accept"] = run_load(mix_file, base, pid, args.concurrency)
    out["serve_log"] = log_summary(workdir / "serve.log")
    out["accepted"] = asyncio.run(inbox_span(run_url))
    asyncio.run(analyze_inbox(run_url))

    profile = workdir / "worker.prof"
    worker = (
        [*crmwatch_command(), "worker"]
        if not args.profile
        else [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "app.cli", "worker"]
    )
    launched = utcnow()
    with background(worker, env=env, cwd=workdir, log=workdir / "worker.log") as pid:
        out["watch"] = asyncio.run(watch(run_url, pid, args.timeout))
    out["launched"] = launched
    out["worker_log"] = log_summary(workdir / "worker.log")
    out["applied"] = asyncio.run(inbox_span(run_url))
    if args.profile and profile.exists():
        out["profile"] = profile_summary(profile)
    print()
    report(out)
    if not args.no_check:
        print()
        print("  checking against one-by-one application ...", flush=True)
        out["check"] = asyncio.run(check(run, reference))
        out["ok"] = report_check(out)
    return out


def profile_summary(path: Path, top: int = 18) -> list[str]:
    stats = pstats.Stats(str(path))
    total = stats.total_tt or 1.0
    lines = []
    for label, key in (("own time", "tottime"), ("cumulative", "cumulative")):
        lines.append(f"  by {label} ({total:.1f} s of CPU profiled):")
        ranked = sorted(stats.stats.items(), key=lambda kv: -kv[1][2 if key == "tottime" else 3])  # type: ignore[attr-defined]
        shown = 0
        for (file, line, name), (_, calls, tt, ct, _) in ranked:
            if key == "cumulative" and ("asyncio" in file or name in ("<module>", "run", "_run_module_as_main")):
                continue  # the event loop's own frames wrap everything
            where = file.split("site-packages/")[-1].split("/crmwatch/")[-1]
            lines.append(f"    {tt if key == 'tottime' else ct:7.2f} s  {calls:>9}x  {name}  ({where}:{line})")
            shown += 1
            if shown == top:
                break
    return lines


# --------------------------------------------------------------------------- report


def seconds(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None else None


def figures(r: dict[str, Any]) -> dict[str, Any]:
    acc, app, w = r["accepted"], r["applied"], r["watch"]
    span = seconds(app["first_applied"], app["last_applied"])
    done = app["statuses"].get("done", 0)
    apply_rate = done / span if span else None
    accept_rate = r["accept"]["rps"]
    return {
        "accept_rate": accept_rate,
        "apply_rate": apply_rate,
        "apply_span": span,
        "ratio": apply_rate / accept_rate if apply_rate and accept_rate else None,
        "current_s": seconds(acc["last_received"], w["current_at"]),
        "drained_s": seconds(acc["last_received"], w["drained_at"]),
        "startup_s": seconds(r["launched"], app["first_applied"]),
        "evaluated_after_last_row_s": seconds(app["last_applied"], w["current_at"]),
    }


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{format(value, spec)}{unit}"


def report(r: dict[str, Any]) -> None:
    f, a, acc, app = figures(r), r["accept"], r["accepted"], r["applied"]
    print(
        f"  mix: {acc['rows']} rows stored of {a['responses']} posted ({r['kinds']['amocrm']} amoCRM webhooks, "
        f"{r['kinds']['mango']} Mango call summaries); seeding took {r['seeded_s']:.1f} s"
    )
    print()
    print(
        f"  accept (serve --no-workers)     {fmt(f['accept_rate'], '.0f')} requests/s over {a['elapsed']:.1f} s, "
        f"p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms, server CPU {fmt(a.get('server_cpu'), '.0%')}"
    )
    if a["non_2xx"] or a["errors"]:
        print(f"  ! statuses {a['statuses']}, errors {a['errors']}")
    print(
        f"  apply (one crmwatch worker)     {fmt(f['apply_rate'], '.0f')} rows/s: {app['statuses'].get('done', 0)} "
        f"rows ({app['events']} events) from the first applied row to the last in "
        f"{fmt(f['apply_span'], '.1f', ' s')}"
    )
    print(f"    worker start to first row     {fmt(f['startup_s'], '.1f', ' s')} (process start-up and imports)")
    print(
        f"    CPU while applying            worker {fmt(r['watch']['worker_cpu'], '.0%')} of a core, "
        f"machine {fmt(r['watch']['machine_cpu'], '.0%')} of one core's worth ({os.cpu_count()} cores)"
    )
    print(
        f"    CPU seconds until current     worker {fmt(r['watch']['worker_cpu_s'], '.1f', ' s')} (start-up included), "
        f"its PostgreSQL backends {fmt(r['watch']['database_cpu_s'], '.1f', ' s')}"
    )
    print(f"  last acceptance → mirror current      {fmt(f['drained_s'], '.1f', ' s')} (no row pending)")
    print(
        f"  last acceptance → findings current    {fmt(f['current_s'], '.1f', ' s')} "
        f"({fmt(f['evaluated_after_last_row_s'], '.1f', ' s')} after the last row was applied)"
    )
    print(f"  apply / accept                  {fmt(f['ratio'], '.3f')}")
    if app["statuses"].get("done", 0) != acc["rows"]:
        print(f"  ! inbox after the worker: {app['statuses']}")
    for name in ("serve_log", "worker_log"):
        if r[name]:
            events = ", ".join(f"{n}x {k}" for k, n in sorted(r[name].items(), key=lambda kv: -kv[1])[:5])
            print(f"  {name.replace('_', ' ')} (WARNING and up): {events}")
    print()
    print("  goals (issue 18)")
    for label, value, met in (
        (
            f"apply rate >= {GOAL_RATE:.0f} events/s",
            fmt(f["apply_rate"], ".0f", "/s"),
            f["apply_rate"] is not None and f["apply_rate"] >= GOAL_RATE,
        ),
        (
            f"apply >= {GOAL_RATIO} x accept",
            fmt(f["ratio"], ".3f"),
            f["ratio"] is not None and f["ratio"] >= GOAL_RATIO,
        ),
        (
            f"current <= {GOAL_CURRENT_S:.0f} s after the last acceptance",
            fmt(f["current_s"], ".1f", " s"),
            f["current_s"] is not None and f["current_s"] <= GOAL_CURRENT_S,
        ),
    ):
        print(f"    {'MET    ' if met else 'NOT MET'}  {label} ({value})")
    if "profile" in r:
        print()
        print("  where the worker's time went (cProfile of the worker process):")
        print("\n".join(r["profile"]))


def report_check(r: dict[str, Any]) -> bool:
    """Prints the comparison with one-by-one application; True when they are equal."""
    c, rows = r["check"], r["accepted"]["rows"]
    bad = {label: d for label, d in c["differences"].items() if d}
    ok = not bad and c["statuses"] == {"done": rows}
    sizes = ", ".join(f"{n} {label}" for label, n in c["sizes"].items())
    print(
        f"  one by one (reference)          {c['applied'] / c['elapsed']:.0f} rows/s "
        f"({c['applied']} rows in {c['elapsed']:.1f} s, each applied alone before the next arrives, in-process)"
    )
    print(
        f"  correctness: mirror and active findings {'EQUAL' if ok else 'DIFFER'} to one-by-one application ({sizes})",
        flush=True,
    )
    for label, diffs in bad.items():
        print(f"    {label}: {len(diffs)} differ, e.g. " + "; ".join(diffs[:3]))
    if c["statuses"] != {"done": rows}:
        print(f"    reference inbox: {c['statuses']}")
    return ok


# --------------------------------------------------------------------------- main


def orchestrate(args: argparse.Namespace) -> int:
    url = make_url(args.url)
    if url.get_backend_name() != "postgresql":
        print("this benchmark runs on PostgreSQL", file=sys.stderr)
        return 2
    base_url = url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    print(
        f"crmwatch apply benchmark: {args.events} webhooks over {args.accounts} accounts of {args.deals} deals, "
        f"{args.concurrency} senders, PostgreSQL, {os.cpu_count()} CPUs, {args.rounds} round(s)"
    )
    with contextlib.suppress(OSError, AttributeError):
        print(f"  load average before the run: {os.getloadavg()[0]:.2f}")
    rounds = []
    for n in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="crmwatch-apply-") as tmp:
            try:
                print(f"\n  round {n}/{args.rounds}", flush=True)
                rounds.append(bench_round(args, base_url, Path(tmp)))
            except (BenchError, subprocess.TimeoutExpired) as exc:
                print(f"benchmark failed: {exc}", file=sys.stderr)
                return 2
    if len(rounds) > 1:
        print()
        for label, key, spec in (
            ("accept", "accept_rate", ".0f"),
            ("apply", "apply_rate", ".0f"),
            ("apply / accept", "ratio", ".3f"),
            ("current after, s", "current_s", ".1f"),
        ):
            values = [figures(r)[key] for r in rounds]
            known = [v for v in values if v is not None]
            median = fmt(statistics.median(known), spec) if known else "-"
            print(f"  {label:<18} by round: {', '.join(fmt(v, spec) for v in values)} (median {median})")
    return 0 if all(r.get("ok", True) for r in rounds) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_load"]:  # internal: the load generator process
        p = argparse.ArgumentParser(prog="apply.py _load")
        p.add_argument("--url", required=True)
        p.add_argument("--mix", required=True)
        p.add_argument("--concurrency", type=int, required=True)
        p.add_argument("--server-pid", type=int, required=True)
        a = p.parse_args(argv[1:])
        hooks = [json.loads(line) for line in Path(a.mix).read_text().splitlines()]
        print(json.dumps(asyncio.run(_load(a, hooks))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "url",
        nargs="?",
        default=DEFAULT_URL,
        help=f"an existing PostgreSQL database; the run's own are created beside it (default {DEFAULT_URL})",
    )
    p.add_argument("--events", type=int, default=20_000, help="webhooks in the burst (default 20000)")
    p.add_argument("--accounts", type=int, default=10, help="accounts (default 10)")
    p.add_argument("--deals", type=int, default=2000, help="seeded deals per account (default 2000)")
    p.add_argument(
        "--small",
        action="store_true",
        help=f"a quick run: {SMALL['events']} webhooks, {SMALL['accounts']} accounts of "
        f"{SMALL['deals']} deals (explicit sizes still win)",
    )
    p.add_argument("--concurrency", type=int, default=50, help="concurrent senders (default 50)")
    p.add_argument("--rounds", type=int, default=1, help="rounds, each in fresh databases (default 1)")
    p.add_argument("--timeout", type=float, default=1800.0, help="give the worker up after this many seconds")
    p.add_argument("--no-check", action="store_true", help="skip the one-by-one reference and the comparison")
    p.add_argument("--profile", action="store_true", help="run the worker under cProfile and print its top costs")
    p.add_argument("--seed", type=int, default=42, help="seed of the generated accounts and mix")
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    args = p.parse_args(argv)
    if args.small:
        for name, value in SMALL.items():
            if f"--{name}" not in given:
                setattr(args, name, value)
    if min(args.events, args.accounts, args.deals, args.concurrency, args.rounds) < 1:
        p.error("sizes, --concurrency and --rounds must be positive")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
