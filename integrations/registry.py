"""The only place that names vendors: app/ looks adapters up here by the account's `crm`."""

from __future__ import annotations

from integrations.amocrm.adapter import AmoCrmAdapter

CRM_ADAPTERS = {adapter.name: adapter for adapter in (AmoCrmAdapter(),)}


def crm_adapter(name: str) -> AmoCrmAdapter:
    return CRM_ADAPTERS[name]
