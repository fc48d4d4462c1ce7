"""Companies enter the mirror (the clients of the ABC/XYZ report by company): from the amoCRM
backfill (/api/v4/companies, and _embedded.companies of every lead), from amoCRM company webhooks
(posted under contacts[...] with type=company), and from Bitrix24 deals' companyId."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from app.mirror.models import Company, Deal
from app.sync import service as sync
from integrations.amocrm.demo_data import seed_demo
from integrations.amocrm.webhook import parse
from integrations.base import CompanyUpserted, DealUpserted
from integrations.bitrix24 import mapping
from tests.conftest import create_account

NOW = int(datetime.now(UTC).timestamp())


async def test_amocrm_backfill_brings_companies_and_the_deals_company(client, rt, amo):
    seed_demo(amo, now=NOW)
    amo.add_company(9500, "ООО Ромашка", lead_ids=[31000011], responsible_user_id=8100002)
    acc = await create_account(client)
    assert await sync.run_pending(rt) == 1
    async with rt.sessions() as s:
        company = await s.get(Company, (acc["id"], "9500"))
        won = await s.get(Deal, (acc["id"], "31000011"))
        other = await s.get(Deal, (acc["id"], "31000004"))
    assert (company.name, company.responsible_user_id) == ("ООО Ромашка", "8100002")
    assert won.company_id == "9500"
    assert other.company_id is None
    body = (await client.get(f"/api/accounts/{acc['id']}")).json()
    assert body["sync"]["counts"]["companies"] == 1


def test_amocrm_company_webhook_is_a_company() -> None:
    body = urlencode(
        [
            ("contacts[update][0][id]", "9500"),
            ("contacts[update][0][name]", "ООО Ромашка"),
            ("contacts[update][0][type]", "company"),
            ("contacts[update][0][responsible_user_id]", "8100002"),
            ("contacts[update][0][last_modified]", "1764072000"),
            ("account[subdomain]", "demoshop"),
            ("account[id]", "29876543"),
        ]
    ).encode()
    events = parse(body, region="RU", received_at=datetime(2025, 11, 25, 12, tzinfo=UTC))
    assert events == [
        CompanyUpserted(
            id="9500",
            updated_at=datetime.fromtimestamp(1764072000, UTC),
            name="ООО Ромашка",
            responsible_user_id="8100002",
        )
    ]


def test_bitrix24_deal_company_id() -> None:
    item = {"id": 7, "title": "Сделка", "categoryId": 0, "stageId": "NEW", "companyId": 31, "contactIds": []}
    deal = next(e for e in mapping.deal(item) if isinstance(e, DealUpserted))
    assert deal.company_ids == ("31",)
    none = next(e for e in mapping.deal({**item, "companyId": 0}) if isinstance(e, DealUpserted))
    assert none.company_ids == ()
    unsaid = {k: v for k, v in item.items() if k != "companyId"}
    assert next(e for e in mapping.deal(unsaid) if isinstance(e, DealUpserted)).company_ids is None
