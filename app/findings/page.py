"""The page a manager opens from a task or note crmwatch wrote: read-only, no sign-in.

Every task and note ends with a link to its own outbox row's page, `/f/<row id>-<signature>`: the
signature is an HMAC of the row id under a key derived from the server secret for this purpose
only (app/security.derived_key, as the card sessions derive theirs), so a link cannot be guessed
or turned into another row's, and it opens nothing but this page. The page shows the finding the
row was written for (or, for a digest, the findings it sums up), each with a link to the deal's
card in the CRM. The row id in the link doubles as the read-back marker (senders.page_marker):
the person sees a link, not a code.
"""

from __future__ import annotations

import hmac
import re
from html import escape
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import wording
from app.accounts.models import Account
from app.deps import runtime
from app.mirror.models import Deal
from app.outbox.models import OutboxAction
from app.rules import config as rules_config
from app.runtime import Runtime
from app.security import load_secret

from . import service
from .models import Finding
from .pagelink import signature
from .schemas import FindingOut

router = APIRouter(tags=["findings"])

_REF = re.compile(r"^(\d{1,18})-([A-Za-z0-9_-]{16})$")
MAX_LISTED = 300


def _page(words: Any, title: str, body: str, status: int = 200) -> HTMLResponse:
    html = f"""<!doctype html>
<html lang="{escape(words.PAGE["lang"])}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{escape(title)}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.3rem; }} .item {{ border-left: 4px solid #c33; padding: .4rem .8rem; margin: .8rem 0; }}
.item.resolved {{ border-color: #393; }} .muted {{ color: #666; font-size: .9rem; }}
</style></head><body>
<h1>{escape(title)}</h1>
{body}
<p class="muted">{escape(words.PAGE["read_only"])}</p>
</body></html>"""
    return HTMLResponse(
        html, status_code=status, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


def _item(rt: Runtime, account: Account, words: Any, item: FindingOut, deal_names: dict[str, str]) -> str:
    status = words.PAGE["status"].get(item.status, item.status)
    since = item.started_at.astimezone(ZoneInfo(account.timezone)).strftime("%d.%m.%Y %H:%M")
    parts = [
        f'<div class="item {escape(item.status)}"><b>{escape(item.title)}</b> — {escape(status)}',
        f"<div>{escape(item.message)}</div>",
        f'<div class="muted">{escape(words.PAGE["since"].format(since=since))}',
    ]
    manager = item.details.get("manager_name") or item.manager_id
    if manager:
        parts.append(" · " + escape(words.PAGE["manager"].format(name=manager)))
    parts.append("</div>")
    if item.deal_id:
        card = rt.crm_adapter(account.crm).deal_url(account.base_url, item.deal_id)
        name = deal_names.get(item.deal_id) or item.deal_id
        parts.append(
            f'<div><a href="{escape(card)}" target="_blank" rel="noopener">'
            f"{escape(words.PAGE['open_deal'].format(deal=name))}</a></div>"
        )
    parts.append("</div>")
    return "".join(parts)


async def _digest_findings(s: AsyncSession, account: Account, row: OutboxAction) -> list[Finding]:
    where = [Finding.account_id == account.id]
    if row.purpose == "flood":
        where.append(
            Finding.id.in_(
                select(OutboxAction.finding_id).where(OutboxAction.ref_id == row.id, OutboxAction.status == "grouped")
            )
        )
    else:
        where += [
            Finding.backlog_opening == Finding.times_opened,
            Finding.status == "open",
            Finding.suppressed.is_(False),
        ]
        if row.purpose == "backlog":
            where.append(Finding.manager_id == row.user_id)
        else:
            doc = await rules_config.load(s, account.id)
            if doc.supervisor_user_id != row.user_id:
                team = sorted(m for m, head in doc.team_supervisors.items() if head == row.user_id)
                where.append(Finding.manager_id.in_(team))
    query = select(Finding).where(*where).order_by(Finding.manager_id, Finding.rule, Finding.id).limit(MAX_LISTED)
    return list(await s.scalars(query))


@router.get("/f/{ref}", response_class=HTMLResponse, include_in_schema=False)
async def finding_page(
    ref: str, lang: Literal["ru", "en"] | None = Query(None), rt: Runtime = Depends(runtime)
) -> HTMLResponse:
    """What a task or note crmwatch wrote is about, for whoever has its link."""
    match = _REF.match(ref)
    words = wording.of(lang or "ru")
    if not match or not hmac.compare_digest(match.group(2), signature(load_secret(rt.settings), int(match.group(1)))):
        return _page(words, words.PAGE["title"], f"<p>{escape(words.PAGE['refused'])}</p>", status=404)
    async with rt.reads() as s:
        row = await s.get(OutboxAction, int(match.group(1)))
        account = await s.get(Account, row.account_id) if row is not None else None
        if row is None or account is None:
            return _page(words, words.PAGE["title"], f"<p>{escape(words.PAGE['gone'])}</p>", status=404)
        words = wording.of(lang or account.language)
        if row.kind == "digest":
            found = await _digest_findings(s, account, row)
            title = words.PAGE["digest_title"]
        else:
            finding = await s.get(Finding, row.finding_id) if row.finding_id is not None else None
            found = [finding] if finding is not None else []
            title = words.PAGE["title"]
        items = await service.render(s, account, found, rt.settings.public_url, lang=lang or account.language)
        deal_ids = sorted({i.deal_id for i in items if i.deal_id})
        names = dict(
            (
                await s.execute(select(Deal.id, Deal.name).where(Deal.account_id == account.id, Deal.id.in_(deal_ids)))
            ).all()
        )
    if not items:
        return _page(words, title, f"<p>{escape(words.PAGE['gone' if row.kind != 'digest' else 'empty'])}</p>")
    body = "".join(_item(rt, account, words, item, names) for item in items)
    return _page(words, title, body)
