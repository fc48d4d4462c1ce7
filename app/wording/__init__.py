"""Every text a manager or head of sales reads, one module per language (ru.py, en.py): the
rules' titles and messages, the tasks and notes crmwatch writes into the CRM, the call log's
notes, the Bitrix24 deal tab, the dashboard and its export. A copywriter changes wording here
without reading SQL.

Each language module has the same names; `of(lang)` picks one (Russian for "ru", English for
anything else). The placeholders in braces are filled by the code that uses the text.
"""

from __future__ import annotations

from types import ModuleType

from . import en, ru

LANGUAGES: dict[str, ModuleType] = {"ru": ru, "en": en}


def of(lang: str | None) -> ModuleType:
    return ru if lang == "ru" else en


def titles(rule: str) -> dict[str, str]:
    """A rule's title in every language, as the rule declares it."""
    return {lang: module.RULE_TITLES[rule] for lang, module in LANGUAGES.items()}
