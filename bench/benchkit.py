"""Pieces the benchmarks share: subprocess servers, a cheap HTTP/1.1 load client, CPU readings.

The benchmark scripts run as `python bench/<name>.py`, so this module is imported as a sibling
(`from benchkit import ...`); the tests put bench/ on sys.path to import them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REQUEST_TIMEOUT = 30.0
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client: far cheaper per request than a full client
    library, so the load generator is less likely to be what limits the fast baseline."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length: int | None = None
        chunked = close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length is not None:
            await self.reader.readexactly(length)
        else:
            await self.reader.read()
            close = True
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def post_bytes(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """One HTTP/1.1 POST as it goes on the wire, ready for RawConnection.request."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    ).encode()
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def raw_sender(
    host: str, port: int, wire: list[bytes], concurrency: int
) -> tuple[Callable[[int, int], Awaitable[int]], Callable[[], None]]:
    """send(k, i) for run_phase: request wire[i] on sender k's own keep-alive connection; and close()."""
    conns = [RawConnection(host, port) for _ in range(concurrency)]

    async def send(k: int, i: int) -> int:
        try:
            return await conns[k].request(wire[i])
        except BaseException:
            conns[k].close()  # a half-read response would desynchronise the connection
            raise

    def close() -> None:
        for c in conns:
            c.close()

    return send, close


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) of a process, from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def run_phase(
    send: Callable[[int, int], Awaitable[int]], first: int, count: int, concurrency: int
) -> dict[str, Any]:
    """Sends webhooks first..first+count-1 from `concurrency` senders; sender k sends with send(k, i)."""
    cursor = iter(range(first, first + count))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}

    async def sender(k: int) -> None:
        for i in cursor:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status = await send(k, i)
            except Exception as exc:  # counted, never fatal: the figures must still come out
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(sender(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {
        "elapsed": elapsed,
        "responses": len(latencies),
        "ok": ok,
        "non_2xx": len(latencies) - ok,
        "statuses": {str(s): n for s, n in sorted(statuses.items())},
        "errors": errors,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": (latencies[-1] * 1000) if latencies else float("nan"),
    }


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def crmwatch_command() -> list[str]:
    """The `crmwatch` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("crmwatch")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("crmwatch")
    return [found] if found else [sys.executable, "-m", "app.cli"]


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def server(cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path, ready_url: str) -> Iterator[int]:
    """Runs a server subprocess until the block ends; yields its pid once ready_url answers 200."""
    import httpx

    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise BenchError(f"{cmd[-5:]} exited with {proc.returncode}:\n{log_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"not ready after {STARTUP_TIMEOUT:.0f} s:\n{log_tail(log)}")
            time.sleep(0.1)
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # graceful: crmwatch commits what it queued and stops
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def background(cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> Iterator[int]:
    """A helper process (no port) for the duration of the block, stopped gracefully."""
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def log_summary(path: Path) -> dict[str, int]:
    """How many times each (level, event) appears in crmwatch's JSON log."""
    counts: dict[str, int] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return counts
    for line in lines:
        try:
            record = json.loads(line)
            key = f"{record.get('level', '?')} {record.get('event', '?')}"
        except (ValueError, AttributeError):
            key = "unparsed line"
        counts[key] = counts.get(key, 0) + 1
    return counts
