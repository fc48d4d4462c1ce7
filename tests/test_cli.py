"""The `crmwatch` command as an operator runs it: real processes, real ports."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

EXE = shutil.which("crmwatch") or str(Path(sys.executable).parent / "crmwatch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_runs_the_scripted_day_against_the_emulator(tmp_path):
    port, emu = free_port(), free_port()
    out = subprocess.run([EXE, "demo", "--once", "--port", str(port), "--emulator-port", str(emu),
                          "--database", f"sqlite+aiosqlite:///{tmp_path}/demo.db"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "backfill done" in out.stdout and "'deals': 15" in out.stdout
    # Six amoCRM deliveries, one of them a redelivery, and three PBX calls: eight stored and applied.
    assert "inbox: {'pending': 0, 'done': 8, 'failed': 0}" in out.stdout
    assert "deals_open                 14" in out.stdout
    # The scripted day's problems show up as findings, in Russian.
    assert "[empty_comment] сделка 31000100" in out.stdout and "Пустой комментарий «ок»" in out.stdout
    assert "[overdue_task]" in out.stdout and "просрочена на" in out.stdout
    assert "[stuck_stage]" in out.stdout and "[deal_without_task]" in out.stdout
    # The demo PBX's calls: a talk nobody wrote down, a missed call, a number the CRM does not know.
    assert "[call_not_logged] сделка 31000004" in out.stdout and "+7 912 345-67-04" in out.stdout
    assert "[missed_call_not_returned]" in out.stdout and "[unknown_number] +79161234599" in out.stdout
    # The Bitrix24 portal's own telephony: a missed call, bound to its deal through the call's activity.
    assert "[missed_call_not_returned] сделка 4521" in out.stdout
    # ...and reach the emulated CRM as tasks and notes.
    written = re.search(r"written into the CRM: (\d+) tasks, (\d+) notes", out.stdout)
    assert written and int(written.group(1)) >= 15 and int(written.group(2)) >= 15
    assert "задача для" in out.stdout
    # The widget is built and shown in a card the emulator serves, with live findings in it.
    card = re.search(rf"widget card:  http://127.0.0.1:{emu}/card\?lead_id=(\d+)   \((\d+) warnings", out.stdout)
    assert card and int(card.group(2)) >= 1, out.stdout[-2000:]
    # The dashboard of both accounts, as read-only links, and the widget's full page in amoCRM.
    assert re.search(rf"Dashboard, amoCRM account:   http://127.0.0.1:{port}/dashboard/l/\S+", out.stdout)
    assert re.search(rf"Dashboard, Bitrix24 portal:  http://127.0.0.1:{port}/dashboard/l/\S+", out.stdout)
    assert f"http://127.0.0.1:{emu}/settings/widgets/crmwatch" in out.stdout
    assert "Traceback" not in out.stderr


def test_serve_migrates_and_serves_the_contract(tmp_path):
    port = free_port()
    env = os.environ | {"CRMWATCH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/c.db",
                        "CRMWATCH_ADMIN_TOKEN": "adm", "CRMWATCH_SECRET_KEY": "k" * 32}
    proc = subprocess.Popen([EXE, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        resp = httpx.post(base + "/api/accounts", headers={"Authorization": "Bearer adm"}, json={
            "name": "x", "crm": "amocrm", "base_url": "http://127.0.0.1:9", "access_token": "t"})
        assert resp.status_code == 201
        key = resp.json()["key"]
        hook = httpx.post(f"{base}/hooks/amocrm/{key}", content="leads%5Bdelete%5D%5B0%5D%5Bid%5D=1",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert hook.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=20)[0]
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert proc.returncode in (0, -signal.SIGTERM), output[-3000:]
    assert "Application shutdown complete" in output
    assert key not in output  # the webhook key never reaches the log
    assert '"status": 500' not in output and "Traceback" not in output
