"""The README's test command passes on a fresh machine without chromium: it deselects exactly the
browser tests, which .ci/run still runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collected(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_readme_command_deselects_only_the_browser_tests():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^# 2\. Run the tests.*\n(.*)$", readme, re.M).group(1)
    assert command.endswith('python -m pytest -m "not browser"')
    browser_dir = _collected("tests/browser")
    assert len(browser_dir) >= 4
    # Every test under tests/browser carries the marker; nothing else does.
    assert _collected("-m", "browser", "tests/browser") == browser_dir
    assert _collected("-m", "not browser", "tests/browser") == []
    assert _collected("-m", "browser", "tests/test_cli.py") == []


def test_ci_runs_every_test_including_the_browser_ones():
    ci = (ROOT / ".ci" / "run").read_text()
    runs = [line.strip() for line in ci.splitlines() if "pytest" in line and not line.strip().startswith("#")]
    assert runs and all("not browser" not in line for line in runs)
    assert "apt-get install" in ci and "chromium" in ci
