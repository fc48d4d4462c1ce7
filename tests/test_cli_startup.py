"""Start-up mistakes an operator makes, run as real processes: one clear line on stderr and a
non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from sqlalchemy.engine import make_url

from app.database_url import DatabaseUrlError, normalize
from tests.test_cli import EXE, free_port


def run(args: list[str], env: dict[str, str], cwd, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRMWATCH_")}
    return subprocess.run([EXE, *args], env=clean | env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_clear_line(out: subprocess.CompletedProcess[str], *phrases: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr and "Error:" not in out.stderr.split("crmwatch")[0]
    [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("crmwatch ")]
    assert all(p in line for p in phrases), line
    return line


def test_usual_spellings_pick_the_async_drivers():
    assert normalize("postgres://u:p%40ss@db:5432/crm") == "postgresql+asyncpg://u:p%40ss@db:5432/crm"
    assert normalize("postgresql://u@db/crm") == "postgresql+asyncpg://u@db/crm"
    assert normalize("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalize("sqlite+aiosqlite:////data/x.db") == "sqlite+aiosqlite:////data/x.db"
    for bad in ("not a url", "mysql://u@h/db", "postgresql+psycopg2://u@h/db"):
        with pytest.raises(DatabaseUrlError):
            normalize(bad)


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_postgres_and_sqlite_spellings_are_accepted(command, tmp_path):
    url = f"sqlite:///{tmp_path}/plain.db"
    if command == "migrate":
        out = run(["migrate"], {"CRMWATCH_DATABASE_URL": url}, tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        assert (tmp_path / "plain.db").stat().st_size > 0
        return
    port = free_port()
    proc = subprocess.Popen(
        [EXE, "serve", "--port", str(port), "--no-workers"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("CRMWATCH_")}
        | {"CRMWATCH_DATABASE_URL": url, "CRMWATCH_SECRET_KEY": "k" * 32},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("serve did not start")
    finally:
        os.killpg(proc.pid, 15)
        output = proc.communicate(timeout=20)[0]
    # Without CRMWATCH_ADMIN_TOKEN the admin API is off, and the log says so.
    assert "admin_api.disabled" in output and "CRMWATCH_ADMIN_TOKEN" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("command", ["migrate", "serve"])
@pytest.mark.parametrize(
    ("url", "phrases"),
    [
        ("not a url", ("CRMWATCH_DATABASE_URL is not a database URL", "postgresql://")),
        ("mysql://u@h/db", ("'mysql'", "PostgreSQL or SQLite")),
        ("sqlite:///{tmp}/missing/folder/x.db", ("missing/folder for the SQLite database does not exist",)),
        ("postgresql://postgres@127.0.0.1:{port}/x", ("did not answer for 1 s", "CRMWATCH_DATABASE_WAIT_SECONDS")),
    ],
)
def test_database_mistakes_are_one_line(command, url, phrases, tmp_path):
    url = url.format(tmp=tmp_path, port=free_port())
    started = time.monotonic()
    out = run([command], {"CRMWATCH_DATABASE_URL": url, "CRMWATCH_DATABASE_WAIT_SECONDS": "1"}, tmp_path)
    one_clear_line(out, f"crmwatch {command}:", *phrases)
    assert time.monotonic() - started < 30
    if "did not answer" in phrases[0]:
        # It was retried, with a log line, before giving up.
        assert "database.unreachable" in out.stderr
    assert not (tmp_path / "missing").exists()


def test_the_usual_spelling_of_the_test_database_migrates(db_url, tmp_path):
    """`postgres://…` (PostgreSQL runs) and `sqlite:///…` reach the real database through the async driver."""
    url = make_url(db_url)
    plain = url.set(drivername="postgres" if url.get_backend_name() == "postgresql" else "sqlite")
    out = run(["migrate"], {"CRMWATCH_DATABASE_URL": plain.render_as_string(hide_password=False)}, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_a_database_that_refuses_the_connection_fails_at_once(db_url, tmp_path):
    """Not worth waiting for: PostgreSQL without that database, a SQLite "file" that is a folder."""
    url = make_url(db_url)
    if url.get_backend_name() == "postgresql":
        wrong, phrase = url.set(database="no_such_database_here"), "no_such_database_here"
    else:
        (tmp_path / "a-folder.db").mkdir()
        wrong, phrase = url.set(database=str(tmp_path / "a-folder.db")), "unable to open database file"
    out = run(
        ["migrate"],
        {"CRMWATCH_DATABASE_URL": wrong.render_as_string(hide_password=False), "CRMWATCH_DATABASE_WAIT_SECONDS": "30"},
        tmp_path,
    )
    one_clear_line(out, "did not accept the connection", phrase)
    assert "database.unreachable" not in out.stderr


def test_widget_build_refuses_to_guess_the_address(tmp_path):
    out = run(["widget", "build", "--out", str(tmp_path / "w.zip")], {}, tmp_path)
    one_clear_line(out, "--url", "CRMWATCH_PUBLIC_URL")
    assert not (tmp_path / "w.zip").exists()
    ok = run(
        ["widget", "build", "--out", str(tmp_path / "w.zip")],
        {"CRMWATCH_PUBLIC_URL": "https://cw.example.com"},
        tmp_path,
    )
    assert ok.returncode == 0 and "talks to https://cw.example.com" in ok.stdout


def test_help_describes_every_command_its_defaults_and_environment(tmp_path):
    top = run(["--help"], {}, tmp_path)
    assert top.returncode == 0
    for command in ("serve", "migrate", "worker", "scheduler", "demo", "widget"):
        assert f"    {command}" in top.stdout
    assert "The `crmwatch` command." not in top.stdout and "amoCRM" in top.stdout
    for command in ("serve", "migrate", "worker", "scheduler", "demo", "widget build"):
        page = run([*command.split(), "--help"], {}, tmp_path)
        assert page.returncode == 0
        assert len(page.stdout.split("options:")[0].splitlines()) > 3, page.stdout  # a real description
        assert "CRMWATCH_" in page.stdout, command
    serve = run(["serve", "--help"], {}, tmp_path).stdout
    assert "(default: 8000)" in serve and "CRMWATCH_DATABASE_URL" in serve and "CRMWATCH_ADMIN_TOKEN" in serve
    demo = " ".join(run(["demo", "--help"], {}, tmp_path).stdout.split())
    assert "--bitrix24-port" in demo and "--emulator-port + 1" in demo and "--lang" in demo


def test_the_worker_starts_without_the_web_framework():
    """`crmwatch worker` imports what its loops need, not FastAPI: that import was a third of its
    start-up, and a burst waits for the worker's first batch (bench/apply.py)."""
    code = "import sys, app.cli, app.workers; print(sorted(m for m in sys.modules if m.split('.')[0] == 'fastapi'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
