"""The `crmwatch` command as an operator runs it: real processes, real ports."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx

EXE = shutil.which("crmwatch") or str(Path(sys.executable).parent / "crmwatch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess[str], int, int]:
    port, emu = free_port(), free_port()
    out = subprocess.run(
        [
            EXE,
            "demo",
            "--once",
            "--port",
            str(port),
            "--emulator-port",
            str(emu),
            "--bitrix24-port",
            str(free_port()),
            "--database",
            f"sqlite:///{tmp_path}/demo.db",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    return out, port, emu


def test_demo_runs_the_scripted_day_against_the_emulator(tmp_path):
    out, port, emu = run_demo(tmp_path)
    text = out.stdout
    # Readable lines in one language (Russian by default): no Python dicts, no English headings.
    assert "{'" not in text and "': " not in text
    for english in ("backfill", "inbox:", "sweep:", "open findings", "written into", "Look at"):
        assert english not in text
    assert "Первичная загрузка: готово, прочитано" in text and "сделок 15" in text
    # Seven amoCRM deliveries, one of them a redelivery, and three PBX calls: nine stored and applied.
    assert "Входящие: применено 9, ждут 0, с ошибкой 0." in text
    assert "Повторная доставка того же вебхука: принят, повтор ничего не меняет" in text
    assert "открытых сделок 14" in text
    # Deals by name and amount, numbers grouped as people write them.
    assert "сделка «Заявка с сайта: кондиционеры в офис» (260\u00a0000 ₽)" in text
    assert "Пустой комментарий «ок»" in text and "просрочена на" in text
    assert "(1\u00a0250\u00a0000 ₽)" in text and "сделка 3100" not in text
    # The PBX's calls: a talk nobody wrote down, a missed call, a number the CRM does not know.
    assert "+7 912 345-67-04" in text and "номер +79161234599" in text
    # The morning digest, sent into the emulated Telegram chat and printed from there.
    assert "Утренняя сводка руководителю отправлена в Telegram (эмулятор, чат -1001000000001)" in text
    assert "  │ Утренняя сводка — " in text and "  │ Самые старые критичные нарушения" in text
    # Suppressed is explained where it shows.
    assert "(подавлено: пока по этой сделке открыто «Сделка без задачи»" in text

    # The counts agree: every open finding was there before the connection (and went into a
    # summary), is written one by one, is suppressed, or has no card to be written on.
    total = int(re.search(r"Открытые нарушения \((\d+)\):", text).group(1))
    quiet = int(re.search(r"Подавленных (\d+):", text).group(1))
    backlog = int(re.search(r"Было до подключения: (\d+); в CRM они попали в сводки", text).group(1))
    no_card = int(re.search(r"Нарушений без сделки \(звонок с неизвестного номера\): (\d+)", text).group(1))
    for_open = int(re.search(r"По (\d+) нарушениям, появившимся после подключения", text).group(1))
    assert total == backlog + for_open + quiet + no_card and backlog >= 10 and for_open >= 3
    tasks, notes = map(int, re.search(r"Записано в amoCRM: задач (\d+), примечаний (\d+)\.", text).groups())
    summaries = int(re.search(r"Сводок при подключении: (\d+) \(по одной каждому менеджеру", text).group(1))
    resolved_part = text.split("устранённым за демо-день")  # printed only when some resolved
    closed = re.search(r"задач (\d+), примечаний (\d+)\.\n", resolved_part[1]) if len(resolved_part) > 1 else None
    closed_tasks, closed_notes = map(int, closed.groups()) if closed else (0, 0)
    escalated = int(re.search(r"Эскалаций: (\d+)", text).group(1))
    assert tasks == summaries + for_open + closed_tasks + escalated and notes == for_open + closed_notes
    # Four managers with problems before the connection and the head of sales: five summaries, not 18 + 18.
    assert summaries == 5 and "сводка для Ольга Смирнова:" in text and "    • Сделка без задачи: " in text
    # A head of sales is set, and an escalation reaches her as a task.
    assert escalated >= 1
    assert re.search(r"эскалация: задача для Ольга Смирнова, сделка «[^»]+»+ \([\d\u00a0]+ ₽\): Эскалация", text)
    # Bitrix24: what was written adds up against what is open, and why.
    b24_open = int(re.search(r"Открытые нарушения на портале \((\d+)\)", text).group(1))
    summaries_b24 = int(re.search(r"Записано в портал: сводных задач (\d+)", text).group(1))
    todos = int(re.search(r"дел (\d+) \(crm.activity.todo.add\)", text).group(1))
    still, closed_b24, backlog_b24 = map(
        int,
        re.search(
            r"По нарушениям после подключения: (\d+); закрыто, потому что нарушение "
            r"устранено: (\d+); были до подключения и вошли в сводки: (\d+)\.",
            text,
        ).groups(),
    )
    assert still + backlog_b24 == b24_open and todos == still + closed_b24 and summaries_b24 >= 1
    assert "Чужой запрос без токена портала: отклонён (401)" in text
    # The pages to open are pages a person can open: the widget's card, crmwatch's own page.
    card = re.search(
        rf"Виджет в карточке сделки: http://127.0.0.1:{emu}/card\?lead_id=(\d+)   "
        r"\(предупреждений в панели: (\d+)",
        text,
    )
    assert card and int(card.group(2)) >= 1, text[-2000:]
    look = text.split("Откройте в браузере:")[1]
    assert "/api/" not in look and f"http://127.0.0.1:{port}/ " in look
    for url in re.findall(r"http://127\.0\.0\.1:\d+/[^\s,)]*", look):
        assert "/api/" not in url
    # The head of sales' dashboard: weeks of history behind it, a read-only link per CRM, the widget's page.
    assert re.search(r"История для дашборда \(amoCRM\): четыре недели звонков \([1-9]\d*\)", text)
    assert re.search(
        rf"дашборд отдела продаж, amoCRM \(ссылка только для просмотра\): "
        rf"http://127.0.0.1:{port}/dashboard/l/\S+",
        look,
    )
    assert re.search(
        rf"дашборд отдела продаж, Битрикс24 \(ссылка только для просмотра\): "
        rf"http://127.0.0.1:{port}/dashboard/l/\S+",
        look,
    )
    assert f"http://127.0.0.1:{emu}/settings/widgets/crmwatch" in look


def test_demo_in_english(tmp_path):
    out, _, _ = run_demo(tmp_path, "--lang", "en")
    text = out.stdout
    assert "Open findings (" in text and "First load: done; read: pipelines 1" in text
    assert "Written into amoCRM:" in text
    assert "History for the dashboard (Bitrix24): four weeks of calls (" in text
    assert re.search(r"the sales team dashboard, amoCRM \(a read-only link\): http://\S+/dashboard/l/\S+", text)
    assert "deal “Заявка с сайта: кондиционеры в офис” (RUB 260,000)" in text
    assert "overdue by" in text  # crmwatch's own messages in English too
    assert "  │ Morning digest — " in text and "  │ The oldest critical findings" in text
    assert not re.search(
        r"[А-Яа-я]",
        " ".join(
            ln
            for ln in text.splitlines()
            if not re.search(
                r"[«“]|Ольга|Дмитрий|Игорь|Екатерина|Анна|Борис|"
                r"Принято|Отложить",
                ln,
            )
        ),
    )


def test_demo_touches_nothing_when_its_port_is_taken(tmp_path):
    """Another program owns the port: the demo says so in one line and sends it nothing."""
    seen: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"GET {self.path}")
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    other = HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    busy = other.server_address[1]
    (tmp_path / "demo.db").write_text("not ours to delete")
    try:
        for flag in ("--port", "--emulator-port", "--bitrix24-port"):
            ports = {"--port": free_port(), "--emulator-port": free_port(), "--bitrix24-port": free_port()}
            ports[flag] = busy
            out = subprocess.run(
                [
                    EXE,
                    "demo",
                    "--once",
                    "--database",
                    f"sqlite:///{tmp_path}/demo.db",
                    *(str(x) for kv in ports.items() for x in kv),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert out.returncode == 2, out.stderr[-2000:]
            assert out.stdout == "" and "Traceback" not in out.stderr
            [line] = out.stderr.splitlines()
            assert f"port {busy}" in line and flag in line and "nothing was started or changed" in line
    finally:
        other.shutdown()
    assert seen == []
    assert (tmp_path / "demo.db").read_text() == "not ours to delete"


def test_serve_migrates_and_serves_the_contract(tmp_path):
    port = free_port()
    env = os.environ | {
        "CRMWATCH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/c.db",
        "CRMWATCH_ADMIN_TOKEN": "adm",
        "CRMWATCH_SECRET_KEY": "k" * 32,
    }
    proc = subprocess.Popen(
        [EXE, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        resp = httpx.post(
            base + "/api/accounts",
            headers={"Authorization": "Bearer adm"},
            json={"name": "x", "crm": "amocrm", "base_url": "http://127.0.0.1:9", "access_token": "t"},
        )
        assert resp.status_code == 201
        key = resp.json()["key"]
        hook = httpx.post(
            f"{base}/hooks/amocrm/{key}",
            content="leads%5Bdelete%5D%5B0%5D%5Bid%5D=1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert hook.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=20)[0]
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert proc.returncode in (0, -signal.SIGTERM), output[-3000:]
    assert "Application shutdown complete" in output
    assert key not in output  # the webhook key never reaches the log
    assert '"status": 500' not in output and "Traceback" not in output
