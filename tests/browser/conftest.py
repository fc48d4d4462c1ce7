"""Every test in this folder drives a real Chromium: it carries the `browser` marker, which the
README's test command deselects (a fresh machine may have no chromium) and `.ci/run` selects."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)
