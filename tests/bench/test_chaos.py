"""bench/chaos.py, small: real crmwatch processes on PostgreSQL, killed, with the CRM switching
between healthy, 503, a 429 storm longer than the outbox lease and lost answers, and the
database's backends terminated once. It must end with nothing lost and nothing done twice.

PostgreSQL only (several processes, the scheduler's advisory lock): it runs when
CRMWATCH_TEST_POSTGRES_URL is set, as CI does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PG_URL = os.environ.get("CRMWATCH_TEST_POSTGRES_URL")
CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


@pytest.mark.skipif(not PG_URL, reason="the chaos run needs PostgreSQL (CRMWATCH_TEST_POSTGRES_URL)")
def test_a_small_chaos_run_loses_nothing_and_does_nothing_twice():
    args = ["--seconds", "24", "--kill-every", "6", "--fault-every", "4", "--lease", "3", "--deals", "8"]
    done = subprocess.run(
        [sys.executable, str(CHAOS), "--database", PG_URL, *args], capture_output=True, text=True, timeout=400
    )
    table = done.stdout
    assert done.returncode == 0 and "RESULT OK" in table, table + done.stderr[-3000:]
    rows = dict(line.split("  ", 1) for line in table.splitlines() if "  " in line)
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    # It did what it says: kills, each CRM fault mode, a storm's 429s, terminated backends, CRM writes.
    assert rows["kills (SIGKILL)"] != "0"
    assert all(mode in rows["CRM fault switches"] for mode in ("storm", "lost_answers", "outage"))
    assert int(rows["429s answered by the CRM"]) > 0 and int(rows["database backends terminated"]) > 0
    assert int(rows["tasks+notes sent"]) > 0
