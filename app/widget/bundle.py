"""`crmwatch widget build`: the CRM's widget archive around the shared card UI."""

from __future__ import annotations

from pathlib import Path

from integrations.registry import widget_builder

CARD_CORE = Path(__file__).parent / "static" / "card-core.js"


def build_widget(crm: str, out: Path, crmwatch_url: str) -> list[str]:
    build = widget_builder(crm)
    return build(out, crmwatch_url=crmwatch_url, card_core_js=CARD_CORE.read_text(encoding="utf-8"))
