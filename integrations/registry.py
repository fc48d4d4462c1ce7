"""The only place that names vendors: app/ looks adapters up here by the account's `crm`."""

from __future__ import annotations

from integrations.amocrm.adapter import AmoCrmAdapter
from integrations.base import CrmAdapter
from integrations.bitrix24.adapter import Bitrix24Adapter

CRM_ADAPTERS: dict[str, CrmAdapter] = {adapter.name: adapter for adapter in (AmoCrmAdapter(), Bitrix24Adapter())}


def crm_adapter(name: str) -> CrmAdapter:
    return CRM_ADAPTERS[name]
