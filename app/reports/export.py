"""The period table as CSV and XLSX: heads of sales live in spreadsheets."""

from __future__ import annotations

import csv
import io
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font

from app import wording

# The report's fields in the order of the sheet; their headings: app/wording REPORT_COLUMNS.
COLUMNS = (
    "name",
    "manager_id",
    "calls",
    "talk_seconds",
    "successful_calls",
    "incoming",
    "outgoing",
    "missed",
    "cards_changed",
    "calls_not_written",
    "overdue_tasks",
    "deals_without_task",
    "tasks_per_deal",
    "tasks_moved_without_contact",
    "first_contact_median_minutes",
    "open_findings_total",
)
DAY_COLUMNS = ("day", "name", "manager_id", *COLUMNS[2:9])


def _header(columns: tuple[str, ...], lang: str) -> list[str]:
    return [wording.of(lang).REPORT_COLUMNS[key] for key in columns]


def _rows(report: dict[str, Any], lang: str) -> list[list[Any]]:
    rows = [[item.get(key) for key in COLUMNS] for item in report["items"]]
    totals = {**report["totals"], "name": wording.of(lang).REPORT_TOTAL, "manager_id": ""}
    rows.append([totals.get(key) for key in COLUMNS])
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
    sheet.title = wording.of(lang).REPORT_SHEETS["managers"]
    sheet.append(_header(COLUMNS, lang))
    for row in _rows(report, lang):
        sheet.append(row)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for cell in sheet[sheet.max_row]:
        cell.font = Font(bold=True)
    per_day = book.create_sheet(wording.of(lang).REPORT_SHEETS["per_day"])
    per_day.append(_header(DAY_COLUMNS, lang))
    for item in days:
        per_day.append([item.get(key) for key in DAY_COLUMNS])
    for cell in per_day[1]:
        cell.font = Font(bold=True)
    for ws in (sheet, per_day):
        ws.freeze_panes = "A2"
        ws.column_dimensions["A"].width = 24
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
