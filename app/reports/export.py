"""The period table as CSV and XLSX: heads of sales live in spreadsheets."""

from __future__ import annotations

import csv
import io
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font

COLUMNS = (
    ("name", "Менеджер", "Manager"),
    ("manager_id", "ID в CRM", "CRM id"),
    ("calls", "Звонки", "Calls"),
    ("talk_seconds", "Разговор, с", "Talk, s"),
    ("successful_calls", "Успешные (≥ 40 с)", "Successful (≥ 40 s)"),
    ("incoming", "Входящие", "Incoming"),
    ("outgoing", "Исходящие", "Outgoing"),
    ("missed", "Пропущенные", "Missed"),
    ("cards_changed", "Изменено карточек", "Cards changed"),
    ("calls_not_written", "Звонки без следа в карточке", "Calls not written down"),
    ("overdue_tasks", "Просроченные задачи", "Overdue tasks"),
    ("deals_without_task", "Сделки без задачи", "Deals without a task"),
    ("tasks_per_deal", "Задач на сделку", "Tasks per deal"),
    ("tasks_moved_without_contact", "Перенос задач без контакта", "Tasks moved without contact"),
    ("open_findings_total", "Открытые нарушения", "Open findings"),
)
DAY_COLUMNS = (
    ("day", "День", "Day"),
    ("name", "Менеджер", "Manager"),
    ("manager_id", "ID в CRM", "CRM id"),
    *[c for c in COLUMNS[2:9]],
)
TOTAL = {"ru": "Итого", "en": "Total"}


def _header(columns: tuple[tuple[str, str, str], ...], lang: str) -> list[str]:
    return [ru if lang == "ru" else en for _, ru, en in columns]


def _rows(report: dict[str, Any], lang: str) -> list[list[Any]]:
    rows = [[item.get(key) for key, _, _ in COLUMNS] for item in report["items"]]
    totals = {**report["totals"], "name": TOTAL[lang], "manager_id": ""}
    rows.append([totals.get(key) for key, _, _ in COLUMNS])
    return rows


def to_csv(report: dict[str, Any], lang: str) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(_header(COLUMNS, lang))
    writer.writerows(_rows(report, lang))
    # The BOM makes Excel open Cyrillic UTF-8 as such instead of guessing a code page.
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(report: dict[str, Any], days: list[dict[str, Any]], lang: str) -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.title = "Менеджеры" if lang == "ru" else "Managers"
    sheet.append(_header(COLUMNS, lang))
    for row in _rows(report, lang):
        sheet.append(row)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for cell in sheet[sheet.max_row]:
        cell.font = Font(bold=True)
    per_day = book.create_sheet("По дням" if lang == "ru" else "Per day")
    per_day.append(_header(DAY_COLUMNS, lang))
    for item in days:
        per_day.append([item.get(key) for key, _, _ in DAY_COLUMNS])
    for cell in per_day[1]:
        cell.font = Font(bold=True)
    for ws in (sheet, per_day):
        ws.freeze_panes = "A2"
        ws.column_dimensions["A"].width = 24
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
