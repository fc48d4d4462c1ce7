"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine: parsed,
and what they run is run here."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

from app.settings import Settings
from tests.test_cli import EXE

ROOT = Path(__file__).resolve().parents[1]
NASTY = "p@ss:w/rd%20#?&$x'\"é"


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, once (values are not re-read)."""

    def one(m: re.Match[str]) -> str:
        name, op, rest = m.group(1), m.group(2), m.group(3)
        if name in env and env[name] != "":
            return env[name]
        assert op != ":?", f"{name} must be set: {rest}"
        return rest if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def service_env(name: str, env: dict[str, str]) -> dict[str, str]:
    return {k: interpolate(str(v), env) for k, v in compose()["services"][name]["environment"].items()}


def test_every_service_restarts_and_the_worker_has_a_working_health_check():
    services = compose()["services"]
    assert {s["restart"] for s in services.values()} == {"unless-stopped"}
    check = services["worker"]["healthcheck"]["test"]
    assert check[0] == "CMD" and "healthz" not in " ".join(check)
    assert services["worker"]["environment"]["CRMWATCH_HEARTBEAT_FILE"] in " ".join(check)


def test_the_worker_health_check_follows_the_worker(tmp_path):
    env = {"POSTGRES_PASSWORD": "x", "CRMWATCH_ADMIN_TOKEN": "a", "CRMWATCH_SECRET_KEY": "k" * 32}
    worker = compose()["services"]["worker"]
    beat = tmp_path / "worker.heartbeat"
    # The check exactly as compose runs it, pointed at this test's file.
    check = [
        sys.executable if a == "python" else a.replace(worker["environment"]["CRMWATCH_HEARTBEAT_FILE"], str(beat))
        for a in worker["healthcheck"]["test"][1:]
    ]
    assert subprocess.run(check).returncode == 1  # not started yet
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("CRMWATCH_")} | {
        **service_env("worker", env),
        "CRMWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/w.db",
        "CRMWATCH_HEARTBEAT_FILE": str(beat),
    }
    run_env.pop("CRMWATCH_DATABASE_PASSWORD")  # SQLite here
    subprocess.run([EXE, "migrate"], env=run_env, cwd=tmp_path, check=True, capture_output=True)
    proc = subprocess.Popen(
        [EXE, *worker["command"][1:]],
        env=run_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not beat.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert subprocess.run(check).returncode == 0, "a running worker is healthy"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    old = time.time() - 120
    os.utime(beat, (old, old))
    assert subprocess.run(check).returncode == 1, "a worker that stopped beating is unhealthy"


def test_the_postgres_password_reaches_the_url_escaped():
    env = service_env("api", {"POSTGRES_PASSWORD": NASTY, "CRMWATCH_ADMIN_TOKEN": "a", "CRMWATCH_SECRET_KEY": "k" * 32})
    settings = Settings(**{k.removeprefix("CRMWATCH_").lower(): v for k, v in env.items()})
    url = make_url(settings.database_url)
    assert url.password == NASTY and url.host == "postgres" and url.database == "crmwatch"
    assert url.drivername == "postgresql+asyncpg" and url.username == "crmwatch"
    assert compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")


def test_trusted_proxies_are_configurable(tmp_path):
    env = service_env(
        "api",
        {
            "POSTGRES_PASSWORD": "x",
            "CRMWATCH_ADMIN_TOKEN": "a",
            "CRMWATCH_SECRET_KEY": "k",
            "CRMWATCH_FORWARDED_ALLOW_IPS": "172.18.0.0/16",
        },
    )
    assert env["CRMWATCH_FORWARDED_ALLOW_IPS"] == "172.18.0.0/16"
    assert Settings(forwarded_allow_ips=env["CRMWATCH_FORWARDED_ALLOW_IPS"]).forwarded_allow_ips == "172.18.0.0/16"
    default = service_env("api", {"POSTGRES_PASSWORD": "x", "CRMWATCH_ADMIN_TOKEN": "a", "CRMWATCH_SECRET_KEY": "k"})
    assert default["CRMWATCH_FORWARDED_ALLOW_IPS"] == "127.0.0.1"


def ignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    for pattern in patterns:
        p = pattern.removeprefix("**/")
        if any(fnmatch.fnmatch("/".join(parts[: i + 1]), p) or fnmatch.fnmatch(parts[i], p) for i in range(len(parts))):
            return True
    return False


def test_dockerignore_keeps_the_build_context_to_the_sources():
    patterns = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "crmwatch.db",
        "crmwatch-demo.db-wal",
        "crmwatch.secret",
        ".env",
        "test-artifacts/x.png",
        "app/__pycache__/x.pyc",
        "tests/conftest.py",
    ):
        assert ignored(path, patterns), path
    # Everything the Dockerfile copies stays in the context.
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    sources = [src for line in copied for src in line.split()]
    assert {"pyproject.toml", "README.md", "app", "integrations", "migrations"} <= set(sources)
    for src in sources:
        assert not ignored(src, patterns) and not ignored(f"{src}/x.py", patterns), src


def test_the_image_runs_as_a_user_and_checks_the_api():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER crmwatch$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
