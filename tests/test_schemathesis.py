"""The API against its own /openapi.json (issue 17): schemathesis, bounded in time, with the admin
token, on each database, against a real `crmwatch serve` process. It fails on any 5xx and on any
answer the schema does not describe (status, headers, content type, body), on a schema-violating
request the server accepts, on a 405 without the right Allow header, and on an ignored token.

Left out: `positive_data_acceptance`, since some rules span fields and no schema can say them (a
period's `from` before its `to`, exactly one credential, a base URL the CRM must answer at), and
the webhook routes, whose bodies are signed (tests/app/test_webhook_fuzz.py fuzzes those).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_cli import EXE, free_port

SECONDS = int(os.environ.get("CRMWATCH_SCHEMATHESIS_SECONDS", "45"))
TOKEN = "schemathesis-admin-token"
ST = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")


def _serve(db_url: str, cwd: Path) -> tuple[subprocess.Popen[str], int]:
    """`crmwatch serve`, its log in cwd/server.log (a pipe nobody reads would fill and stall it)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMWATCH_")} | {
        "CRMWATCH_DATABASE_URL": db_url,
        "CRMWATCH_ADMIN_TOKEN": TOKEN,
        "CRMWATCH_SECRET_KEY": "k" * 32,
        "CRMWATCH_LOG_JSON": "true",
        "CRMWATCH_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        [EXE, "serve", "--port", str(port), "--no-workers"],
        cwd=cwd,
        env=env,
        stdout=(cwd / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.2)
    os.killpg(proc.pid, 15)
    proc.wait(timeout=20)
    pytest.fail("serve did not start: " + (cwd / "server.log").read_text()[-2000:])


def _ms(line: str) -> float:
    try:
        return float(line.split('"ms": ', 1)[1].split(",", 1)[0].rstrip("}"))
    except (IndexError, ValueError):
        return 0.0


def test_the_api_keeps_to_its_schema_under_fuzzing(db_url, tmp_path):
    # An account created with an OAuth code exchanges it with the CRM at the generated address: one
    # that cannot be reached is a documented 502 (the gateway's answer), not a crash.
    (tmp_path / "schemathesis.toml").write_text(
        '[checks.not_a_server_error]\nexpected-statuses = ["2XX", "3XX", "4XX", "502"]\n'
    )
    proc, port = _serve(db_url, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            # Something for the ids in paths to find: an account with its rules and a swept mirror.
            resp = http.post(
                "/api/accounts",
                json={"name": "Fuzz", "crm": "amocrm", "base_url": "https://fuzz.amocrm.ru", "access_token": "t"},
            )
            assert resp.status_code == 201, resp.text
            assert http.post(f"/api/accounts/{resp.json()['id']}/sweep").status_code == 200
        run = subprocess.run(
            [
                ST,
                "run",
                f"{base}/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--exclude-path-regex",
                "^/hooks/",
                "-H",
                f"Authorization: Bearer {TOKEN}",
                "--max-time",
                str(SECONDS),
                "--seed",
                "17",
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=SECONDS + 240,
            env={k: v for k, v in os.environ.items() if not k.startswith("CRMWATCH_")} | {"NO_COLOR": "1"},
        )
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        server_log = (tmp_path / "server.log").read_text()
    slow = [line for line in server_log.splitlines() if '"ms": ' in line and _ms(line) > 5000]
    report = run.stdout[-12000:] + run.stderr[-3000:] + "\nslow requests:\n" + "\n".join(slow[-20:])
    assert run.returncode == 0, report
    assert "generated" in run.stdout, report
    # Nothing crashed on the server's side either (a 5xx the client may not have seen).
    assert "http.unhandled" not in server_log and "Traceback" not in server_log, server_log[-5000:]
